"""fw: representation learners as I-Con (p, q) pairs, composed from plugins and recipes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pluggy

hookimpl = pluggy.HookimplMarker("fw")

try:
    __version__ = version("fw")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["hookimpl", "__version__"]
