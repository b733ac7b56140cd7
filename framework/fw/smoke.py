"""Smoke checks: build a registered component small and run it on random inputs of its kind."""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fw import api, hookspecs
from fw.dense import Dense, lengths_to_mask
from fw.errors import DataError, FwError
from fw.recipe import build, recipe_from_dict
from fw.registry import Entry, Registry, get_registry


class SmokeError(AssertionError):
    """A registered component broke its kind's contract."""


def _fail(entry: Entry, message: str) -> SmokeError:
    return SmokeError(f"{entry.kind} '{entry.name}' (plugin {entry.plugin}): {message}")


def example_params(factory: Callable[..., Any]) -> dict[str, Any]:
    """The recipe parameters a factory declares for a small instance (``example``)."""
    own = getattr(factory, "__dict__", {})  # declared on this factory, not inherited
    return dict(own.get("example") or {})


def _finite(entry: Entry, t: Tensor, what: str) -> None:
    if not torch.is_floating_point(t):
        raise _fail(entry, f"{what} must be floating point, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise _fail(entry, f"{what} has NaN or infinite values")


def _grad_arrives(
    entry: Entry, module: nn.Module, out: Tensor, inputs: Tensor | None = None
) -> None:
    """A finite gradient reaches the trainable parameters (and ``inputs``, when given)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if out.requires_grad and (params or inputs is not None):
        out.float().square().mean().backward()
        if params and all(p.grad is None for p in params):
            raise _fail(entry, "no gradient reaches any of its trainable parameters")
    for t in [*params, *([] if inputs is None else [inputs])]:
        if t.grad is not None and not bool(torch.isfinite(t.grad).all()):
            raise _fail(entry, "a gradient to its parameters or input features is not finite")
    if inputs is not None and inputs.grad is None:
        raise _fail(entry, "no gradient reaches its input features (detached or recomputed?)")


def smoke_context(n: int = 12, d: int = 4, generator: torch.Generator | None = None) -> dict:
    """A distribution context with every standard key filled with small random values."""
    g = generator or torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    return {
        api.FEATURES: torch.randn(n, d, generator=g, requires_grad=True),
        api.INDEX: torch.arange(n) // 2,  # pairs of views share an id
        api.LABELS: labels,
        api.NEIGHBORS: torch.stack([(torch.arange(n // 2) + k) % (n // 2) for k in (1, 2, 3)], 1),
        api.GRAPH: torch.rand(n, n, generator=g),
        api.EMBEDDING: torch.randn(n, 5, generator=g),
        "modality": torch.arange(n) % 2,
    }


class _Reads(dict):
    """A context that records the keys read by ``ctx[key]`` without ``key in ctx`` or ``get``."""

    def __init__(self, data: dict) -> None:
        super().__init__(data)
        self.read: set[str] = set()
        self.checked: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.checked.add(key)  # type: ignore[arg-type]
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.checked.add(key)
        return super().get(key, default)


def _normalised(entry: Entry, obj: api.NeighborhoodDistribution, nb: api.Neighborhood) -> None:
    if bool(torch.isnan(nb.log_prob).any()):
        raise _fail(entry, "log_prob has NaN values")
    normalized = getattr(obj, "normalized", True)  # pseudo log-probabilities say so (σ→∞)
    if normalized and bool((nb.log_prob > 1e-5).any()):
        raise _fail(entry, "log_prob has values above 0")
    mass = nb.prob.sum(dim=-1) if normalized else torch.ones(1)
    has = mass > 0
    if not bool(torch.allclose(mass[has], torch.ones_like(mass[has]), atol=1e-4)):
        raise _fail(entry, "rows do not sum to 1 over their candidates")


def _batched(entry: Entry, obj: api.NeighborhoodDistribution, ctx: dict, shape: tuple) -> None:
    """``batched``: ``FEATURES [2, n, d]`` gives ``[2, n, m]``, each batch its slice's alone."""
    x = ctx[api.FEATURES].detach()
    x = torch.stack([x, torch.randn(x.shape, generator=torch.Generator().manual_seed(1))])
    with torch.no_grad():
        nb = obj({**ctx, api.FEATURES: x})
        if tuple(nb.shape) != (2, *shape):
            raise _fail(entry, f"maps features [2, 12, 4] to {tuple(nb.shape)}, not [2, *{shape}]")
        _normalised(entry, obj, nb)
        for b in range(2):
            if not torch.allclose(nb.log_prob[b], obj({**ctx, api.FEATURES: x[b]}).log_prob):
                raise _fail(entry, f"batch {b} of features [2, n, d] differs from that slice alone")


def _distribution(entry: Entry, obj: api.NeighborhoodDistribution) -> None:
    ctx = _Reads(smoke_context())
    nb = obj(ctx)
    extra = sorted(ctx.read - ctx.checked - set(obj.requires) - set(api.OPTIONAL_KEYS))
    if extra:  # only `requires` is checked before the call: an unlisted key may be absent
        raise _fail(entry, f"reads context key(s) {extra} unchecked: add it to `requires`")
    if nb.log_prob.shape[-1] < 1 or nb.log_prob.dim() < 2:
        raise _fail(entry, f"returned log_prob of shape {tuple(nb.log_prob.shape)}")
    if nb.log_prob.shape[-2] != 12:
        raise _fail(entry, f"has {nb.log_prob.shape[-2]} rows for a context of 12 points")
    _normalised(entry, obj, nb)
    if nb.log_prob.requires_grad:
        nb.prob.square().sum().backward()
        grad = ctx[api.FEATURES].grad
        if grad is not None and not bool(torch.isfinite(grad).all()):
            raise _fail(entry, "the gradient to the features is not finite")
    if obj.batched:
        _batched(entry, obj, dict(ctx), tuple(nb.shape))


def _featurizer(entry: Entry, obj: api.Featurizer) -> None:
    from fw.data import ArrayDataset

    shape = tuple(s or 8 for s in obj.input_shape)
    inputs = torch.rand(16, *shape)
    tensors = {"x": inputs, "label": torch.arange(16) % 3}
    if obj.input_key != "index":  # ids come from the dataset itself
        tensors[obj.input_key] = inputs
    data = ArrayDataset(tensors)
    obj.setup(data)
    x = torch.arange(4) if obj.input_key == "index" else torch.rand(2, *shape)
    out = obj(x)
    if isinstance(out, Dense):
        out = out.features
    if out.shape[0] != x.shape[0]:
        raise _fail(entry, f"maps a batch of {x.shape[0]} to {out.shape[0]} outputs")
    expect_dims = (3, 4) if obj.dense else (2,)
    if out.dim() not in expect_dims or out.shape[1] != obj.dim:
        raise _fail(
            entry,
            f"declares dim={obj.dim}, dense={obj.dense} but returned {tuple(out.shape)}",
        )
    _finite(entry, out, "its output")
    _grad_arrives(entry, obj, out)


def _toy_featurize(image: Tensor) -> Tensor:
    """A fixed dense featurizer for per-image upsamplers: 8 channels at 1/4 resolution."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, image.shape[1], 4, 4, generator=g)
    return torch.nn.functional.conv2d(image, weight, stride=4)


def _upsampler(entry: Entry, obj: api.Upsampler) -> None:
    guidance = torch.rand(2, 3, 16, 16)
    feats = _toy_featurize(guidance).requires_grad_(True)
    if obj.per_image:
        obj.fit(guidance[:1], _toy_featurize)
        guidance, feats = guidance[:1], feats[:1]
    out = obj(feats, guidance, (12, 12))
    if tuple(out.shape) != (feats.shape[0], 8, 12, 12):
        raise _fail(entry, f"asked for [B, 8, 12, 12], returned {tuple(out.shape)}")
    _finite(entry, out, "its output")
    # a per-image upsampler predicts its features from the image (Upsampler docstring)
    _grad_arrives(entry, obj, out, None if obj.per_image else feats)


def _downsampler(entry: Entry, obj: api.Downsampler) -> None:
    feats = torch.randn(2, 8, 16, 16, requires_grad=True)
    out = obj(feats, (4, 4), torch.rand(2, 3, 16, 16))
    if tuple(out.shape) != (2, 8, 4, 4):
        raise _fail(entry, f"asked for [2, 8, 4, 4], returned {tuple(out.shape)}")
    _finite(entry, out, "its output")
    _grad_arrives(entry, obj, out)


def _aggregator(entry: Entry, obj: api.Aggregator) -> None:
    channels = 4 * obj.heads
    audio = Dense(
        torch.randn(3, channels, 6, requires_grad=True),
        lengths_to_mask(torch.tensor([6, 4, 1]), 6),
    )
    image = Dense(torch.randn(2, channels, 3, 3, requires_grad=True))
    scores = obj(audio, image)
    if tuple(scores.shape) != (3, 2):
        raise _fail(entry, f"scored 3 × 2 pairs as {tuple(scores.shape)}")
    _finite(entry, scores, "its scores")
    # padding must not matter: changing padded positions leaves the scores alone
    changed = audio.features.detach().clone()
    changed[2, :, 1:] = 1e3
    again = obj(Dense(changed, audio.mask), image)
    if not torch.allclose(again[2], scores[2].detach(), atol=1e-5):
        raise _fail(entry, "its scores change when padded positions change")
    scores.sum().backward()
    if audio.features.grad is None or image.features.grad is None:
        raise _fail(entry, "no gradient reaches the features")


class _PairGame(api.Game):
    """v(S) = (a·w_q)(b·w_r) over 4 query and 4 match players (order 1: the match's only)."""

    def __init__(self, order: int) -> None:
        g = torch.Generator().manual_seed(2)
        self.a, self.b = torch.randn(4, generator=g), torch.randn(4, generator=g)
        self.n_players, self.split = (4, None) if order == 1 else (8, (4, 4))

    def soft_value(self, weights: Tensor) -> Tensor:
        query = weights[:, :4] @ self.a if self.split else self.a.sum()
        return query * (weights[:, -4:] @ self.b)


def _explainer(entry: Entry, obj: api.Explainer) -> None:
    for order in obj.orders:
        game = obj.example_game(order) or _PairGame(order)
        out = obj.explain(game, order=order)
        expected = (game.n_players,) * order
        if tuple(out.shape) != expected:
            raise _fail(entry, f"order {order} returned {tuple(out.shape)}, expected {expected}")
        _finite(entry, out, f"its order-{order} explanation")


def _learner(entry: Entry, obj: api.Learner, registry: Registry) -> None:
    from fw.train import train

    spec = {"name": entry.name, **example_params(entry.factory)}
    data = dict(getattr(entry.factory, "example_data", None) or {})
    if not data:
        raise _fail(entry, "declares no example_data (a small dataset spec to train it on)")
    recipe = recipe_from_dict(
        {
            "data": data,
            "learner": spec,
            "trainer": {"max_steps": 2, "log_every": 1, "progress": False},
        },
        registry,
    )
    with tempfile.TemporaryDirectory() as tmp:
        final = train(recipe, Path(tmp) / "run", registry=registry)
    if "final_loss" in final and not torch.isfinite(torch.tensor(final["final_loss"])):
        raise _fail(entry, f"trained to a non-finite loss {final['final_loss']}")


def _dataset(entry: Entry, registry: Registry) -> str:
    params = example_params(entry.factory)
    sig = inspect.signature(entry.factory)
    with tempfile.TemporaryDirectory() as tmp:
        missing = [n for n in ("root", "path", "recipe") if n in sig.parameters]
        for name in missing:
            params.setdefault(name, str(Path(tmp) / "missing"))
        try:
            data = build("dataset", {"name": entry.name, **params}, registry)
            _is_kind(entry, data)
        except FwError as err:
            if not missing and not isinstance(err, DataError):
                raise
            return "error path"  # no files here: a clear error naming them is the contract
        if len(data) < 1:
            raise _fail(entry, "is empty")
        item = data[0]
        if not isinstance(item, dict) or "x" not in item and "index" not in item:
            raise _fail(entry, f"items must be dicts with 'x' or 'index', got {type(item)}")
    return "built"


def _augmentation(entry: Entry, obj: api.Augmentation) -> None:
    x = torch.rand(2, 3, 16, 16)
    out = obj(x)
    if out.dim() != 4 or out.shape[0] != 2:
        raise _fail(entry, f"mapped [2, 3, 16, 16] to {tuple(out.shape)}")
    _finite(entry, out, "its output")


def _optimizer(entry: Entry) -> None:
    weight = nn.Parameter(torch.ones(3))
    opt = entry.factory([weight], **example_params(entry.factory))
    (weight.square().sum()).backward()
    opt.step()
    if not bool(torch.isfinite(weight).all()) or torch.equal(weight.detach(), torch.ones(3)):
        raise _fail(entry, "one step on a quadratic did not move the parameters finitely")


def _is_kind(entry: Entry, obj: Any) -> None:
    base = {k.name: k.base for k in hookspecs.KINDS}[entry.kind]
    if not isinstance(obj, base):
        raise _fail(
            entry,
            f"built a {type(obj).__name__}, which is not a {base.__module__}.{base.__qualname__} "
            "subclass: subclass it",
        )


def check(component: str | Entry, registry: Registry | None = None) -> str:
    """Smoke-check one registered component (its name, or its `Entry`); return what was checked."""
    registry = registry or get_registry()
    if isinstance(component, str):
        hits = [e for e in select(registry, [component]) if e.name == component]
        if len(hits) != 1:
            kinds = [e.kind for e in hits] or "none: it is a plugin, check each of select()"
            raise FwError(f"'{component}' must name one component; its kinds: {kinds}")
        component = hits[0]
    entry, kind = component, component.kind
    if kind == "optimizer":
        _optimizer(entry)
        return "stepped"
    if kind == "dataset":
        return _dataset(entry, registry)
    try:
        obj = build(kind, {"name": entry.name, **example_params(entry.factory)}, registry)
        _is_kind(entry, obj)
        if kind == "learner":
            _learner(entry, obj, registry)
            return "trained"
    except DataError:
        return "error path"  # weights or data that are not on this machine: a clear DataError
    checks: dict[str, Callable[[Entry, Any], None]] = {
        "distribution": _distribution,
        "featurizer": _featurizer,
        "upsampler": _upsampler,
        "downsampler": _downsampler,
        "aggregator": _aggregator,
        "explainer": _explainer,
        "augmentation": _augmentation,
    }
    if kind not in checks:
        raise SmokeError(f"no smoke check for component kind '{kind}'")
    checks[kind](entry, obj)
    return "ran"


def select(registry: Registry, targets: list[str]) -> list[Entry]:
    """The registered components a plugin name or a component name refers to, in kind order."""
    found: list[Entry] = []
    for target in targets:
        hits = [
            e
            for kind in registry.kinds()
            for e in registry.entries(kind)
            if target in (e.plugin, e.name)
        ]
        if not hits:
            plugins = sorted({e.plugin for k in registry.kinds() for e in registry.entries(k)})
            raise FwError(
                f"'{target}' names no loaded plugin and no registered component. Plugins: "
                f"{', '.join(plugins)} (`fw plugins` lists every component)."
            )
        found += [e for e in hits if e not in found]
    return found
