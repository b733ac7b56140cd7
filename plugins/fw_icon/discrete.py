"""Discrete supervisory distributions (I-Con, Table 1; Hamilton, PhD thesis, Table 8.1).

All are uniform over a given relation, ``1/Z · 1[...]``, normalised over the candidates (see
`fw.lib.distributions` for square vs rectangular contexts and ``on_missing``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fw import api
from fw.errors import ShapeError
from fw.lib.distributions import (
    Geometry,
    OnMissing,
    candidates,
    ctx_dtype,
    geometry,
    present,
    row_col,
    uniform_over,
)

#: Context key of a square cross-modal context: the modality (view set V_i) of each point.
MODALITY = "modality"


class Identity(api.NeighborhoodDistribution):
    """p(j|i) = 1[i = j] (PCA with the σ→∞ Gaussian, I-Con, Cor. 1).

    Square contexts only, and the diagonal is the one candidate set here that **includes**
    ``i = j`` (every column is a candidate, all mass sits on ``i``); pair it with a q that keeps
    the diagonal (``cohesion_variance`` does by default).
    """

    family: ClassVar[str] = "Identity"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        pass

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        if not geo.square:
            raise ShapeError("identity: p(j|i) = 1[i = j] needs a square context (no *_col keys)")
        eye = torch.eye(geo.n, dtype=torch.bool, device=geo.device)
        return uniform_over(
            eye, candidates(geo, exclude_self=False), "error", "identity", ctx_dtype(ctx)
        )


class SameClass(api.NeighborhoodDistribution):
    """p(j|i) = 1/(K_i − 1) · 1[y_i = y_j, j ≠ i] (SupCon, I-Con, Cor. 2).

    ``K_i`` is the number of batch points in i's class, so a row is uniform over i's in-batch
    classmates. Rectangular contexts (``LABELS_COL``) are uniform over the columns sharing
    i's label. A point alone in its class has no positive (see ``on_missing``).
    """

    family: ClassVar[str] = "Uniform over Classes"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.LABELS,)

    def __init__(self, *, on_missing: OnMissing = "error") -> None:
        self.on_missing = on_missing

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        y, y_col = row_col(ctx, api.LABELS, api.LABELS_COL, geo, "same_class")
        support = y.unsqueeze(1) == y_col.unsqueeze(0)
        return uniform_over(support, candidates(geo), self.on_missing, "same_class", ctx_dtype(ctx))


class DataLabel(api.NeighborhoodDistribution):
    """p(j|i) = 1[i belongs to class j] (cross-entropy, I-Con, Cor. 3).

    Rows are the data points (``LABELS`` ``[n]``), columns the class prototypes. With
    ``num_classes`` C the columns are the classes ``0..C−1`` (``[n, C]``, one-hot rows; the
    ``1/|C|`` printed in I-Con's Table 1 is a typo); without it the columns are the
    points of ``LABELS_COL`` and a row is uniform over the columns of its class.
    """

    table_params: ClassVar[dict[str, Any]] = {"p": {"num_classes": 10}}

    example: ClassVar[dict[str, Any]] = {"num_classes": 3}

    family: ClassVar[str] = "Data-Label Pairs"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.LABELS,)

    def __init__(self, *, num_classes: int | None = None) -> None:
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"data_label: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        y = torch.as_tensor(ctx[api.LABELS])
        if self.num_classes is not None:
            if y.dim() != 1:
                raise ShapeError(f"data_label: labels must be [n], got {tuple(y.shape)}")
            if bool(((y < 0) | (y >= self.num_classes)).any()):
                raise ValueError(
                    f"data_label: labels must lie in 0..{self.num_classes - 1} (num_classes)"
                )
            cols = torch.arange(self.num_classes, device=y.device)
        elif present(ctx, api.LABELS_COL):
            cols = torch.as_tensor(ctx[api.LABELS_COL], device=y.device)
        else:
            raise KeyError(
                f"data_label needs `num_classes` (columns = classes 0..C-1) or context key "
                f"{api.LABELS_COL!r} (columns = labelled prototypes)"
            )
        support = y.unsqueeze(1) == cols.unsqueeze(0)
        mask = torch.ones_like(support)
        return uniform_over(support, mask, "error", "data_label", ctx_dtype(ctx))


class CrossModal(api.NeighborhoodDistribution):
    """p(j|i) = 1/Z · 1[i, j are a positive pair and V_i ≠ V_j] (CMC, CLIP; I-Con, Thm 6).

    Two layouts, both normalised only over the *other* modality:

    - rectangular ``[n_A, n_B]``: rows are modality A, columns modality B (``FEATURES_COL`` /
      ``INDEX_COL``); pairs share a dataset id (``INDEX`` vs ``INDEX_COL``; without ids, or
      without ``INDEX_COL`` when ``n_A = n_B``, row i pairs with column i);
    - square, both directions at once: all points of both modalities are rows and columns,
      ``MODALITY`` (``[n]``) says which set each point is in, and the candidates of i are the
      points of the other modalities; pairs share ``INDEX``. The mean over rows is then CLIP's
      symmetric loss ``(L_A→B + L_B→A)/2`` when both sets have the same size.
    """

    family: ClassVar[str] = "Cross-Modal Pairs"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, on_missing: OnMissing = "error") -> None:
        self.on_missing = on_missing

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        mask = cross_modal_candidates(ctx, geo)
        if present(ctx, api.INDEX):
            ids, ids_col = row_col(ctx, api.INDEX, api.INDEX_COL, geo, "cross_modal")
        elif geo.square:
            raise KeyError(f"cross_modal: a square (two-modality) context needs {api.INDEX!r}")
        elif geo.n == geo.m:
            ids = ids_col = torch.arange(geo.n, device=geo.device)
        else:
            raise KeyError(
                f"cross_modal: {geo.n} rows and {geo.m} columns cannot pair by position; give "
                f"{api.INDEX!r} and {api.INDEX_COL!r}"
            )
        support = ids.unsqueeze(1) == ids_col.unsqueeze(0)
        return uniform_over(support, mask, self.on_missing, "cross_modal", ctx_dtype(ctx))


def cross_modal_candidates(ctx: api.Context, geo: Geometry) -> torch.Tensor:
    """Candidates of a cross-modal row: all columns (rectangular) or other-modality points."""
    if not geo.square:
        return candidates(geo)
    if not present(ctx, MODALITY):
        raise KeyError(
            f"cross-modal distributions need either a column set ({api.FEATURES_COL!r}, "
            f"rectangular) or context key {MODALITY!r} [n] naming each point's modality"
        )
    modality = torch.as_tensor(ctx[MODALITY], device=geo.device)
    if modality.shape != (geo.n,):
        raise ShapeError(f"{MODALITY!r} must be [{geo.n}], got {tuple(modality.shape)}")
    return modality.unsqueeze(1) != modality.unsqueeze(0)
