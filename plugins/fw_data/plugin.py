"""Entry point of the ``data`` plugin: datasets in their official layouts."""

from __future__ import annotations

from fw import hookimpl
from fw_data.digits import digits


@hookimpl
def fw_datasets():
    return {"digits": digits}
