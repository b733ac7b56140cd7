"""`fw retrieve`: a feature file and an image folder, conditions, the contact sheet, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fw.cli import main
from fw_retrieval.methods import Corpus, MaskedBruteForce
from fw_retrieval.predicate import Columns


def _feature_file(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((120, 6)).astype(np.float32)
    cols = {"label": rng.integers(0, 5, 120), "medium": rng.choice(["photo", "paint"], 120)}
    path = tmp_path / "feats.npz"
    np.savez(path, features=feats, **cols)
    return path, feats, cols


def test_retrieve_feature_file_matches_brute_force(tmp_path, capsys):
    path, feats, cols = _feature_file(tmp_path)
    where = 'label in [1, 3] and not medium == "photo"'
    out = tmp_path / "out"
    argv = ["retrieve", "--index", str(path), "--query-row", "4", "--where", where, "-k", "5"]
    assert main([*argv, "--metric", "euclidean", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    ids, dist = MaskedBruteForce(Corpus(feats, Columns(cols))).search(feats[4], 5, where)
    assert [r["row"] for r in summary["results"]] == ids.tolist()
    assert [r["distance"] for r in summary["results"]] == pytest.approx(dist.tolist(), abs=0)
    assert all(r["label"] in (1, 3) and r["medium"] == "paint" for r in summary["results"])
    assert (out / "contact_sheet.png").stat().st_size > 1000
    assert "contact_sheet.png" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--where", "label == 'x'"], "values are integers"),
        (["--where", "label == 1; rm -rf /"], "unexpected ';"),
        (["--where", "culture == 'x'"], "column 'culture'"),
        (["--query-row", "999"], "outside the index"),
    ],
)
def test_retrieve_bad_input_exits_2(tmp_path, capsys, args, says):
    path, _, _ = _feature_file(tmp_path)
    argv = ["retrieve", "--index", str(path), "--out", str(tmp_path / "o"), *args]
    if "--query-row" not in args:
        argv += ["--query-row", "0"]
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_retrieve_image_folder_with_metadata(tmp_path):
    """Folder -> labels from sub-folders, columns from metadata.csv, features from a registered
    featurizer (random weights here, so nothing is downloaded), cached; the query image itself
    comes back first at distance 0."""
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    lines = ["file,medium"]
    for label, channel in (("red", 0), ("green", 1), ("blue", 2)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            a = rng.integers(0, 60, (24, 28, 3)).astype(np.uint8)
            a[..., channel] = 150 + 30 * i
            Image.fromarray(a).save(root / label / f"{i}.png")
            lines.append(f"{label}/{i}.png,{'photo' if i == 1 else 'paint'}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = [
        "retrieve", "--index", str(root), "--query", str(root / "red" / "0.png"),
        "--where", 'label != "green" and medium == "paint"', "-k", "3",
        "--featurizer", "mobilenet_v2", "--featurizer-arg", "weights=null",
        "--image-size", "32", "--cache", str(tmp_path / "cache"), "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert len(results) == 3
    # the query is featurized alone, the index in a batch: equal up to float32 rounding
    assert results[0]["path"].endswith("red/0.png") and abs(results[0]["distance"]) < 1e-5
    assert all(r["label"] != "green" and r["medium"] == "paint" for r in results)
    assert list((tmp_path / "cache").glob("*.npy"))  # features went through the cache
    assert (out / "contact_sheet.png").is_file()


def test_style_features_are_adain_statistics(registry):
    """--features style: per-channel mean and (biased) std of the dense map, concatenated."""
    import torch

    from fw_retrieval.corpus import build_featurizer

    model, described = build_featurizer(None, "style", {"weights": None})
    assert described.startswith("style:mobilenet_v2_tap")
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        fmap = model.dense(x).double()
        got = model(x).double()
    c = fmap.shape[1]
    mean = fmap.mean(dim=(2, 3))
    std = ((fmap - mean[..., None, None]) ** 2).mean(dim=(2, 3)).sqrt()
    assert got.shape == (2, 2 * c)
    torch.testing.assert_close(got[:, :c], mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[:, c:], std, rtol=1e-4, atol=1e-5)
