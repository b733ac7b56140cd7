"""Safe file handling: tensor-only loads, atomic replaces, one writer per directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fw.errors import DataError, FwError

#: the lock file `locked` keeps in a directory while a process writes there
LOCK = ".fw.lock"


def load(path: str | Path, fix: str = "") -> Any:
    """``torch.load`` of tensors and plain containers only (no code runs), else a `DataError`."""
    path = Path(path)
    hint = f". {fix}" if fix else ""
    if not path.is_file():
        raise DataError(f"{path} not found{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors: truncated, foreign or hostile files
        raise DataError(f"cannot load {path}: {why(err)}{hint}") from err


def why(err: BaseException) -> str:
    """One line saying why a file failed to load (never the advice to allow code execution)."""
    text = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = [line.strip() for line in text.splitlines() if "GLOBAL" in line]
        detail = f" ({found[0]})" if found else ""
        return f"it holds objects other than tensors, which fw never loads{detail}"
    if not text or isinstance(err, EOFError):
        return "the file is empty or truncated"
    first = text.splitlines()[0]
    if "zip archive" in first or "central directory" in first:
        return "the file is truncated or is not a checkpoint"
    return f"{type(err).__name__}: {first[:200]}"


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it when the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        durable(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def durable(path: str | Path) -> None:
    """Flush a written file to the disk, so that a rename after it never exposes a hole."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through `replacing`: a kill during the save keeps the previous file."""
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) through `replacing`."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def locked(directory: str | Path, what: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (made if missing, removed again if left empty)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FwError(f"{what} {directory} is a file, not a directory; choose another {what}")
    created = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / LOCK, "a+")  # noqa: SIM115 - held open while the lock lasts
    except OSError as err:
        raise FwError(
            f"cannot write to {what} {directory} ({err.strerror}); choose a writable directory"
        ) from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise FwError(
            f"{what} {directory} is being written by another fw process (PID {holder}); wait "
            f"for it to finish or choose another {what}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield directory
    finally:
        if created and [p.name for p in directory.iterdir()] == [LOCK]:
            (directory / LOCK).unlink()  # a refused run leaves no empty directory behind
            for made in created:
                with contextlib.suppress(OSError):  # not empty: another run's directory
                    made.rmdir()
        handle.close()
