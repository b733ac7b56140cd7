"""The spectral embedding as a (frozen, non-parametric) featurizer (I-Con, Cor. 5).

Spectral clustering is k-Means on the spectral embedding (I-Con, Cor. 5): the first eigenvectors of
the normalised Laplacian of an affinity graph. This featurizer computes that embedding of the
training set once (``setup``) and looks points up by dataset id, so a recipe can hand it to a
supervisory p (``p_featurizer`` of the ``clusterer`` learner) — k-Means as I-Con then runs on it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from fw.api import Featurizer
from fw.data import take
from fw.errors import check_choice


class SpectralEmbedding(Featurizer):
    """``n_components`` Laplacian eigenmaps of the training data, looked up by ``index``.

    The affinity is scikit-learn's ``SpectralClustering`` one: ``nearest_neighbors`` — the
    symmetrised kNN connectivity ``(A + Aᵀ)/2`` with ``n_neighbors`` (self included) — or
    ``rbf`` — ``exp(−gamma ‖x_i − x_j‖²)``. The embedding is
    ``sklearn.manifold.spectral_embedding`` of it (normalised Laplacian, first eigenvector
    kept, ``drop_first=False``), exactly what ``SpectralClustering`` then clusters with k-means.
    ``normalize_rows`` scales every point's row to unit length, the step of Ng, Jordan & Weiss
    (2001) that scikit-learn leaves out. Nothing here trains.
    """

    input_key = "index"

    def __init__(
        self,
        n_components: int = 10,
        affinity: Literal["nearest_neighbors", "rbf"] = "nearest_neighbors",
        n_neighbors: int = 10,
        gamma: float = 1.0,
        normalize_rows: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_choice(affinity, ("nearest_neighbors", "rbf"), "affinity")
        self.dim = n_components
        self.affinity = affinity
        self.n_neighbors = n_neighbors
        self.gamma = gamma
        self.normalize_rows = normalize_rows
        self.seed = seed
        self.register_buffer("table", torch.empty(0, n_components))
        self.register_buffer("row_of_id", torch.empty(0, dtype=torch.long))

    def setup(self, data: Any) -> None:
        from sklearn.manifold import spectral_embedding
        from sklearn.metrics.pairwise import rbf_kernel
        from sklearn.neighbors import kneighbors_graph

        x = take(data).flatten(1).double().numpy()
        if self.affinity == "nearest_neighbors":
            conn = kneighbors_graph(x, n_neighbors=self.n_neighbors, include_self=True)
            graph = 0.5 * (conn + conn.T)
        else:
            graph = rbf_kernel(x, gamma=self.gamma)
        maps = spectral_embedding(
            graph, n_components=self.dim, random_state=self.seed, drop_first=False
        )
        if self.normalize_rows:
            maps = maps / np.linalg.norm(maps, axis=1, keepdims=True).clip(min=1e-12)
        self.table = torch.as_tensor(np.ascontiguousarray(maps), dtype=torch.float32)
        ids = data.full_batch()["index"].long() if hasattr(data, "full_batch") else None
        if ids is None:
            ids = torch.arange(len(maps))
        row_of_id = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        row_of_id[ids] = torch.arange(len(ids))
        self.row_of_id = row_of_id

    def forward(self, index: Tensor) -> Tensor:
        if self.table.shape[0] == 0:
            raise RuntimeError("SpectralEmbedding.setup(data) must run before the first lookup")
        rows = self.row_of_id.to(index.device)[index.long()]
        if bool((rows < 0).any()):
            raise ValueError("spectral_embedding: ids outside the training set it was built on")
        return self.table.to(index.device)[rows]
