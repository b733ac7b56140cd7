"""Entry point of the ``retrieval`` plugin: the ``fw retrieve`` command."""

from __future__ import annotations

from fw import hookimpl
from fw_retrieval import command


@hookimpl
def fw_commands():
    return {"retrieve": command.COMMAND}
