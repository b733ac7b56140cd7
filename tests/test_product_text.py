"""The repository is the product: no tracked file carries working notes, machine paths or
references to documents a user of fw never receives."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Written in pieces so that this file does not match itself.
FORBIDDEN = re.compile(
    "|".join(
        [
            "work" + "tree",
            "engin" + "eer",
            "/t" + "mp/",
            "/wo" + "rk/",
            "cpu_" + "slot",
            "sess" + r"ion [0-9]",
            "sp" + r"ec [a-z_]+\.md",
            "se" + "ed 00[0-9]",
            "fw-cpu" + r"\.lock",
            "ag" + r"ents?'?s?'? jobs?",
        ]
    )
)


def tracked_files() -> list[Path]:
    """Every text file git tracks (or, outside a checkout, every file under the root)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        paths = [ROOT / p for p in out.decode().split("\0") if p]
    else:
        paths = [p for p in ROOT.rglob("*") if ".git" not in p.parts]
    return [p for p in paths if p.is_file()]


def offending_lines(paths: list[Path]) -> list[str]:
    """``path:line: match`` for every forbidden phrase in the text files among ``paths``."""
    hits = []
    for path in paths:
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (pictures)
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            hits += [
                f"{path.relative_to(ROOT) if ROOT in path.parents else path}:{number}: {m.group(0)}"
                for m in FORBIDDEN.finditer(line)
            ]
    return hits


def test_no_tracked_file_carries_working_notes_or_internal_references():
    hits = offending_lines(tracked_files())
    assert not hits, "tracked files carry working notes or internal references:\n" + "\n".join(
        hits[:50]
    )


@pytest.mark.parametrize(
    "line",
    [
        "see the " + "work" + "tree of the other team",
        "cached under /t" + "mp/fw-smoke",
        "Eq. 3 (sp" + "ec icon.md §2)",
        "as in se" + "ed 000, ch. 4",
        "measured in sess" + "ion 4",
    ],
)
def test_the_scan_finds_each_kind_of_phrase(tmp_path, line):
    bad = tmp_path / "notes.py"
    bad.write_text(f"x = 1\n# {line}\n")
    assert offending_lines([bad]) == [f"{bad}:2: {FORBIDDEN.search(line).group(0)}"]
