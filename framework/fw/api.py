"""The abstract components of fw: every plugin implements one of these contracts.

Shapes used throughout:
- global features ``[B, C]``; dense image features ``[B, C, H, W]``; dense audio features
  ``[B, C, T]``;
- a neighbourhood is a pair ``(log_prob, mask)`` of shape ``[n, m]``: row ``i`` is the
  distribution ``p(.|i)`` (or ``q(.|i)``) over the ``m`` column points, normalised over the
  columns where ``mask`` is True. Disallowed columns hold ``-inf`` in ``log_prob``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import Tensor, nn

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
EMBEDDING = "embedding"  # [n, e] float, a fixed side embedding g(x_i) of each row (spec p11)
EMBEDDING_COL = "embedding_col"  # [m, e] float, the side embedding of each column

Context = Mapping[str, Any]

#: Periodic-table families (seed 000, Fig. 8.1): columns are supervisory p, rows learned q.
P_FAMILIES: tuple[str, ...] = (
    "Gaussian",
    "Student-T",
    "Identity",
    "Graph Kernel Weights",
    "Uniform over K-Neighbors",
    "Uniform over Positive Pairs",
    "Cross-Modal Pairs",
    "Uniform over Classes",
    "Data-Label Pairs",
)
Q_FAMILIES: tuple[str, ...] = (
    "Gaussian",
    "Gaussian σ→∞",
    "Gaussian σ→0",
    "Student-T",
    "Uniform on Clusters",
)
CLUSTER_FAMILY = "Uniform on Clusters"


@attrs.frozen
class Neighborhood:
    """Row-normalised log-probabilities ``[n, m]`` with the boolean candidate mask ``[n, m]``.

    ``log_norm`` (``[n]``, optional) is the log row normaliser of the kernel the rows came from
    (``log_prob = logits - log_norm``); early exaggeration needs it (see `fw.icon.icon_loss`).
    """

    log_prob: Tensor
    mask: Tensor
    log_norm: Tensor | None = None

    def __attrs_post_init__(self) -> None:
        if self.log_prob.dim() != 2:
            raise ShapeError(
                f"a Neighborhood's log_prob must be [n, m], got shape {tuple(self.log_prob.shape)}"
            )
        if self.mask.shape != self.log_prob.shape or self.mask.dtype != torch.bool:
            raise ShapeError(
                "a Neighborhood's mask must be a bool tensor shaped like log_prob "
                f"{tuple(self.log_prob.shape)}, got {self.mask.dtype} {tuple(self.mask.shape)}"
            )

    @property
    def prob(self) -> Tensor:
        """Probabilities ``[n, m]`` (exactly 0 outside the mask)."""
        return self.log_prob.exp().masked_fill(~self.mask, 0.0)

    @property
    def num_candidates(self) -> Tensor:
        """Number of allowed columns per row, ``[n]``."""
        return self.mask.sum(dim=1)

    @classmethod
    def from_logits(cls, logits: Tensor, mask: Tensor) -> Neighborhood:
        """Normalise unnormalised log-weights over the allowed columns of each row."""
        logits = logits.masked_fill(~mask, float("-inf"))
        log_norm = torch.logsumexp(logits, dim=1)
        log_prob = (logits - log_norm.unsqueeze(1)).masked_fill(~mask, float("-inf"))
        return cls(log_prob, mask, log_norm)

    @classmethod
    def from_weights(cls, weights: Tensor, mask: Tensor) -> Neighborhood:
        """Normalise non-negative weights over the allowed columns of each row."""
        weights = weights.masked_fill(~mask, 0.0)
        total = weights.sum(dim=1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("a row of neighbourhood weights sums to zero: no neighbour has mass")
        ratio = weights / total
        # log only where there is mass: log(0) would send 0·inf = NaN back through the gradient
        has_mass = ratio > 0
        log_prob = torch.log(torch.where(has_mass, ratio, torch.ones_like(ratio)))
        log_prob = log_prob.masked_fill(~has_mass, float("-inf"))
        return cls(log_prob.masked_fill(~mask, float("-inf")), mask)


class Component(abc.ABC):
    """Anything a plugin contributes; ``kind`` names the registry section it lives in."""

    kind: ClassVar[str]


class NeighborhoodDistribution(Component):
    """Maps a batch context to ``log p(j|i)`` (a :class:`Neighborhood` of shape ``[n, m]``).

    ``requires`` lists the context keys it reads (checked before each call). A supervisory
    distribution (``role = "supervisory"``) is computed without gradient; a learned one
    (``role = "learned"``) keeps the graph so the loss trains the mapper; ``"either"`` may serve
    as p or q. ``family`` is the periodic-table row/column it belongs to (seed 000, Fig. 8.1).
    """

    kind: ClassVar[str] = "distribution"
    requires: ClassVar[tuple[str, ...]] = (FEATURES,)
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
    embedding table). ``dim`` is ``C``; ``dense`` says whether outputs keep spatial axes;
    ``patch_size`` is the input pixels per output cell (1 for global featurizers). Gradient
    flows unless the featurizer is frozen (``requires_grad`` False on its parameters).
    """

    kind: ClassVar[str] = "featurizer"
    input_key: str = "x"
    dim: int
    dense: bool = False
    patch_size: int = 1

    def setup(self, data: Any) -> None:  # noqa: B027 - optional hook, default is a no-op
        """Optionally look at the training data once before training (e.g. PCA init)."""


class Upsampler(nn.Module, Component):
    """Raises dense features ``[B, C, h, w]`` to ``[B, C, H, W]`` guided by an image."""

    kind: ClassVar[str] = "upsampler"

    @abc.abstractmethod
    def forward(self, features: Tensor, image: Tensor) -> Tensor:
        """Return upsampled features with the image's spatial size."""


class Aggregator(nn.Module, Component):
    """Turns two dense feature maps into a similarity.

    ``forward(a [B, C, *Sa], b [B', C, *Sb]) -> [B, B']`` pools the local similarity volume
    (``[B, B', *Sa, *Sb]``, see :meth:`volume`) into one score per pair (e.g. max over b,
    mean over a, as in DenseAV).
    """

    kind: ClassVar[str] = "aggregator"

    @abc.abstractmethod
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Return pairwise similarities ``[B, B']``."""

    @staticmethod
    def volume(a: Tensor, b: Tensor) -> Tensor:
        """Local inner products ``[B, B', *Sa, *Sb]`` of every position of a with every of b."""
        fa = a.flatten(2)  # [B, C, Na]
        fb = b.flatten(2)  # [B', C, Nb]
        vol = torch.einsum("bcn,kcm->bknm", fa, fb)
        return vol.reshape(a.shape[0], b.shape[0], *a.shape[2:], *b.shape[2:])


class Explainer(Component):
    """Attributes a model's output (a similarity or a score) to input features.

    ``explain(model, inputs) -> attributions`` with one attribution tensor per input, shaped
    like that input (or like its feature grid). Explanations carry no gradient.
    """

    kind: ClassVar[str] = "explainer"

    @abc.abstractmethod
    def explain(self, model: Any, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Return attributions for each input."""


class Learner(nn.Module, Component):
    """A trainable method: everything `fw.train` needs to run, checkpoint and evaluate it.

    Life cycle: the recipe builds it from config; ``setup(data)`` sees the training data once
    (calibration, initialisation); the loop calls ``configure_optimizers()`` once and then
    ``training_step(batch, step)`` through ``forward`` so distributed strategies see a forward
    call; ``evaluate(data, run_dir)`` returns final metrics (and may write plots);
    ``infer(batch)`` returns the learned representation. Checkpoint state is the module's
    ``state_dict`` plus :meth:`extra_state`.

    A batch is a dict of tensors with at least ``"index"`` (dataset ids) and usually ``"x"``
    (inputs) and ``"label"``.
    """

    kind: ClassVar[str] = "learner"

    #: ``None`` means the learner wants the whole dataset as one batch every step.
    batch_size: int | None = None

    def setup(self, data: Any) -> None:  # noqa: B027 - optional hook, default is a no-op
        """Look at the training data once before the first step."""

    @abc.abstractmethod
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Return the optimizer over this learner's trainable parameters."""

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


#: Component kinds, in the order `fw plugins` lists them; the five of the design come first.
COMPONENT_KINDS: tuple[str, ...] = (
    "distribution",
    "featurizer",
    "upsampler",
    "aggregator",
    "explainer",
    "learner",
    "dataset",
    "optimizer",
)
