"""The supervisory distribution SimCLR introduced: uniform over positive pairs (I-Con, Thm 4).

SimCLR's learned q is the cosine softmax with temperature (I-Con, Thm 4), which is the ``gaussian``
distribution of the ``sne`` plugin with ``metric: cosine``.
"""

from __future__ import annotations

from typing import ClassVar

from fw import api
from fw.lib.distributions import OnMissing, candidates, ctx_dtype, geometry, row_col, uniform_over


class PositivePairs(api.NeighborhoodDistribution):
    """p(j|i) = 1/Z · 1[i and j are views of the same sample].

    Views of one sample share a dataset id in ``INDEX`` (``INDEX_COL`` for the columns of a
    rectangular context, e.g. view 1 × view 2). In a square context the row is uniform over
    the *other* ``V − 1`` views of the same id, over the candidates ``j ≠ i``; rectangular
    contexts keep every column as a candidate (``1/Z`` over the columns sharing the id).
    With two views this is SimCLR's one-hot partner (Chen et al. 2020, Algorithm 1).
    """

    family: ClassVar[str] = "Uniform over Positive Pairs"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.INDEX,)

    def __init__(self, *, on_missing: OnMissing = "error") -> None:
        self.on_missing = on_missing

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        ids, ids_col = row_col(ctx, api.INDEX, api.INDEX_COL, geo, "positive_pairs")
        support = ids.unsqueeze(1) == ids_col.unsqueeze(0)
        mask = candidates(geo)
        return uniform_over(support, mask, self.on_missing, "positive_pairs", ctx_dtype(ctx))
