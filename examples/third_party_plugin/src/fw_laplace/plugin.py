"""Entry point: contributes the ``laplace`` distribution."""

from __future__ import annotations

from fw import hookimpl
from fw_laplace.distribution import Laplace


@hookimpl
def fw_distributions():
    return {"laplace": Laplace}
