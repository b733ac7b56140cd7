"""Entry point of the ``table`` plugin: the ``fw table`` command."""

from __future__ import annotations

from fw import hookimpl
from fw_table import command


@hookimpl
def fw_commands():
    return {"table": command.COMMAND}
