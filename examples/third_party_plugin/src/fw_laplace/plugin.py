"""Entry point: contributes the ``laplace`` distribution and the ``fw laplace-row`` command."""

from __future__ import annotations

from fw import hookimpl
from fw_laplace import command
from fw_laplace.distribution import Laplace


@hookimpl
def fw_distributions():
    return {"laplace": Laplace}


@hookimpl
def fw_commands():
    return {"laplace-row": command.COMMAND}
