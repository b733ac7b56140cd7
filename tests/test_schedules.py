"""Learning-rate schedules against their closed forms."""

from __future__ import annotations

import math

import pytest

from fw.lib.schedules import warmup_cosine


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (4, 20), (5, 5)])
def test_warmup_then_cosine_to_zero(warmup, total):
    f = warmup_cosine(warmup, total)
    for step in range(warmup):
        assert f(step) == pytest.approx((step + 1) / warmup)
    span = max(total - warmup, 1)
    for step in range(warmup, total + 5):
        t = min(step - warmup, span) / span
        assert f(step) == pytest.approx(0.5 * (1 + math.cos(math.pi * t)))
    assert f(total + 3) == pytest.approx(0.0)
    flat = warmup_cosine(warmup, total, cosine=False)
    assert [flat(s) for s in range(warmup, total + 2)] == [1.0] * (total + 2 - warmup)
