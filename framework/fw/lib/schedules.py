"""Learning-rate schedules, as factors of the base rate for `torch.optim.lr_scheduler.LambdaLR`."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup: int, total: int, cosine: bool = True) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 0 at ``total`` (SGDR,
    Loshchilov & Hutter 2017, without restarts), or constant when ``cosine`` is False."""

    span = max(total - warmup, 1)

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        done = min(max(step - warmup, 0), span)
        return 0.5 * (1.0 + math.cos(math.pi * done / span))

    return factor
