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
    """Training stopped on a signal after saving a checkpoint; ``signum`` is that signal."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum


def check_choice(value: object, choices: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError("<what> must be 'a', 'b' or 'c', got <value>")`` unless value is one."""
    if value not in choices:
        quoted = [repr(c) for c in choices]
        listed = ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
        raise ValueError(f"{what} must be {listed}, got {value!r}")
