"""Frozen-feature cache and nearest-neighbour tables for methods trained on precomputed features.

:func:`cached_features` runs a featurizer over a dataset once and keeps the ``[N, D]`` float32
result on disk as a ``.npy`` file, read back memory-mapped (never loaded whole). :func:`knn`
builds the ``[N, k]`` neighbour table of such an array with faiss, in bounded memory;
:func:`spherical_kmeans` clusters rows with faiss's cosine k-means.

Cache layout (``cache_dir``)::

    <dataset>-<featurizer>-<key>.npy            the features, complete (written last, by rename)
    <dataset>-<featurizer>-<key>.json           sidecar: what went into the key, shape, timing
    <dataset>-<featurizer>-<key>.npy.partial    an unfinished run (never read as a cache)
    <dataset>-<featurizer>-<key>.progress.json  rows of the partial file already computed

The key hashes (a) the dataset: its name, size, meta and the contents of its first and last
items (not every item: two datasets that agree on all of those share a key); (b) the featurizer:
``featurizer.fingerprint()`` when it has one (architecture, weights identity, preprocessing),
otherwise its class, recipe entry and a hash of its parameters; (c) ``transform_key``, naming
any transform applied to the inputs before the featurizer. Only a complete ``.npy`` *with* its
sidecar counts as cached; an interrupted run resumes from its last recorded row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from fw.data import collate_batched
from fw.errors import ShapeError, check_choice

CACHE_VERSION = 1
_SAMPLE_ITEMS = 8  # items hashed at each end of the dataset
_FLUSH_SECONDS = 10.0  # how often an unfinished run records its progress


# ----------------------------------------------------------------------------- fingerprints


def _update(digest: Any, obj: Any) -> None:
    """Feed a (nested) item of a dataset into a hash, by value."""
    if isinstance(obj, Tensor):
        digest.update(f"tensor{tuple(obj.shape)}{obj.dtype}".encode())
        obj = obj.detach().cpu()
        obj = (obj.float() if obj.dtype == torch.bfloat16 else obj).contiguous()
        digest.update(obj.numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        digest.update(f"array{obj.shape}{obj.dtype}".encode())
        digest.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            digest.update(str(key).encode())
            _update(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _update(digest, value)
    elif isinstance(obj, (int, float, str, bool, type(None))):
        digest.update(repr(obj).encode())
    else:  # e.g. PIL images
        _update(digest, np.asarray(obj))


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Name, size, meta and a hash of the first and last items of a dataset."""
    n = len(dataset)  # type: ignore[arg-type]
    ends = sorted(set(range(min(n, _SAMPLE_ITEMS))) | set(range(max(0, n - _SAMPLE_ITEMS), n)))
    digest = hashlib.sha256()
    for i in ends:
        _update(digest, dataset[i])
    meta = getattr(dataset, "meta", None) or {}
    return {
        "name": str(getattr(dataset, "name", type(dataset).__name__)),
        "size": n,
        "meta": json.loads(json.dumps(meta, sort_keys=True, default=str)),
        "items": digest.hexdigest()[:32],
    }


def featurizer_fingerprint(featurizer: nn.Module) -> dict[str, Any]:
    """What determines a featurizer's outputs, as JSON-able data.

    Uses ``featurizer.fingerprint()`` when defined (it should name the architecture, the weights
    and the input preprocessing); otherwise the class, its recipe entry (``_fw_spec``) and a
    hash of every parameter and buffer.
    """
    out: dict[str, Any] = {"class": f"{type(featurizer).__module__}.{type(featurizer).__name__}"}
    own = getattr(featurizer, "fingerprint", None)
    if callable(own):
        out["fingerprint"] = json.loads(json.dumps(own(), sort_keys=True, default=str))
        return out
    spec = getattr(featurizer, "_fw_spec", None)
    if spec is not None:
        out["spec"] = json.loads(json.dumps(spec, sort_keys=True, default=str))
    digest = hashlib.sha256()
    _update(digest, dict(featurizer.state_dict()))
    out["values"] = digest.hexdigest()[:32]
    return out


def _transform_key(transform: Callable[[Tensor], Tensor] | None, transform_key: str | None) -> str:
    if transform_key is not None:
        return transform_key
    if transform is None:
        return "none"
    text = repr(transform)
    if re.search(r" at 0x[0-9a-f]+", text):
        raise ValueError(
            f"transform {text} has no stable description; pass transform_key='<name>' so the "
            "cache can tell it from other transforms"
        )
    return text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")[:40] or "x"


def cache_entry(
    dataset: Dataset,
    featurizer: nn.Module,
    cache_dir: str | os.PathLike[str],
    transform: Callable[[Tensor], Tensor] | None = None,
    transform_key: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The ``.npy`` path features of this (dataset, featurizer, transform) live at, and the
    description the key is the hash of."""
    description = {
        "version": CACHE_VERSION,
        "dataset": dataset_fingerprint(dataset),
        "featurizer": featurizer_fingerprint(featurizer),
        "transform": _transform_key(transform, transform_key),
        "dtype": "float32",
    }
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    fp = description["featurizer"]
    fname = fp.get("fingerprint", {}).get("backbone") or fp["class"].rsplit(".", 1)[-1]
    stem = f"{_slug(description['dataset']['name'])}-{_slug(str(fname))}-{key}"
    return Path(cache_dir) / f"{stem}.npy", description


def _sidecar(npy: Path) -> Path:
    return npy.with_suffix(".json")


def _progress_file(npy: Path) -> Path:
    return npy.with_suffix(".progress.json")


def _partial(npy: Path) -> Path:
    return npy.with_name(npy.name + ".partial")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def load_cached(npy: Path) -> np.memmap | None:
    """The cached array at ``npy`` (memory-mapped, read-only), or None if it is not complete."""
    side = _sidecar(npy)
    if not (npy.is_file() and side.is_file()):
        return None
    try:
        info = json.loads(side.read_text())
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if not info.get("complete") or list(array.shape) != info.get("shape"):
        return None
    return array


# ----------------------------------------------------------------------------- computing


def _record(out: np.memmap | None, progress_path: Path, stem: str, rows: int) -> None:
    """Make the first ``rows`` rows of an unfinished run durable, then say so."""
    if out is not None:
        out.flush()
        _write_json(progress_path, {"key": stem, "rows": rows, "shape": list(out.shape)})


def _inputs(batch: Any, key: str) -> Tensor:
    if isinstance(batch, Mapping):
        return batch[key]
    if isinstance(batch, (list, tuple)):  # (input, target) datasets such as torchvision's
        return batch[0]
    return batch


def cached_features(
    dataset: Dataset,
    featurizer: nn.Module,
    cache_dir: str | os.PathLike[str],
    transform: Callable[[Tensor], Tensor] | None = None,
    transform_key: str | None = None,
    batch_size: int = 256,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> np.memmap:
    """Features ``[N, D]`` float32 of every item of ``dataset``, computed once and memory-mapped.

    The featurizer runs in eval mode under ``torch.no_grad`` on the device of its parameters
    (or ``device``), on ``batch[featurizer.input_key]`` (``"x"``) after ``transform`` if given.
    Its output must be global, ``[B, D]``. See the module docstring for the cache key and files.
    A run interrupted (Ctrl-C, crash) leaves only ``*.partial`` files, which never count as a
    cache; the next call resumes after the last recorded row.
    """
    npy, description = cache_entry(dataset, featurizer, cache_dir, transform, transform_key)
    hit = load_cached(npy)
    if hit is not None:
        return hit
    npy.parent.mkdir(parents=True, exist_ok=True)
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ShapeError(f"dataset {description['dataset']['name']!r} is empty")
    if device is None:
        first = next(iter(featurizer.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    partial, progress_path = _partial(npy), _progress_file(npy)
    out: np.memmap | None = None
    start = 0
    if partial.is_file() and progress_path.is_file():  # resume an interrupted run
        try:
            state = json.loads(progress_path.read_text())
            out = np.lib.format.open_memmap(partial, mode="r+")
            if out.shape[0] != n or out.dtype != np.float32 or state.get("key") != npy.stem:
                out, start = None, 0
            else:
                start = int(state["rows"])
        except (OSError, ValueError, KeyError):
            out, start = None, 0

    key = getattr(featurizer, "input_key", "x")
    loader = DataLoader(
        Subset(dataset, range(start, n)),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_batched,
    )
    from tqdm.auto import tqdm

    bar = tqdm(
        total=n,
        initial=start,
        disable=not progress,
        desc=f"features {npy.stem}",
        unit="item",
        dynamic_ncols=True,
    )
    was_training = featurizer.training
    featurizer.eval()
    row, last_flush, t0 = start, time.monotonic(), time.monotonic()

    try:
        with torch.no_grad():
            for batch in loader:
                x = _inputs(batch, key)
                x = x.to(device) if isinstance(x, Tensor) else x
                if transform is not None:
                    x = transform(x)
                feats = featurizer(x)
                if not isinstance(feats, Tensor) or feats.dim() != 2:
                    shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats)
                    raise ShapeError(
                        f"cached_features needs global features [B, D]; the featurizer returned "
                        f"{shape}. Use its global output (e.g. output='global') or pool it"
                    )
                if out is None:
                    out = np.lib.format.open_memmap(
                        partial, mode="w+", dtype=np.float32, shape=(n, feats.shape[1])
                    )
                out[row : row + feats.shape[0]] = feats.float().cpu().numpy()
                row += feats.shape[0]
                bar.update(feats.shape[0])
                if time.monotonic() - last_flush > _FLUSH_SECONDS:
                    _record(out, progress_path, npy.stem, row)
                    last_flush = time.monotonic()
    except BaseException:
        # the rows written so far stay usable by the next call
        _record(out, progress_path, npy.stem, row)
        raise
    finally:
        bar.close()
        featurizer.train(was_training)
    if out is None or row != n:
        raise ShapeError(f"the data loader gave {row} items, expected {n}")
    seconds = time.monotonic() - t0
    shape = list(out.shape)
    out.flush()
    del out
    os.replace(partial, npy)
    _write_json(
        _sidecar(npy),
        {
            **description,
            "complete": True,
            "shape": shape,
            "seconds": round(seconds, 3),
            "rows_per_second": round((n - start) / max(seconds, 1e-9), 2),
            "resumed_from": start,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    progress_path.unlink(missing_ok=True)
    return np.load(npy, mmap_mode="r")


# ----------------------------------------------------------------------------- neighbours

_INDEXES = ("flat", "ivf", "ivf_sq8", "hnsw")


def knn(
    features: Any,
    k: int,
    metric: Literal["cosine", "ip", "l2"] = "cosine",
    index: Literal["auto", "flat", "ivf", "ivf_sq8", "hnsw"] = "auto",
    nlist: int | None = None,
    nprobe: int | None = None,
    batch: int = 16384,
    ivf_threshold: int = 100_000,
    train_size: int | None = None,
    seed: int = 0,
    rerank: int = 4,
    hnsw_m: int = 32,
    ef_search: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every row of ``features`` ``[N, D]``, excluding itself.

    Returns ``(indices [N, k] int64, scores [N, k] float32)``, best first: scores are cosine
    similarities (``"cosine"``: rows L2-normalised, inner product), inner products (``"ip"``) or
    squared Euclidean distances (``"l2"``). ``features`` may be a memory-mapped array: rows are
    read, normalised and added to the index ``batch`` at a time, and queried in batches, so the
    working memory beyond the index is ``O(batch * D)``.

    ``index``:

    - ``"flat"``: exact (brute force with ``faiss.knn`` over blocks of rows, merged in a
      ``faiss.ResultHeap``): no index, no copy of the data, but ``O(N^2 D)`` time.
    - ``"ivf"``: IndexIVFFlat, ``nlist`` coarse clusters trained on ``train_size`` sampled rows,
      ``nprobe`` of them searched per row; approximate, its scores are exact float32 ones.
    - ``"ivf_sq8"``: the same lists holding 8-bit codes (IndexIVFScalarQuantizer, QT_8bit: D
      bytes per row, of the row's residual to its list's centroid, instead of 4 D). The codes
      give approximate scores, so it fetches ``rerank * k + 1`` candidates per row, recomputes
      their scores exactly from the rows of ``features`` (read at most ``batch`` candidate rows
      at a time, in ascending id order) and keeps the best ``k``: the scores returned are exact,
      only the neighbour set is approximate, and its recall is that of ``"ivf"`` with the same
      lists (``nprobe`` limits both) unless the codes push a true neighbour below the
      ``rerank * k`` candidates.
    - ``"hnsw"``: IndexHNSWFlat (Malkov & Yashunin 2018, "Efficient and robust approximate
      nearest neighbor search using Hierarchical Navigable Small World graphs", TPAMI), a graph
      of ``hnsw_m`` links per row built once, searched greedily with a candidate list of
      ``ef_search`` (default ``max(64, 2 (k + 1))``); approximate, exact float32 scores, about
      ``O(N log N)`` work instead of ``O(N^2)``, and its own float32 copy of the rows plus
      ``2 hnsw_m`` links each. `knn_recall` measures what it missed.
    - ``"auto"``: ``"flat"`` below ``ivf_threshold`` rows, ``"ivf_sq8"`` from it. Exact search
      costs ``O(N^2 D)``; of the two IVF indices, ``"ivf_sq8"`` measured the same recall as
      ``"ivf"`` (1.0 on clustered data, see below) in less time and far less memory; ``"ivf"``
      remains for data whose 8-bit codes rank true neighbours below the ``rerank * k``
      candidates (raise ``rerank`` first).

    Defaults: ``nlist = 4 sqrt(N)`` (at most N/39, faiss's minimum of training points per
    centroid), ``nprobe = max(8, nlist / 32)`` (each row scans ~1/32 of the rows: IVF search is
    still ``O(N^2 D)``, with 1/32 of the work), ``train_size = max(40 nlist, 20000)``,
    ``rerank = 4``.
    Self is dropped by id; where a row's own id is not among its results (exact duplicates, or
    an IVF miss) the last result is dropped instead. IVF may return id ``-1`` (score -FLT_MAX,
    or FLT_MAX for l2), last in its row, when the probed lists hold fewer than ``k + 1``
    (``"ivf"``) or ``rerank * k + 1`` (``"ivf_sq8"``) rows.

    Memory (anonymous memory; the memmap's own pages are file-backed and reclaimable): exact
    search holds two ``[batch, D]`` blocks and faiss's tiles, independent of N, besides the
    outputs (``N k`` ids and scores). IndexIVFFlat (like faiss's IndexFlat) keeps its own float32
    copy of all N rows (``4 D + 8`` bytes per row, with the id) in growable per-list arrays;
    IVF-SQ8 keeps ``D + 8`` bytes per row. Both also hold the transient training sample
    (``train_size * D`` floats; faiss copies up to 100k rows of it to train SQ8 on residuals)
    and a few ``[batch, D]`` blocks (query rows; the re-ranked candidates' rows). Peak growth
    measured by ``bench/feature_cache.py knn`` (clustered data, D = 768, k = 10, cosine, default
    parameters, one thread; MiB):

    ========  ==========  =================  ===================  ===========  ============
    N         file        ``"ivf"``          ``"ivf_sq8"``        time ratio   recall@10
    ========  ==========  =================  ===================  ===========  ============
    100k      293         +528 (1.80 file)   +356 (1.22 file)     0.95         1.0 / 1.0
    300k      879         +1478 (1.68 file)  +641 (0.73 file)     0.75         1.0 / 1.0
    ========  ==========  =================  ===================  ===========  ============

    (time ratio: ivf_sq8 / ivf, 584 s / 779 s at 300k; recall of ivf / ivf_sq8 against an exact
    kNN of 1000 and 2000 sampled rows; the scores of both matched exact ones within 3.2e-7.) At
    100k the N-independent terms (the ``[batch, D]`` blocks: lower ``batch`` to shrink them) and
    the training sample still exceed the file; at 300k IVF-SQ8 needed 0.73 of it, IVFFlat 1.68.
    Those terms shrink relative to the file as N grows, but ImageNet-1K at ViT-B (1.28M x 768, a
    3.7 GiB file, whose SQ8 codes and ids take 0.93 GiB) was not measured on this project's
    machines. Fewer bytes per row (IVF-PQ) or faiss's on-disk inverted lists are not
    implemented.
    """
    import faiss

    n, d = int(features.shape[0]), int(features.shape[1])
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    check_choice(metric, ("cosine", "ip", "l2"), "metric")
    kind = index
    if kind == "auto":
        kind = "ivf_sq8" if n >= ivf_threshold else "flat"
    if kind not in _INDEXES:
        raise ValueError(f"index must be 'auto', 'flat', 'ivf', 'ivf_sq8' or 'hnsw', got {index!r}")
    if rerank < 1:
        raise ValueError(f"rerank must be >= 1, got {rerank}")
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    worst = np.finfo(np.float32).max if metric == "l2" else -np.finfo(np.float32).max

    def rows(sel: Any) -> np.ndarray:
        """Rows ``sel`` of ``features`` as a new float32 array, L2-normalised for cosine."""
        if isinstance(sel, slice):  # a view of ``features``: copy it, never write through it
            x = np.array(features[sel], dtype=np.float32, order="C")
        else:  # fancy indexing already returns a new array
            x = np.asarray(features[sel], dtype=np.float32, order="C")
        if metric == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # no [rows, D] temporary
            x /= np.maximum(norms, 1e-12)[:, None]
        return x

    def exact(qs: int, qe: int, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact ``k + 1`` best rows for ``query``, reading the database block by block."""
        heap = faiss.ResultHeap(qe - qs, k + 1, keep_max=metric != "l2")
        for ds in range(0, n, batch):
            base = rows(slice(ds, min(n, ds + batch)))
            dist, ids = faiss.knn(query, base, min(k + 1, len(base)), metric=faiss_metric)
            heap.add_result(dist, ids + ds)
        heap.finalize()
        return heap.D, heap.I

    def rescore(query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query row against its candidate ``ids``, re-sorted best first."""
        b, c = ids.shape
        dist = np.empty((b, c), dtype=np.float32)
        step = max(1, batch // c)  # queries whose candidates make at most ``batch`` rows
        for s in range(0, b, step):
            e = min(b, s + step)
            # ids -1 (nothing found) read row 0 and are overwritten below
            uniq, inv = np.unique(np.maximum(ids[s:e].ravel(), 0), return_inverse=True)
            base = rows(uniq)  # ascending ids: the memmap is read in file order
            cand = base[inv].reshape(e - s, c, d)
            del base
            if metric == "l2":
                cand -= query[s:e, None, :]
                dist[s:e] = np.einsum("bcd,bcd->bc", cand, cand)
            else:
                dist[s:e] = np.matmul(cand, query[s:e, :, None])[:, :, 0]
        dist[ids < 0] = worst
        order = np.argsort(dist if metric == "l2" else -dist, axis=1, kind="stable")
        return np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)

    ivf = None
    if kind == "hnsw":
        ivf = faiss.IndexHNSWFlat(d, hnsw_m, faiss_metric)
        for s in range(0, n, batch):
            ivf.add(rows(slice(s, min(n, s + batch))))
        ivf.hnsw.efSearch = ef_search or max(64, 2 * (k + 1))
    elif kind != "flat":
        nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        if kind == "ivf":
            ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
        else:  # 8-bit scalar quantizer: D bytes per row, on residuals to the list's centroid
            sq8 = faiss.ScalarQuantizer.QT_8bit
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, sq8, faiss_metric)
        n_train = min(n, train_size or max(40 * nlist, 20_000))
        rng = np.random.default_rng(seed)
        ivf.train(rows(np.sort(rng.choice(n, size=n_train, replace=False))))
        ivf.nprobe = nprobe or min(nlist, max(8, nlist // 32))
        for s in range(0, n, batch):
            ivf.add(rows(slice(s, min(n, s + batch))))

    # candidates per row, self included; compressed codes give approximate scores: take more
    wanted = k + 1 if kind != "ivf_sq8" else min(n, rerank * k + 1)
    indices = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        query = rows(slice(s, e))
        if ivf is None:
            dist, ids = exact(s, e, query)
        else:
            dist, ids = ivf.search(query, wanted)
            if kind == "ivf_sq8":
                dist, ids = rescore(query, ids)
        drop = ids == np.arange(s, e)[:, None]
        drop[~drop.any(axis=1), -1] = True  # self not found: drop the worst instead
        keep = ~drop
        indices[s:e] = ids[keep].reshape(e - s, -1)[:, :k]
        scores[s:e] = dist[keep].reshape(e - s, -1)[:, :k]
    return indices, scores


def knn_recall(
    features: Any,
    indices: np.ndarray,
    metric: Literal["cosine", "ip", "l2"] = "cosine",
    sample: int = 1000,
    seed: int = 0,
    batch: int = 16384,
) -> float:
    """recall@k of a kNN table: the share of each row's exact ``k`` nearest neighbours (itself
    excluded) that ``indices [N, k]`` lists, averaged over ``sample`` random rows."""
    import faiss

    n, k = int(indices.shape[0]), int(indices.shape[1])
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=min(sample, n), replace=False))

    def rows(sel: Any) -> np.ndarray:
        x = np.array(features[sel], dtype=np.float32, order="C")
        if metric == "cosine":
            x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
        return x

    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    query = rows(chosen)
    heap = faiss.ResultHeap(len(chosen), k + 1, keep_max=metric != "l2")
    for s in range(0, n, batch):
        base = rows(slice(s, min(n, s + batch)))
        dist, ids = faiss.knn(query, base, min(k + 1, len(base)), metric=faiss_metric)
        heap.add_result(dist, ids + s)
    heap.finalize()
    found = 0
    for row, exact in zip(chosen, heap.I, strict=True):
        truth = [j for j in exact if j != row][:k]
        found += len(set(truth) & set(indices[row].tolist()))
    return found / (len(chosen) * k)


def spherical_kmeans(x: np.ndarray | Tensor, k: int, seed: int, niter: int = 30) -> Tensor:
    """Centroids ``[k, D]`` of faiss's spherical k-means on rows ``x`` (one run of ``niter``)."""
    import faiss

    arr = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    km = faiss.Kmeans(arr.shape[1], k, niter=niter, nredo=1, spherical=True, seed=seed)
    km.train(arr)
    return torch.from_numpy(km.centroids.copy())
