"""The abstract components of fw: every plugin implements one of these contracts.

Shapes used throughout:
- global features ``[B, C]``; dense image features ``[B, C, H, W]``; dense audio features
  ``[B, C, T]`` with a validity mask ``[B, T]`` for padding (`fw.dense`);
- a neighbourhood is a pair ``(log_prob, mask)`` of shape ``[..., n, m]``: row ``i`` is the
  distribution ``p(.|i)`` (or ``q(.|i)``) over the ``m`` column points, normalised over the
  columns where ``mask`` is True. Disallowed columns hold ``-inf`` in ``log_prob``. Leading
  axes are independent batches (one neighbourhood per image, say);
- an explanation is ``[n]`` (one value per player) or ``[n, n]`` (pairwise interactions) of a
  game on coalitions (`fw.games`).

The kinds of component, and the hook that registers each, are listed once in `fw.hookspecs`.
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
from fw.games import Game

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
    """Row-normalised log-probabilities ``[..., n, m]`` with the boolean candidate mask.

    Leading axes are independent batches of neighbourhoods (e.g. one per image, over sampled
    positions); everything (`fw.lib.icon.icon_loss`, `debias`, masks, reductions) works over the
    last axis, and a loss averages over all rows of all batches. ``mask`` has the shape of
    ``log_prob`` (or broadcasts to it along leading axes). ``log_norm`` (``[..., n]``,
    optional) is the log row normaliser of the kernel the rows came from
    (``log_prob = logits - log_norm``); early exaggeration needs it (see `fw.lib.icon.icon_loss`).
    A learned q carries gradient in ``log_prob`` (and ``log_norm``); a supervisory p does not.
    A joint distribution over ordered pairs (t-SNE's ``p_ij``, van der Maaten & Hinton 2008) is
    one row ``[1, n·n]``, column ``i·n + j`` holding pair (i, j); :meth:`joint_matrix` gives
    its ``[n, n]`` matrix. p and q must both be joint or both per row (their shapes differ).

    Example::

        logits = -torch.cdist(z, z) ** 2                       # [B, n, n]
        eye = torch.eye(n, dtype=torch.bool)
        q = Neighborhood.from_logits(logits, ~eye.expand(B, n, n))
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
    """Anything a plugin contributes (its kind is the hook that registers it, `fw.hookspecs`).

    ``example`` holds recipe parameters that build a small, fast instance for the registry
    walk (tests/test_components.py); empty means the defaults do. Factories that are plain
    functions carry the same attribute through :func:`example`.
    """

    example: ClassVar[Mapping[str, Any]] = {}


def example(**params: Any) -> Any:
    """Decorator: the recipe parameters that build a small instance of a factory function."""

    def mark(factory: Any) -> Any:
        factory.example = dict(params)
        return factory

    return mark


class NeighborhoodDistribution(Component):
    """Maps a batch context to ``log p(j|i)`` (a :class:`Neighborhood` ``[..., n, m]``).

    ``requires`` lists the context keys it reads (checked before each call). A supervisory
    distribution (``role = "supervisory"``) is computed without gradient; a learned one
    (``role = "learned"``) keeps the graph so the loss trains the mapper; ``"either"`` may serve
    as p or q. ``family`` is the periodic-table row/column it belongs to (thesis Fig. 8.1).
    It may read `OPTIONAL_KEYS` and keys it first tests (``key in ctx``, ``ctx.get``) without
    listing them. ``batched = True`` claims leading batch axes: ``FEATURES [B, n, d]`` gives
    ``[B, n, m]``, batch ``b`` equal to the call on ``FEATURES[b]`` alone (one neighbourhood per
    image, over its sampled positions); otherwise ``FEATURES [n, ...]`` are n points.
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

    ``input_key`` is the batch key it consumes (``"x"`` for images/vectors, ``"index"`` for an
    embedding table, ``"audio"`` for waveforms). ``dim`` is ``C``; ``dense`` says whether
    outputs keep positional axes; ``patch_size`` is the input pixels (or samples) per output
    cell (1 for global featurizers). ``input_shape`` is the shape of one input item (without
    the batch axis) that the registry walk feeds it; ``None`` entries take any size. Gradient
    flows unless the featurizer is frozen (``requires_grad`` False on its parameters). Padded
    sequences: a featurizer of ``[B, 1, T]`` audio with a mask ``[B, T]`` returns
    :class:`fw.dense.Dense` features with the mask resampled to its output rate
    (:meth:`forward_dense`).
    """

    input_key: str = "x"
    dim: int
    dense: bool = False
    patch_size: int = 1
    input_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)

    def setup(self, data: Any) -> None:  # noqa: B027 - optional hook, default is a no-op
        """Optionally look at the training data once before training (e.g. PCA init).

        Read inputs with `fw.data.take(data, key)`, which works for in-memory and streamed
        datasets alike.
        """

    def forward_dense(self, x: Tensor, mask: Tensor | None = None) -> Dense:
        """Dense features with their validity mask (nearest-resampled to the output grid)."""
        out = self(x)
        if mask is None:
            return Dense(out)
        size = out.shape[2:]
        m = torch.nn.functional.interpolate(mask[:, None].float(), size=size, mode="nearest")
        return Dense(out, m[:, 0] > 0.5)


class Upsampler(nn.Module, Component):
    """Raises dense features ``[B, C, h, w]`` to ``[B, C, *size]`` guided by an image.

    ``forward(features, guidance [B, 3, H, W], size=None)``; ``size`` defaults to the
    guidance's ``(H, W)``. The guidance is the RGB image in [0, 1], unnormalised (one that wants
    standardised colours standardises it itself). Gradient flows to the upsampler's parameters
    and to ``features``, except in an upsampler fitted per image (a network fitted to one
    image): it sets ``per_image = True``, predicts its output from the image and implements
    :meth:`fit`, which the caller runs on each image before ``forward``. Recipes that train an
    upsampler over a corpus refuse such an upsampler; featurizers wrapped with it fit it per
    image at inference. Memory: the float32 output alone takes ``B·C·H·W·4`` bytes (batch 4 of
    384 channels at 224²: 308 MB), and as much again for its gradient in training.

    Example::

        up = registry.get("upsampler", name).factory()
        hr = up(lr_feats, image)                  # [B, C, H, W]
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
    """Models how a backbone pooled its features: ``[B, C, H, W]`` -> ``[B, C, *size]``.

    Upsampler training learns it (σ↓, Hamilton, PhD thesis, §5.5.1) so that high-resolution
    features, pooled again, reproduce the backbone's low-resolution ones. ``guidance`` (the
    image) is optional.
    """

    @abc.abstractmethod
    def forward(
        self, features: Tensor, size: tuple[int, int], guidance: Tensor | None = None
    ) -> Tensor:
        """Return features pooled to ``[B, C, *size]``."""


class Aggregator(nn.Module, Component):
    """Pools the local similarity volume of two dense featurizations into one score per pair.

    ``forward(a, b) -> [B_a, B_b]`` for ``a`` ``[B_a, C, *Sa]`` and ``b`` ``[B_b, C, *Sb]`` (each a
    tensor or a :class:`fw.dense.Dense` with a validity mask for padding). Channels split into
    ``heads`` K equal groups (multi-head similarity, Hamilton, PhD thesis, §6.5); the local
    volume of a pair is ``vol[k, n, m] = <a[k, :, n], b[k, :, m]>`` (Eq. 6.1). A subclass
    implements only :meth:`pool`, which reduces volumes of a chunk of pairs; the base class
    never builds the full ``[B_a, B_b, K, Na, Nb]`` tensor: it walks blocks of rows of ``a`` so
    that at most ``max_elements`` volume entries exist at once. :meth:`pair_volumes` returns
    the volumes of chosen pairs (for heatmaps). Gradient flows to both inputs.

    Example::

        agg = MaxMean(heads=2)
        scores = agg(Dense(audio, audio_mask), Dense(image))    # [B, B]
        heat = agg.pair_volumes(Dense(audio, audio_mask), Dense(image), torch.tensor([[0, 0]]))
    """

    heads: int = 1
    max_elements: int = 1 << 25

    @abc.abstractmethod
    def pool(self, volume: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        """Scores ``[P]`` from volumes ``[P, K, Na, Nb]`` and masks ``[P, Na]``, ``[P, Nb]``.

        Masked positions hold arbitrary values in ``volume``; ``pool`` must ignore them.
        """

    def forward(self, a: Dense | Tensor, b: Dense | Tensor) -> Tensor:
        a, b = Dense.of(a), Dense.of(b)
        self._check(a, b)
        fa, ma = a.heads(self.heads), a.flat()[1]  # [Ba, K, c, Na], [Ba, Na]
        fb, mb = b.heads(self.heads), b.flat()[1]
        ba, bb = fa.shape[0], fb.shape[0]
        per_row = bb * self.heads * fa.shape[-1] * fb.shape[-1]
        block = max(1, self.max_elements // max(per_row, 1))
        rows = []
        for start in range(0, ba, block):
            fa_blk = fa[start : start + block]
            vol = torch.einsum("akcn,bkcm->abknm", fa_blk, fb)
            n_blk = vol.shape[0]
            scores = self.pool(
                vol.reshape(n_blk * bb, *vol.shape[2:]),
                ma[start : start + block].repeat_interleave(bb, dim=0),
                mb.repeat(n_blk, 1),
            )
            rows.append(scores.reshape(n_blk, bb))
        return torch.cat(rows)

    def pair_volumes(self, a: Dense | Tensor, b: Dense | Tensor, pairs: Tensor) -> Tensor:
        """Local volumes ``[P, K, *Sa, *Sb]`` of the pairs ``[P, 2]`` (rows: index into a, b)."""
        a, b = Dense.of(a), Dense.of(b)
        self._check(a, b)
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ShapeError(f"pairs must be [P, 2] indices, got shape {tuple(pairs.shape)}")
        fa = a.heads(self.heads)[pairs[:, 0]]
        fb = b.heads(self.heads)[pairs[:, 1]]
        vol = torch.einsum("pkcn,pkcm->pknm", fa, fb)
        return vol.reshape(pairs.shape[0], self.heads, *a.spatial, *b.spatial)

    def _check(self, a: Dense, b: Dense) -> None:
        if a.channels != b.channels:
            raise ShapeError(
                f"{type(self).__name__}: both sides need the same channels, got {a.channels} "
                f"and {b.channels}"
            )


class Explainer(Component):
    """Attributes a game's value to its players (thesis Ch. 7): first or second order.

    ``explain(game, order=1)`` returns ``[n]`` (one value per player; Shapley-like) and
    ``explain(game, order=2)`` a symmetric ``[n, n]`` matrix of pairwise interactions
    (Shapley–Taylor-like; zero diagonal). A game of a similarity model d(x, y) is a
    :class:`fw.games.SimilarityGame` (v₁ over the match's parts, v₂ over both inputs' parts;
    ``game.cross(phi)`` picks the query × match block). ``orders`` lists what an explainer
    supports. Explainers may call ``game.soft_value`` for gradients; their output carries none.

    Example::

        game = SimilarityGame(d, x, y, grid_players((7, 7)), background_y=blurred)
        phi = registry.get("explainer", name).factory().explain(game)   # [49]
    """

    orders: ClassVar[tuple[int, ...]] = (1,)

    @abc.abstractmethod
    def explain(self, game: Game, order: int = 1) -> Tensor:
        """Return attributions ``[n]`` (order 1) or interactions ``[n, n]`` (order 2)."""

    def check_order(self, order: int) -> None:
        """Raise a clear error when ``order`` is not supported."""
        if order not in self.orders:
            raise ShapeError(
                f"{type(self).__name__} explains orders {list(self.orders)}, not order {order}"
            )


class OptimizerFactory:
    """Type marker: a parameter annotated with this takes an optimizer component.

    The recipe builds it into ``partial(factory, **cfg)``; call it with the parameters.
    """


@attrs.define
class Optimization:
    """What a learner trains with: optimizers and learning-rate schedulers.

    The loop zeroes every optimizer, back-propagates the step's loss once, steps every
    optimizer, then every scheduler (once per training step), and checkpoints all their states.
    Parameter groups with their own rates live inside an optimizer as usual.
    """

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
    """A trainable method: everything `fw.train` needs to run, checkpoint and evaluate it.

    Life cycle: the recipe builds it from config; ``setup(data)`` sees the training data once
    (calibration, initialisation; read inputs with `fw.data.take`, never ``data.x``); the loop
    calls ``configure_optimizers()`` once (an optimizer, a list, or an :class:`Optimization`
    with schedulers — the learner owns them, the loop steps them) and then
    ``training_step(batch, step)`` through ``forward`` so distributed strategies see a forward
    call; ``evaluate(data, run_dir)`` returns final metrics (and may write plots);
    ``infer(batch)`` returns the learned representation. Checkpoint state is the module's
    ``state_dict`` plus :meth:`extra_state`.

    A batch is a dict of tensors with at least ``"index"`` (dataset ids) and usually ``"x"``
    (inputs) and ``"label"``; dense inputs follow `fw.dense` (``"audio"`` + ``"audio_mask"``).
    ``headline`` names the metrics `fw run` prints in its one-line summary, most telling first.
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
    """A batched random augmentation ``[B, C, H, W] -> [B, C', H', W']`` of images in [0, 1].

    Random parameters are drawn per image from torch's global generator (seeded and
    checkpointed by the loop). ``p`` is the per-image probability that it applies.
    """

    p: float = 1.0

    @abc.abstractmethod
    def __call__(self, x: Tensor) -> Tensor:
        """Return the augmented batch."""


@attrs.frozen
class Command:
    """An ``fw`` sub-command a plugin contributes through the ``fw_commands`` hook.

    ``configure(parser)`` adds the command's arguments to its `argparse` sub-parser;
    ``main(args)`` runs it and returns the exit status (``None`` means 0). The host adds
    ``--plugin`` and ``--debug`` to every command and turns `fw.errors.FwError` into exit 2.
    """

    help: str
    main: Callable[[Any], int | None]
    configure: Callable[[Any], None] = lambda parser: None
    description: str = ""
