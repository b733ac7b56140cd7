"""fw: representation learners as I-Con (p, q) pairs, composed from plugins and recipes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fw.hookspecs import hookimpl

try:
    __version__ = version("fw")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"


def run(*args, **kwargs):  # noqa: ANN002, ANN003 - see fw.runs.run
    """Train and evaluate a recipe in-process; returns metrics and run directory (`fw.runs.run`)."""
    from fw.runs import run as _run

    return _run(*args, **kwargs)


def load_run(*args, **kwargs):  # noqa: ANN002, ANN003 - see fw.runs.load_run
    """The trained learner of a run directory (`fw.runs.load_run`)."""
    from fw.runs import load_run as _load_run

    return _load_run(*args, **kwargs)


__all__ = ["hookimpl", "load_run", "run", "__version__"]
