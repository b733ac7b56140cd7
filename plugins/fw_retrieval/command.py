"""``fw retrieve``: the k nearest images to a query that satisfy a condition, as a contact sheet."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fw.api import Command
from fw.errors import FwError

_METHODS = ("tree", "masked", "subset", "query_then_filter", "reconfigured", "dedicated", "faiss")


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments of ``fw retrieve``."""
    p.add_argument(
        "--index",
        required=True,
        help="a folder of images (sub-folder = label, optional metadata.csv) or a .npz/.npy "
        "feature file",
    )
    p.add_argument("--query", help="query image file (featurized like the index)")
    p.add_argument("--query-row", type=int, help="use row N of the index as the query instead")
    p.add_argument(
        "--where",
        help="condition over label and metadata columns, e.g. "
        '\'label in ["cat", "dog"] and not medium == "photo"\' (see docs/retrieval.md)',
    )
    p.add_argument("-k", type=int, default=8, help="neighbours to return (default 8)")
    p.add_argument(
        "--metric",
        default="cosine",
        choices=("cosine", "euclidean", "ip"),
        help="cosine (L2-normalised features, the default), euclidean or ip (inner product)",
    )
    p.add_argument(
        "--features",
        default="content",
        choices=("content", "style"),
        help="content: a CNN's pooled features; style: AdaIN mean/std of a mid-level map",
    )
    p.add_argument("--featurizer", help="registered featurizer name (default per --features)")
    p.add_argument(
        "--featurizer-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="argument of the featurizer (repeatable), e.g. weights=null",
    )
    p.add_argument("--image-size", type=int, default=224, help="images are resized to this")
    p.add_argument("--cache", default="~/.cache/fw/retrieval", help="feature cache folder")
    p.add_argument("--method", default="tree", choices=_METHODS, help="search method")
    p.add_argument("--out", help="output folder (default runs/retrieve-<time>)")


def _featurizer_args(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise FwError(f"--featurizer-arg {item!r} must be KEY=VALUE, e.g. weights=null")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _method(name: str, corpus: Any) -> Any:
    from fw_retrieval import methods

    if name == "faiss":
        return methods.FaissSelector(corpus, "flat")
    return methods.METHODS[name](corpus)


def contact_sheet(
    query_image: np.ndarray | None,
    images: list[np.ndarray | None],
    captions: list[str],
    title: str,
    path: Path,
    with_query: bool = True,
) -> Path:
    """Query (left, unless ``with_query`` is False) and results in a grid, each captioned;
    missing images are drawn as blanks."""
    from fw.lib.plots import pyplot, save_figure

    plt = pyplot()
    lead = 1 if with_query else 0
    cols = min(4, max(1, len(images)))
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols + lead, figsize=(2.6 * (cols + lead), 2.7 * rows + 0.6))
    axes = np.asarray(axes).reshape(rows, cols + lead)
    for ax in axes.ravel():
        ax.axis("off")
    if with_query:
        _show(axes[0, 0], query_image, "query")
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        _show(axes[i // cols, lead + i % cols], img, cap)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _show(ax: Any, image: np.ndarray | None, caption: str) -> None:
    if image is None:
        ax.text(0.5, 0.5, "(no image)", ha="center", va="center", fontsize=8)
    else:
        ax.imshow(image)
    ax.set_title(caption, fontsize=7)


def _picture(path: Path | None, size: int) -> np.ndarray | None:
    from fw_retrieval.corpus import load_image

    if path is None:
        return None
    return load_image(path, size)[0].permute(1, 2, 0).numpy()


def main(args: argparse.Namespace) -> int:
    """Index, query, search and write ``contact_sheet.png`` and ``results.json``."""
    from fw.files import locked, write_text
    from fw_retrieval import corpus as cp
    from fw_retrieval.methods import Corpus
    from fw_retrieval.predicate import Columns

    if (args.query is None) == (args.query_row is None):
        raise FwError("give exactly one of --query IMG or --query-row N")
    if args.k < 1:
        raise FwError(f"-k must be >= 1, got {args.k}")
    index_path = Path(args.index).expanduser()
    fargs = _featurizer_args(args.featurizer_arg)
    model = described = None
    if index_path.is_dir():
        model, described = cp.build_featurizer(args.featurizer, args.features, fargs)
        indexed = cp.index_folder(
            index_path, model, described, Path(args.cache).expanduser(), args.image_size
        )
    elif index_path.is_file():
        indexed = cp.index_file(index_path)
    else:
        raise FwError(f"--index {index_path} does not exist (a folder of images or a .npz file)")
    feats = indexed.features
    if args.query_row is not None:
        if not 0 <= args.query_row < len(feats):
            last = len(feats) - 1
            raise FwError(f"--query-row {args.query_row} is outside the index (rows 0..{last})")
        q = feats[args.query_row]
        query_picture = _picture(indexed.paths[args.query_row] if indexed.paths else None, 160)
    else:
        if model is None:
            model, described = cp.build_featurizer(args.featurizer, args.features, fargs)
            if indexed.featurizer is not None and indexed.featurizer != described:
                raise FwError(
                    f"--index was made with {indexed.featurizer!r} but --query would use "
                    f"{described!r}; pass the same --features/--featurizer, or --query-row"
                )
        import torch

        with torch.no_grad():
            q = model(cp.load_image(args.query, args.image_size)).reshape(-1).numpy()
        if q.shape[0] != feats.shape[1]:
            raise FwError(
                f"the query has {q.shape[0]} features, the index {feats.shape[1]}; build both "
                "with the same featurizer"
            )
        query_picture = _picture(Path(args.query), 160)
    metric = "euclidean" if args.metric == "cosine" else args.metric
    if args.metric == "cosine":
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
    corpus = Corpus(feats, Columns(indexed.columns), metric)
    where = args.where
    valid = int(corpus.mask(where).sum())
    t0 = time.perf_counter()
    ids, dist = _method(args.method, corpus).search(q, args.k, where)
    seconds = time.perf_counter() - t0
    out = Path(args.out or f"runs/retrieve-{time.strftime('%Y%m%d-%H%M%S')}")
    results = []
    for i, d in zip(ids.tolist(), dist.tolist(), strict=True):
        row: dict[str, Any] = {"row": i, "distance": d}
        row.update({c: v[i].item() for c, v in indexed.columns.items()})
        if indexed.paths:
            row["path"] = str(indexed.paths[i])
        results.append(row)
    summary = {
        "index": str(index_path),
        "query": args.query if args.query is not None else f"row {args.query_row}",
        "where": where,
        "k": args.k,
        "metric": args.metric,
        "features": described or indexed.featurizer,
        "method": args.method,
        "rows": len(feats),
        "rows_satisfying_where": valid,
        "search_seconds": seconds,
        "results": results,
    }
    captions = [
        f"#{r['row']} " + (f"{r['label']} " if "label" in r else "") + f"d={r['distance']:.3f}"
        for r in results
    ]
    pictures = [_picture(indexed.paths[i], 160) if indexed.paths else None for i in ids.tolist()]
    with locked(out):
        write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
        sheet = contact_sheet(
            query_picture,
            pictures,
            captions,
            f"{args.k} nearest ({args.metric}) where {where or 'true'}: {valid} of {len(feats)} "
            "rows qualify",
            out / "contact_sheet.png",
        )
    if valid < args.k:
        print(f"only {valid} rows satisfy --where; returned {len(ids)}")
    for r in results:
        print(json.dumps(r))
    print(f"wrote {sheet}")
    return 0


COMMAND = Command(
    help="conditional image retrieval: nearest images that satisfy --where",
    description="Exact conditional kNN (MosAIC's pruned ball tree by default) over an image "
    "folder or feature file; writes contact_sheet.png and results.json into --out.",
    configure=configure,
    main=main,
)
