"""The registry walk: every registered component of every kind passes its kind's smoke check."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from fw import api, hookimpl
from fw.hookspecs import KINDS
from fw.registry import get_registry
from fw.smoke import SmokeError, check

WALKED: Counter[str] = Counter()


def _entries():
    registry = get_registry()
    return [
        pytest.param(
            kind.name,
            entry.name,
            id=f"{kind.name}:{entry.name}",
            # big random-weight backbones declare themselves slow to build
            marks=[pytest.mark.slow] if getattr(entry.factory, "smoke_slow", False) else [],
        )
        for kind in KINDS
        for entry in registry.entries(kind.name)
    ]


@pytest.mark.parametrize(("kind", "name"), _entries())
def test_component_smoke(kind, name, registry):
    outcome = check(registry.get(kind, name), registry)
    WALKED[kind] += 1
    assert outcome in ("ran", "trained", "stepped", "built", "error path")


def test_walk_covers_every_kind(registry, capsys):
    counts = {kind.name: len(registry.entries(kind.name)) for kind in KINDS}
    with capsys.disabled():
        print("\nregistry walk, components per kind:", counts)
    assert set(counts) == {k.name for k in KINDS}
    assert sum(counts.values()) > 40


class _NaNDistribution(api.NeighborhoodDistribution):
    """A deliberately broken q: NaN log-probabilities."""

    def log_prob(self, ctx):
        n = ctx[api.FEATURES].shape[0]
        return api.Neighborhood(torch.full((n, n), float("nan")), torch.ones(n, n, dtype=bool))


class _WrongDim(torch.nn.Module):
    pass


class _LyingFeaturizer(api.Featurizer):
    """Declares dim 8 but returns 3 channels."""

    dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3 * 32 * 32, 3)

    def forward(self, x):
        return self.lin(x.flatten(1))


class _BrokenPlugin:
    @hookimpl
    def fw_distributions(self):
        return {"broken_nan": _NaNDistribution}

    @hookimpl
    def fw_featurizers(self):
        return {"broken_dim": _LyingFeaturizer}


@pytest.mark.parametrize(
    ("kind", "name"), [("distribution", "broken_nan"), ("featurizer", "broken_dim")]
)
def test_walk_catches_a_broken_component(kind, name):
    registry = get_registry(modules=[_BrokenPlugin()])
    with pytest.raises(SmokeError, match=name):
        check(registry.get(kind, name), registry)
