"""Errors fw raises for bad user input; the CLI prints them without a traceback (exit 2)."""

from __future__ import annotations


class FwError(Exception):
    """Base class of errors caused by user input (recipes, names, paths, shapes)."""


class RecipeError(FwError):
    """A recipe is malformed: unknown key, wrong type, missing value, bad override."""


class RegistryError(FwError):
    """A component name is unknown or registered twice."""


class DataError(FwError):
    """A dataset or weight file is missing or unreadable."""


class ShapeError(FwError, ValueError):
    """A tensor has the wrong shape or dtype for a component's contract."""


class ContextError(FwError, KeyError):
    """A distribution needs a context key the learner or dataset does not provide."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Interrupted(FwError):
    """Training stopped on Ctrl-C after saving a checkpoint."""
