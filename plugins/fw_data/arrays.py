"""A user's own data from a file: ``.npy``, ``.npz`` or ``.csv`` arrays as an in-memory dataset."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from fw.data import ArrayDataset
from fw.errors import DataError


def _load(path: Path, x: str, label: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if x not in keys:
                raise DataError(
                    f"{path} has no array '{x}' (data.x); its arrays are {keys}. Set data.x to "
                    "the key of the inputs."
                )
            if label is not None and label not in keys:
                raise DataError(
                    f"{path} has no array '{label}' (data.label); its arrays are {keys}. Set "
                    "data.label to the key of the class labels, or data.label=null."
                )
            return archive[x], None if label is None else archive[label]
    if suffix == ".csv":
        table = np.genfromtxt(path, delimiter=",", names=True, dtype=float, encoding="utf-8")
        columns = list(table.dtype.names or ())
        if label is not None and label not in columns:
            raise DataError(
                f"{path} has no column '{label}' (data.label); its columns are {columns}. Set "
                "data.label to the label column, or data.label=null."
            )
        feats = [c for c in columns if c != label]
        if not feats:
            raise DataError(f"{path} has no feature columns besides '{label}'")
        for c in columns:  # genfromtxt reads text (and empty cells) as NaN
            if np.isnan(np.atleast_1d(table[c])).any():
                key = "data.label" if c == label else "a feature column"
                raise DataError(
                    f"{path}: column '{c}' ({key}) has text or empty cells; every column must "
                    "be numeric (encode text classes as integers)"
                )
        values = np.stack([np.atleast_1d(table[c]) for c in feats], axis=1)
        labels = None if label is None else np.atleast_1d(table[label])
        return values, labels
    raise DataError(f"{path}: unsupported file type '{suffix}'; give a .npy, .npz or .csv file")


def arrays(
    path: str,
    x: str = "x",
    label: str | None = "label",
    limit: int | None = None,
) -> ArrayDataset:
    """Points from a file: ``.npy`` (one array ``[N, ...]``), ``.npz`` (arrays named ``x`` and
    ``label``) or ``.csv`` (a header row; every column but ``label`` is a feature).

    ``label`` names the class labels (integers ``[N]``), used only for evaluation; a ``.npy``
    file has none, and ``label: null`` ignores them. ``limit`` keeps the first N points.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(f"data.path: {file} is a directory; give a .npy, .npz or .csv file")
    if not file.is_file():
        raise DataError(f"data.path: {file} does not exist (working directory: {Path.cwd()})")
    try:
        values, labels = _load(file, x, label if file.suffix.lower() != ".npy" else None)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"data.path: cannot read {file}: {err}") from err
    if values.dtype.kind not in "biuf" or values.ndim < 2 or len(values) == 0:
        raise DataError(
            f"{file}: the inputs '{x}' (data.x) must be a numeric array [N, d] (or [N, ...]) "
            f"with N >= 1, got dtype {values.dtype} and shape {values.shape}"
        )
    if not np.isfinite(values).all():
        raise DataError(f"{file}: the inputs '{x}' (data.x) contain NaN or infinite values")
    tensors = {"x": torch.as_tensor(values, dtype=torch.float32)}
    if labels is not None:
        numeric = labels.dtype.kind in "biuf"
        if not numeric or labels.shape != (len(values),) or not np.all(np.mod(labels, 1) == 0):
            raise DataError(
                f"{file}: the labels '{label}' (data.label) must be integers [N] = "
                f"[{len(values)}], got dtype {labels.dtype} and shape {labels.shape}"
            )
        tensors["label"] = torch.as_tensor(labels.astype(np.int64))
    if limit is not None:
        tensors = {k: v[:limit] for k, v in tensors.items()}
    return ArrayDataset(tensors, name=file.stem, meta={"path": str(file)})
