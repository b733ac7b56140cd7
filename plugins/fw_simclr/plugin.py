"""Entry point of the ``simclr`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_simclr.distributions import PositivePairs


@hookimpl
def fw_distributions():
    return {"positive_pairs": PositivePairs}
