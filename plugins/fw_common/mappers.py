"""Trainable mappers f_φ (I-Con, App. G.1): an embedding table, a linear map, an MLP."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from fw.api import Featurizer
from fw.data import take
from fw.errors import ShapeError


def _as_float(x: Tensor) -> Tensor:
    """Integer inputs (pixels) become float32; float inputs keep their precision."""
    return x if x.is_floating_point() else x.float()


def _check_dim(dim: int) -> None:
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")


def principal_components(x: Tensor, dim: int, block: int = 8192) -> Tensor:
    """Scores ``[N, dim]`` (float64) of ``x [N, D]`` on its first ``dim`` principal axes.

    With D ≤ N the axes are the top eigenvectors of the D × D scatter matrix, accumulated
    over blocks of rows in float64: memory O(block·D + D²) instead of an SVD's copies of the
    whole N × D matrix in float64 (3.3 GiB at 70,000 × 784). Otherwise a thin SVD.
    """
    n, d = x.shape
    if d > n:
        centred = x.double() - x.double().mean(dim=0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        return centred @ v[:dim].T
    mean = torch.zeros(d, dtype=torch.float64)
    for lo in range(0, n, block):
        mean += x[lo : lo + block].double().sum(dim=0)
    mean /= n
    scatter = torch.zeros(d, d, dtype=torch.float64)
    for lo in range(0, n, block):
        xc = x[lo : lo + block].double() - mean
        scatter.addmm_(xc.T, xc)
    _, vecs = torch.linalg.eigh(scatter)  # ascending eigenvalues
    axes = vecs[:, -dim:].flip(1)
    return torch.cat([(x[lo : lo + block].double() - mean) @ axes for lo in range(0, n, block)])


class Embedding(Featurizer):
    """Non-parametric mapper: one learned vector per data point, looked up by ``index``.

    ``init="pca"`` starts from the data's first ``dim`` principal components scaled so the
    first has standard deviation ``init_std`` (t-SNE's PCA initialisation, sklearn's
    convention); ``"random"`` draws N(0, init_std²).
    """

    input_key = "index"

    def __init__(
        self,
        dim: int = 2,
        init: Literal["pca", "random"] = "pca",
        init_std: float = 1e-4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim
        self.init = init
        self.init_std = init_std
        self.seed = seed
        self.weight = nn.Parameter(torch.empty(0, dim))

    def setup(self, data: Any) -> None:
        x = take(data).flatten(1)
        n = x.shape[0]
        if self.init == "pca":
            pcs = principal_components(x, self.dim)
            # sklearn's sign convention (svd_flip on u): largest |loading| of each column > 0
            signs = torch.sign(pcs[pcs.abs().argmax(dim=0), torch.arange(self.dim)])
            pcs = pcs * signs
            emb = pcs / pcs[:, 0].std() * self.init_std
        else:
            gen = torch.Generator().manual_seed(self.seed)
            emb = torch.randn(n, self.dim, generator=gen, dtype=torch.float64) * self.init_std
        self.weight = nn.Parameter(emb.float())

    def forward(self, index: Tensor) -> Tensor:
        if self.weight.shape[0] == 0:
            raise RuntimeError("Embedding.setup(data) must run before the first lookup")
        return self.weight[index]


class Linear(Featurizer):
    """A linear map of flattened inputs to ``dim`` features (PCA-style mapper, linear heads)."""

    example: ClassVar[dict[str, Any]] = {"dim": 4}

    def __init__(self, dim: int, in_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim
        self.layer = (
            nn.LazyLinear(dim, bias=bias) if in_dim is None else nn.Linear(in_dim, dim, bias)
        )

    def setup(self, data: Any) -> None:
        if isinstance(self.layer, nn.LazyLinear):
            with torch.no_grad():
                self.layer(take(data, limit=1).flatten(1).float())

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(_as_float(x.flatten(1)))


class MLP(Featurizer):
    """A parametric mapper: flattened inputs -> hidden layers (ReLU, BatchNorm) -> ``dim``."""

    def __init__(
        self,
        dim: int = 2,
        hidden: list[int] = (512, 512),  # type: ignore[assignment]
        in_dim: int | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.LazyLinear(h) if width is None else nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            width = h
        layers.append(nn.LazyLinear(dim) if width is None else nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def setup(self, data: Any) -> None:
        with torch.no_grad():
            was = self.training
            self.eval()
            self.net(take(data, limit=2).flatten(1).float())
            self.train(was)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ShapeError(f"MLP mapper expects [B, ...] inputs, got shape {tuple(x.shape)}")
        return self.net(_as_float(x.flatten(1)))


class OrthonormalProjection(Featurizer):
    """``f(x) = W x`` with orthonormal rows ``W Wᵀ = I`` (a projection onto a ``dim``-subspace).

    PCA's mapper (I-Con, Cor. 1): with the identity p and the σ→∞ Gaussian q
    (``cohesion_variance``) the I-Con loss is ``−2 Var(W x)``, which an unconstrained linear map
    drives to −∞; over orthonormal projections its minimisers span the top-``dim`` principal
    subspace. ``W`` is kept orthonormal by `torch.nn.utils.parametrizations.orthogonal`.
    """

    def __init__(self, dim: int = 2, in_dim: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.in_dim = in_dim
        self.seed = seed
        self.layer: torch.nn.Module | None = None
        if in_dim is not None:
            self._build(in_dim)

    def _build(self, in_dim: int) -> None:
        from torch.nn.utils.parametrizations import orthogonal

        if in_dim < self.dim:
            raise ValueError(f"orthonormal_projection: dim {self.dim} > input width {in_dim}")
        gen = torch.Generator().manual_seed(self.seed)
        layer = torch.nn.Linear(in_dim, self.dim, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(self.dim, in_dim, generator=gen))
        self.layer = orthogonal(layer)

    def setup(self, data: Any) -> None:
        if self.layer is None:
            self._build(int(take(data, limit=1).flatten(1).shape[1]))

    def forward(self, x: Tensor) -> Tensor:
        if self.layer is None:
            raise RuntimeError("orthonormal_projection: setup(data) must run first (or in_dim)")
        return self.layer(x.flatten(1).float())
