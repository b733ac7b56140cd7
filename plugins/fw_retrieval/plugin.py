"""Entry point of the ``retrieval`` plugin: the ``fw retrieve`` and ``fw blindspots`` commands."""

from __future__ import annotations

from fw import hookimpl
from fw_retrieval import blindspots, command


@hookimpl
def fw_commands():
    return {"retrieve": command.COMMAND, "blindspots": blindspots.COMMAND}
