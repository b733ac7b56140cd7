"""STEGO's datasets on tiny trees in the official layouts, and TexMosaic-12's generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fw.errors import DataError
from fw_stego import texmosaic
from fw_stego.datasets import (
    COCO_CLASSES,
    cityscapes27,
    coco_fine_to_coarse,
    cocostuff27,
    potsdam3,
)
from fw_stego.scoring import Confusion, boundary_band, hungarian_assignment, scores

needs_opencv_doc = pytest.mark.skipif(
    not (texmosaic.OPENCV_DATA / "baboon.jpg").is_file(),
    reason="TexMosaic-12 needs Debian opencv-doc: apt-get install -y opencv-doc",
)


def write_coco_tree(root: Path, ids: dict[str, list[str]], size=(40, 50), fine=137) -> None:
    """COCO images, stuffthingmaps and curated lists for the given split -> ids."""
    rng = np.random.default_rng(0)
    lists = {"train": "Coco164kFull_Stuff_Coarse.txt", "val": "Coco164kFull_Stuff_Coarse_7.txt"}
    for split, names in ids.items():
        folder = f"{split}2017"
        for sub in ("images", "annotations", "curated"):
            (root / sub / folder).mkdir(parents=True, exist_ok=True)
        (root / "curated" / folder / lists[split]).write_text("".join(f"{n}\n" for n in names))
        for n in names:
            img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "images" / folder / f"{n}.jpg")
            ann = np.full(size, fine, dtype=np.uint8)
            ann[: size[0] // 2] = 255  # unlabeled top half
            ann[:, 0] = 0  # a "person" column
            Image.fromarray(ann).save(root / "annotations" / folder / f"{n}.png")


def test_coco_fine_to_coarse_table():
    t = coco_fine_to_coarse()
    assert t[0] == COCO_CLASSES.index("person")  # COCO id 1
    assert t[2] == COCO_CLASSES.index("vehicle")  # car
    assert t[137] == COCO_CLASSES.index("structural")  # net (id 138)
    assert t[181] == COCO_CLASSES.index("solid")  # wood (id 182)
    assert t[255] == -1 and t[90] == -1  # unlabeled; id 91 does not exist
    assert sorted(set(t[t >= 0].tolist())) == list(range(27))
    assert int((t >= 0).sum()) == 181


def test_cocostuff27_reads_the_curated_layout(tmp_path):
    write_coco_tree(tmp_path, {"train": ["000000000009", "000000000025"], "val": ["000000000139"]})
    train = cocostuff27(str(tmp_path), "train", res=16)
    val = cocostuff27(str(tmp_path), "val", res=24)
    assert len(train) == 10 and len(val) == 1  # five crops per training image
    item = train[7]
    assert item["x"].shape == (3, 16, 16) and item["label"].shape == (16, 16)
    assert int(item["index"]) == 7
    assert 0.0 <= float(item["x"].min()) and float(item["x"].max()) <= 1.0
    v = val[0]
    assert v["x"].shape == (3, 24, 24)
    assert set(v["label"].unique().tolist()) <= {-1, 9, 25}
    assert (v["label"][-1, 1:] == 25).all() and (v["label"][0] == -1).all()


def test_cocostuff27_missing_and_incomplete_trees_name_the_files(tmp_path):
    with pytest.raises(DataError, match="Coco164kFull_Stuff_Coarse.txt.*cocodataset"):
        cocostuff27(str(tmp_path / "nowhere"), "train")
    write_coco_tree(tmp_path, {"val": ["a", "b"]})
    (tmp_path / "annotations" / "val2017" / "b.png").unlink()
    with pytest.raises(DataError, match=r"(?s)1 expected file.*b\.png"):
        cocostuff27(str(tmp_path), "val")


def test_cityscapes27_shifts_label_ids(tmp_path):
    for split in ("val",):
        img_dir = tmp_path / "leftImg8bit" / split / "aachen"
        gt_dir = tmp_path / "gtFine" / split / "aachen"
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        Image.fromarray(np.zeros((32, 64, 3), dtype=np.uint8)).save(
            img_dir / "aachen_000000_000019_leftImg8bit.png"
        )
        ids = np.zeros((32, 64), dtype=np.uint8)
        ids[:, 16:32] = 7  # road -> 0
        ids[:, 32:48] = 33  # bicycle -> 26
        ids[:, 48:] = 4  # void -> ignored
        Image.fromarray(ids).save(gt_dir / "aachen_000000_000019_gtFine_labelIds.png")
    ds = cityscapes27(str(tmp_path), "val", res=32, five_crop=False)
    lab = ds[0]["label"]  # shorter side 32: the centre 32 columns (16..47)
    assert lab[:, :16].eq(0).all() and lab[:, 16:].eq(26).all()
    with pytest.raises(DataError, match="leftImg8bit"):
        cityscapes27(str(tmp_path), "train")


def test_potsdam3_merges_fine_classes(tmp_path):
    from scipy.io import savemat

    (tmp_path / "imgs").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "labelled_test.txt").write_text("0_0\n")
    img = np.random.default_rng(0).integers(0, 255, (12, 12, 4), dtype=np.uint8)
    gt = np.array([[0, 1, 2, 3, 4, 5] * 2] * 12, dtype=np.uint8)
    gt[0, 0] = 255
    savemat(tmp_path / "imgs" / "0_0.mat", {"img": img})
    savemat(tmp_path / "gt" / "0_0.mat", {"gt": gt})
    item = potsdam3(str(tmp_path), "val", res=12)[0]
    assert torch.allclose(item["x"], torch.from_numpy(img[:, :, :3]).permute(2, 0, 1) / 255.0)
    assert item["label"][1, :6].tolist() == [0, 1, 2, 2, 0, 1]
    assert int(item["label"][0, 0]) == -1
    with pytest.raises(DataError, match="labelled_train.txt"):
        potsdam3(str(tmp_path), "train")


def test_texmosaic_without_opencv_doc_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(texmosaic, "OPENCV_DATA", tmp_path)
    texmosaic.sources.cache_clear()
    try:
        with pytest.raises(DataError, match="apt-get install -y opencv-doc"):
            texmosaic.texmosaic12("val", n=2, progress=False)
    finally:
        texmosaic.sources.cache_clear()


@needs_opencv_doc
def test_texmosaic_halves_are_disjoint_and_items_regenerate_alone():
    for (a, b), (_, src) in zip(texmosaic.sources(), texmosaic.SOURCES, strict=True):
        full = texmosaic._read_source(src)
        h, w = full.shape[:2]
        assert a.shape[0] + b.shape[0] == h or a.shape[1] + b.shape[1] == w
        assert np.array_equal(np.concatenate([a, b], axis=1 if w >= h else 0), full)
    ds = texmosaic.texmosaic12("val", n=6, progress=False)
    alone = texmosaic.generate_item(2001, 0, 1, "blobs", 1)  # item 1 of the blob half
    assert np.array_equal(ds.x[4].numpy(), alone[0]) and np.array_equal(
        ds.tensors["label"][4].numpy(), alone[1]
    )
    prefix = texmosaic.texmosaic12("val", n=2, progress=False)  # smaller tiers are prefixes
    assert torch.equal(prefix.x[0], ds.x[0]) and torch.equal(prefix.x[1], ds.x[3])
    gray = texmosaic.texmosaic12("val", n=6, gray=True, progress=False)
    assert gray.x.shape == (6, 1, 224, 224)
    assert torch.equal(gray.tensors["label"], ds.tensors["label"])


@needs_opencv_doc
def test_texmosaic_coverage_band_and_matching():
    ds = texmosaic.texmosaic12("val", n=30, progress=False)
    label = ds.tensors["label"].long()
    for lab in label:
        _, counts = lab.unique(return_counts=True)
        assert counts.min() >= 0.01 * lab.numel() and len(counts) >= 2
    band = boundary_band(label, 9)
    assert 0.15 <= band.float().mean().item() <= 0.23
    relabelled = (label * 5 + 3) % 12  # a permutation of the 12 ids
    conf = Confusion(12)
    conf.update(label, relabelled)
    got = scores(conf.counts, hungarian_assignment(conf.counts))
    assert got["miou"] == pytest.approx(1.0) and got["accuracy"] == pytest.approx(1.0)
    assert ds.meta["manifest"]["seeds"] == [2000, 2001]
