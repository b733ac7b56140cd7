"""Shared helpers of the I-Con catalog distributions: geometry, candidate masks, uniform rows.

Conventions every distribution of fw_icon, fw_simclr and fw_kmeans follows:

- A context is *square* when it names no column set (rows and columns are the same ``n``
  points); then ``i = j`` is not a candidate unless the distribution's docstring says so.
  It is *rectangular* (``[n, m]``) when ``FEATURES_COL``, ``INDEX_COL`` or ``LABELS_COL`` is
  given; then every column is a candidate.
- The mask of a :class:`~fw.api.Neighborhood` is the candidate set (what the row is
  normalised over, and what debiasing's ``N`` counts), not the support: a sparse p has
  ``-inf`` log-probability on candidates it gives no mass to.
- A supervisory row with no positive in the batch is an error by default; ``on_missing:
  skip`` leaves that row without mass instead (all ``-inf``), so it adds 0 to the loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from fw import api
from fw.errors import ShapeError, check_choice

OnMissing = Literal["error", "skip"]


@attrs.frozen
class Geometry:
    """Rows ``n``, columns ``m``, whether they are the same points, and the device."""

    n: int
    m: int
    square: bool
    device: torch.device


def present(ctx: Mapping[str, Any], key: str) -> bool:
    return key in ctx and ctx[key] is not None


def geometry(ctx: Mapping[str, Any]) -> Geometry:
    """Shape of the neighbourhood a context asks for (see the module docstring)."""
    rows = next((ctx[k] for k in (api.FEATURES, api.INDEX, api.LABELS) if present(ctx, k)), None)
    if rows is None:
        raise KeyError(
            "the context names no row points: give one of "
            f"{api.FEATURES!r}, {api.INDEX!r} or {api.LABELS!r}"
        )
    cols = next(
        (ctx[k] for k in (api.FEATURES_COL, api.INDEX_COL, api.LABELS_COL) if present(ctx, k)),
        None,
    )
    n = int(rows.shape[0])
    if cols is None:
        return Geometry(n, n, True, rows.device)
    return Geometry(n, int(cols.shape[0]), False, rows.device)


def candidates(geo: Geometry, exclude_self: bool = True) -> Tensor:
    """Boolean candidate mask ``[n, m]``: everything, minus the diagonal of a square context."""
    mask = torch.ones(geo.n, geo.m, dtype=torch.bool, device=geo.device)
    if geo.square and exclude_self:
        mask.fill_diagonal_(False)
    return mask


def row_col(
    ctx: Mapping[str, Any], key: str, key_col: str, geo: Geometry, what: str
) -> tuple[Tensor, Tensor]:
    """Row and column values of a per-point key (ids or labels); columns default to the rows."""
    if not present(ctx, key):
        raise KeyError(f"{what} needs context key {key!r}")
    rows = torch.as_tensor(ctx[key], device=geo.device)
    if present(ctx, key_col):
        cols = torch.as_tensor(ctx[key_col], device=geo.device)
    elif geo.square or geo.m == geo.n:
        cols = rows
    else:
        raise KeyError(
            f"{what}: the columns are a different set of {geo.m} points; give {key_col!r}"
        )
    if rows.shape != (geo.n,) or cols.shape != (geo.m,):
        raise ShapeError(
            f"{what}: {key!r} must be [{geo.n}] and {key_col!r} [{geo.m}], got "
            f"{tuple(rows.shape)} and {tuple(cols.shape)}"
        )
    return rows, cols


def uniform_over(
    support: Tensor,
    mask: Tensor,
    on_missing: OnMissing,
    what: str,
    dtype: torch.dtype | None = None,
) -> api.Neighborhood:
    """Rows uniform over ``support & mask`` (``1/Z·1[...]``), normalised over the candidates."""
    support = support & mask
    counts = support.sum(dim=1)
    empty = counts == 0
    if on_missing == "error" and bool(empty.any()):
        first = int(empty.nonzero()[0, 0])
        raise ValueError(
            f"{what}: {int(empty.sum())} of {support.shape[0]} row(s) have no neighbour among "
            f"the batch's candidates (first: row {first}). Put every anchor's partners in the "
            "batch, or set `on_missing: skip` to leave such rows out of the loss."
        )
    check_choice(on_missing, ("error", "skip"), "on_missing")
    dtype = dtype or torch.get_default_dtype()
    log_count = torch.log(counts.clamp_min(1).to(dtype)).unsqueeze(1)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=mask.device)
    log_prob = torch.where(support, -log_count, neg_inf)
    return api.Neighborhood(log_prob, mask)


def ctx_dtype(ctx: Mapping[str, Any]) -> torch.dtype:
    """Float dtype of the context's features (supervisory p follows it), else the default."""
    x = ctx.get(api.FEATURES)
    if x is not None and torch.is_floating_point(x):
        return x.dtype
    return torch.get_default_dtype()


def sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[n, m]`` (no square root, so gradients are finite at 0)."""
    d = (a * a).sum(dim=1, keepdim=True) + (b * b).sum(dim=1).unsqueeze(0) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def features(ctx: Mapping[str, Any], geo: Geometry, what: str) -> tuple[Tensor, Tensor]:
    """Row features ``[n, d]`` and column features ``[m, d]`` (the rows again when square)."""
    if not present(ctx, api.FEATURES):
        raise KeyError(f"{what} needs context key {api.FEATURES!r}")
    x = ctx[api.FEATURES]
    y = ctx[api.FEATURES_COL] if present(ctx, api.FEATURES_COL) else None
    if y is None:
        if not geo.square:
            raise KeyError(f"{what}: the columns are a different set; give {api.FEATURES_COL!r}")
        y = x
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ShapeError(
            f"{what}: features must be [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def learned_prototypes(num_classes: int | None, dim: int | None, what: str) -> Tensor | None:
    """Initial learned class prototypes ``[C, dim]`` (N(0, 1/dim)), or None when not learned."""
    if num_classes is None and dim is not None:
        raise ValueError(
            f"{what}: learned prototypes need `num_classes`; without it the prototypes come from "
            "the context's features_col"
        )
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"{what}: num_classes must be >= 1, got {num_classes}")
    if num_classes is None or dim is None:
        return None
    return torch.randn(num_classes, dim) * dim**-0.5


def prototype_points(
    ctx: Mapping[str, Any], learned: Tensor | None, num_classes: int | None, what: str
) -> Tensor:
    """The class prototypes ``[C, d]`` that the features ``[n, d]`` are compared with.

    ``learned`` when given; else with ``num_classes`` the identity ``[C, C]`` (the features
    already are class scores, a mapper's last layer holds the prototypes); else the context's
    ``FEATURES_COL`` (e.g. text embeddings of the class names).
    """
    f = ctx[api.FEATURES]
    if learned is not None:
        protos = learned
    elif num_classes is not None:
        if f.shape[1] != num_classes:
            raise ShapeError(
                f"{what} without `dim` reads features as class scores [n, {num_classes}], got "
                f"{tuple(f.shape)}"
            )
        protos = torch.eye(num_classes, dtype=f.dtype, device=f.device)
    elif present(ctx, api.FEATURES_COL):
        protos = ctx[api.FEATURES_COL]
    else:
        raise KeyError(
            f"{what} needs `num_classes` (learned or identity prototypes) or context key "
            f"{api.FEATURES_COL!r} (given prototypes)"
        )
    if protos.dim() != 2 or protos.shape[1] != f.shape[1]:
        raise ShapeError(
            f"{what}: features {tuple(f.shape)} and prototypes {tuple(protos.shape)} must share "
            "their last dimension"
        )
    return protos.to(f.dtype)


def exact_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``[n, m]`` from differences (exact near 0, where logs need it)."""
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(dim=2)
