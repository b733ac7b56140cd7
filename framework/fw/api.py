"""The abstract components of fw: every plugin implements one of these contracts.

Shapes: global features ``[B, C]``; dense features ``[B, C, H, W]`` or ``[B, C, T]`` with a
validity mask (`fw.dense`); a :class:`Neighborhood` ``[..., n, m]``; an explanation ``[n]`` or
``[n, n]`` of a :class:`Game`. The hook that registers each kind is listed in `fw.hookspecs`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor, nn

from fw.dense import Dense, check_map
from fw.errors import ContextError, ShapeError

# Keys of a distribution context (a plain mapping, so plugins may add their own keys).
FEATURES = "features"  # [n, d] row points: raw inputs for a supervisory p, embeddings for q
FEATURES_COL = "features_col"  # [m, d] column points; absent = same set as rows (i != j)
INDEX = "index"  # [n] long, dataset id of each row (views of one sample share it)
INDEX_COL = "index_col"  # [m] long, dataset id of each column
LABELS = "labels"  # [n] long class labels of the rows
LABELS_COL = "labels_col"  # [m] long class labels of the columns
NEIGHBORS = "neighbors"  # [N, k] long, precomputed kNN table in dataset-id space
GRAPH = "graph"  # [n, m] float, affinity / adjacency weights between rows and columns
EMBEDDING = "embedding"  # [n, e] float, a fixed side embedding g(x_i) of each row (X-Sample's p)
EMBEDDING_COL = "embedding_col"  # [m, e] float, the side embedding of each column
#: keys a distribution may read without listing them in ``requires`` (absent: columns = rows)
OPTIONAL_KEYS = (FEATURES_COL, INDEX_COL, LABELS_COL, EMBEDDING_COL)

Context = Mapping[str, Any]


@attrs.frozen
class Neighborhood:
    """Row-normalised log-probabilities ``[..., n, m]`` (``-inf`` off ``mask``) and the mask.

    Row ``i`` is p(.|i) over the columns; leading axes are independent batches. ``log_norm``
    ``[..., n]`` is the row normaliser of the kernel (early exaggeration needs it). A joint
    distribution over pairs (t-SNE's p_ij) is one row ``[1, n·n]`` (:meth:`joint_matrix`).
    """

    log_prob: Tensor
    mask: Tensor
    log_norm: Tensor | None = None

    def __attrs_post_init__(self) -> None:
        if self.log_prob.dim() < 2:
            raise ShapeError(
                "a Neighborhood's log_prob must be [..., n, m], got shape "
                f"{tuple(self.log_prob.shape)}"
            )
        if self.mask.shape != self.log_prob.shape:
            # leading axes may broadcast (one candidate set shared by every batch)
            broadcastable = self.mask.dim() <= self.log_prob.dim()
            if broadcastable and self.mask.shape[-2:] == self.log_prob.shape[-2:]:
                object.__setattr__(self, "mask", self.mask.expand_as(self.log_prob))
        if self.mask.shape != self.log_prob.shape or self.mask.dtype != torch.bool:
            raise ShapeError(
                "a Neighborhood's mask must be a bool tensor shaped like log_prob "
                f"{tuple(self.log_prob.shape)}, got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        if self.log_norm is not None and self.log_norm.shape != self.log_prob.shape[:-1]:
            raise ShapeError(
                f"a Neighborhood's log_norm must be {tuple(self.log_prob.shape[:-1])}, got "
                f"{tuple(self.log_norm.shape)}"
            )

    @property
    def shape(self) -> torch.Size:
        """``[..., n, m]``."""
        return self.log_prob.shape

    @property
    def prob(self) -> Tensor:
        """Probabilities ``[..., n, m]`` (exactly 0 outside the mask)."""
        return self.log_prob.exp().masked_fill(~self.mask, 0.0)

    @property
    def num_candidates(self) -> Tensor:
        """Number of allowed columns per row, ``[..., n]``."""
        return self.mask.sum(dim=-1)

    def joint_matrix(self) -> Tensor:
        """Probabilities of a joint ``[..., 1, n·n]`` neighbourhood as ``[..., n, n]`` (i, j)."""
        n = math.isqrt(self.shape[-1])
        if self.shape[-2] != 1 or n * n != self.shape[-1]:
            raise ShapeError(f"a joint neighbourhood is [1, n·n], got {tuple(self.shape)}")
        return self.prob.reshape(*self.shape[:-2], n, n)

    def detach(self) -> Neighborhood:
        """The same neighbourhood without gradient."""
        log_norm = None if self.log_norm is None else self.log_norm.detach()
        return Neighborhood(self.log_prob.detach(), self.mask, log_norm)

    def to(self, device: torch.device | str) -> Neighborhood:
        """The neighbourhood on ``device`` (all three tensors)."""
        log_norm = None if self.log_norm is None else self.log_norm.to(device)
        return Neighborhood(self.log_prob.to(device), self.mask.to(device), log_norm)

    @classmethod
    def from_logits(cls, logits: Tensor, mask: Tensor) -> Neighborhood:
        """Normalise unnormalised log-weights over the allowed columns of each row."""
        mask = mask.expand_as(logits)
        logits = logits.masked_fill(~mask, float("-inf"))
        log_norm = torch.logsumexp(logits, dim=-1)
        log_prob = (logits - log_norm.unsqueeze(-1)).masked_fill(~mask, float("-inf"))
        return cls(log_prob, mask, log_norm)

    @classmethod
    def from_weights(cls, weights: Tensor, mask: Tensor) -> Neighborhood:
        """Normalise non-negative weights over the allowed columns of each row."""
        mask = mask.expand_as(weights)
        weights = weights.masked_fill(~mask, 0.0)
        total = weights.sum(dim=-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("a row of neighbourhood weights sums to zero: no neighbour has mass")
        ratio = weights / total
        # log only where there is mass: log(0) would send 0·inf = NaN back through the gradient
        has_mass = ratio > 0
        log_prob = torch.log(torch.where(has_mass, ratio, torch.ones_like(ratio)))
        log_prob = log_prob.masked_fill(~has_mass, float("-inf"))
        return cls(log_prob.masked_fill(~mask, float("-inf")), mask)


class Component(abc.ABC):  # noqa: B024 - a marker base; its kinds add the methods
    """Anything a plugin contributes; ``example`` holds parameters of a small instance."""

    example: ClassVar[Mapping[str, Any]] = {}


def example(**params: Any) -> Any:
    """Decorator: the recipe parameters that build a small instance of a factory function."""

    def mark(factory: Any) -> Any:
        factory.example = dict(params)
        return factory

    return mark


class NeighborhoodDistribution(Component):
    """Maps a batch context to ``log p(j|i)`` (a :class:`Neighborhood` ``[..., n, m]``).

    ``requires``: context keys read (`OPTIONAL_KEYS` and keys tested first need no listing);
    ``role``: ``"supervisory"`` (no gradient), ``"learned"`` or ``"either"``; ``family``: its
    periodic-table row/column (thesis Fig. 8.1); ``batched``: ``FEATURES [B, n, d]`` gives
    ``[B, n, m]``, each batch equal to the call on its slice alone.
    """

    requires: ClassVar[tuple[str, ...]] = (FEATURES,)
    batched: ClassVar[bool] = False
    role: ClassVar[str] = "either"
    family: ClassVar[str] = ""

    @abc.abstractmethod
    def log_prob(self, ctx: Context) -> Neighborhood:
        """Return the row-normalised neighbourhood of every row point."""

    def __call__(self, ctx: Context) -> Neighborhood:
        missing = [k for k in self.requires if k not in ctx or ctx[k] is None]
        if missing:
            raise ContextError(
                f"{type(self).__name__} needs context key(s) {missing}; "
                f"the learner provided {sorted(k for k in ctx if ctx[k] is not None)}. "
                "Use a dataset that has them, or a distribution that does not need them."
            )
        return self.log_prob(ctx)


class Featurizer(nn.Module, Component):
    """Maps inputs to features: global ``[B, C]`` or dense ``[B, C, H, W]`` / ``[B, C, T]``.

    ``input_key``: the batch key consumed (``"x"``, ``"index"``, ``"audio"``); ``dim`` = C;
    ``dense``: outputs keep positional axes; ``patch_size``: input pixels (samples) per output
    cell; ``input_shape``: one item's shape for the smoke check (``None`` = any size).
    """

    input_key: str = "x"
    dim: int
    dense: bool = False
    patch_size: int = 1
    input_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)

    def setup(self, data: Any) -> None:  # noqa: B027 - optional hook, default is a no-op
        """Optionally look at the training data (read it with `fw.data.take`) before training."""


class Upsampler(nn.Module, Component):
    """Raises dense features ``[B, C, h, w]`` to ``[B, C, *size]`` guided by an RGB image.

    The guidance is ``[B, 3, H, W]`` in [0, 1]; ``size`` defaults to its ``(H, W)``. Gradient
    reaches the parameters and ``features``; an upsampler fitted per image sets ``per_image``
    and implements :meth:`fit`. The float32 output alone takes ``B·C·H·W·4`` bytes.
    """

    per_image: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(
        self, features: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        """Return features ``[B, C, *size]`` (the guidance's size when ``size`` is None)."""

    def fit(  # noqa: B027 - only per-image upsamplers implement it
        self, guidance: Tensor, featurize: Callable[[Tensor], Tensor]
    ) -> None:
        """Fit to one image ``[1, 3, H, W]`` given the featurizer to explain (per-image only)."""
        raise NotImplementedError(f"{type(self).__name__} is not fitted per image")

    @staticmethod
    def target_size(guidance: Tensor, size: tuple[int, int] | None) -> tuple[int, int]:
        """The output size: ``size``, or the guidance's when None."""
        check_map(guidance, "an upsampler's guidance image")
        if size is None:
            return int(guidance.shape[-2]), int(guidance.shape[-1])
        return int(size[0]), int(size[1])


class Downsampler(nn.Module, Component):
    """How a backbone pooled its features: ``[B, C, H, W] -> [B, C, *size]`` (thesis §5.5.1)."""

    @abc.abstractmethod
    def forward(
        self, features: Tensor, size: tuple[int, int], guidance: Tensor | None = None
    ) -> Tensor:
        """Return features pooled to ``[B, C, *size]``."""


class Aggregator(nn.Module, Component):
    """Pools the similarity of two dense featurizations into scores ``[B_a, B_b]`` (thesis §6.5).

    Inputs are ``[B, C, *S]`` tensors or `fw.dense.Dense`; `fw.lib.volumes.VolumeAggregator`
    implements both methods from a pooling of multi-head local similarity volumes.
    """

    heads: int = 1

    @abc.abstractmethod
    def forward(self, a: Dense | Tensor, b: Dense | Tensor) -> Tensor:
        """Scores ``[B_a, B_b]`` of every pair; gradient flows to both inputs."""

    @abc.abstractmethod
    def pair_volumes(self, a: Dense | Tensor, b: Dense | Tensor, pairs: Tensor) -> Tensor:
        """Local similarity volumes ``[P, K, *Sa, *Sb]`` of the pairs ``[P, 2]`` (for heatmaps)."""


class Game(abc.ABC):
    """A value ``v(S)`` for every coalition of ``n_players`` players: what explainers explain.

    ``soft_value`` takes membership weights ``[S, n]`` in [0, 1] and is differentiable.
    """

    n_players: int
    #: ``(query players, match players)`` when the players span two inputs (second order).
    split: tuple[int, int] | None = None
    #: coalitions evaluated per model call
    batch_size: int = 64

    @abc.abstractmethod
    def soft_value(self, weights: Tensor) -> Tensor:
        """Values ``[S]`` of soft coalitions ``[S, n]`` in [0, 1]; differentiable in the weights."""

    @torch.no_grad()
    def value(self, coalitions: Tensor) -> Tensor:
        """Values ``[S]`` of hard coalitions (bool ``[S, n]``), evaluated in batches."""
        if coalitions.dim() != 2 or coalitions.shape[1] != self.n_players:
            raise ShapeError(
                f"coalitions must be [S, {self.n_players}], got shape {tuple(coalitions.shape)}"
            )
        out = [
            self.soft_value(chunk.to(torch.get_default_dtype()))
            for chunk in coalitions.split(self.batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0)


class Explainer(Component):
    """Attributes a :class:`Game`'s value to its players (thesis Ch. 7).

    Order 1 gives ``[n]`` (Shapley-like), order 2 a symmetric ``[n, n]`` of pairwise
    interactions with zero diagonal; ``orders`` lists those supported. No gradient in the output.
    """

    orders: ClassVar[tuple[int, ...]] = (1,)

    @abc.abstractmethod
    def explain(self, game: Game, order: int = 1) -> Tensor:
        """Return attributions ``[n]`` (order 1) or interactions ``[n, n]`` (order 2)."""

    def example_game(self, order: int) -> Game | None:
        """A small game of the kind it explains, for the smoke check (None: any game)."""
        return None

    def check_order(self, order: int) -> None:
        """Raise a clear error when ``order`` is not supported."""
        if order not in self.orders:
            raise ShapeError(
                f"{type(self).__name__} explains orders {list(self.orders)}, not order {order}"
            )


class OptimizerFactory:
    """Type marker: the parameter takes an optimizer, built as ``partial(factory, **cfg)``."""


@attrs.define
class Optimization:
    """Optimizers and schedulers; the loop steps all of them once per step and checkpoints them."""

    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Any] = attrs.field(factory=list)

    @classmethod
    def of(cls, value: Optimization | torch.optim.Optimizer | Sequence[Any]) -> Optimization:
        """Normalise what ``configure_optimizers`` returned."""
        if isinstance(value, Optimization):
            return value
        if isinstance(value, torch.optim.Optimizer):
            return cls([value])
        if isinstance(value, Sequence) and all(isinstance(o, torch.optim.Optimizer) for o in value):
            return cls(list(value))
        raise TypeError(
            "configure_optimizers must return an optimizer, a list of optimizers or an "
            f"fw.api.Optimization, got {type(value).__name__}"
        )


class Learner(nn.Module, Component):
    """A trainable method: ``setup``, ``configure_optimizers``, ``training_step``, ``evaluate``.

    Batches are dicts of tensors with ``"index"`` and usually ``"x"`` and ``"label"``.
    Checkpoints hold ``state_dict`` and :meth:`extra_state`; ``headline`` names the metrics
    `fw run` prints in its summary line, most telling first.
    """

    #: ``None`` means the learner wants the whole dataset as one batch every step.
    batch_size: int | None = None
    #: a small dataset spec the registry walk trains it on (with its ``example`` params)
    example_data: ClassVar[Mapping[str, Any]] = {}
    headline: ClassVar[tuple[str, ...]] = ("hungarian_accuracy", "nmi", "knn_accuracy")

    def setup(self, data: Any) -> None:  # noqa: B027 - optional hook, default is a no-op
        """Look at the training data once before the first step."""

    @abc.abstractmethod
    def configure_optimizers(self) -> Optimization | torch.optim.Optimizer:
        """Return the optimizer(s) and schedulers over this learner's trainable parameters."""

    @abc.abstractmethod
    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """Return ``{"loss": scalar, ...}``; other entries are logged as metrics."""

    def forward(self, batch: dict[str, Tensor], step: int = 0) -> dict[str, Tensor]:
        return self.training_step(batch, step)

    @abc.abstractmethod
    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        """Return final metrics on ``data``; may save plots under ``run_dir``."""

    @abc.abstractmethod
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        """Return the learned representation of a batch."""

    def extra_state(self) -> dict[str, Any]:
        """State beyond ``state_dict`` worth checkpointing."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`extra_state` returned."""


class Augmentation(Component):
    """A batched random augmentation of images in [0, 1], drawing from torch's generator."""

    p: float = 1.0

    @abc.abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """Return the augmented batch."""


@attrs.frozen
class Command:
    """An ``fw`` sub-command: ``configure(parser)`` adds arguments, ``main(args)`` runs it."""

    help: str
    main: Callable[[Any], int | None]
    configure: Callable[[Any], None] = lambda parser: None
    description: str = ""
