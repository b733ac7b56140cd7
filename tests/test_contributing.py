"""CONTRIBUTING.md's layout table names every host module and every plugin, and nothing stale."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_paths(text: str) -> set[str]:
    """Paths in the first column of the layout table; ``a/b.py`, `c.py``` means a/b.py, a/c.py."""
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        base = None
        for token in re.findall(r"`([^`]+)`", row.split("|")[1]):
            if base is None or "/" in token.rstrip("/"):
                base = token.rstrip("/").rpartition("/")[0]
                paths.add(token)
            else:
                paths.add(f"{base}/{token}" if base else token)
    return paths


def required_paths() -> set[str]:
    """Every module of the core and the library, every core package, every plugin package."""
    host = ROOT / "framework" / "fw"
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in host.rglob("*.py")
        if p.name != "__init__.py" and p.parent in (host, host / "lib")
    }
    packages = {
        p.relative_to(ROOT).as_posix() + "/"
        for p in host.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "lib"
    }
    plugins = {
        f"plugins/{p.name}/" for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()
    }
    return modules | packages | plugins


def test_layout_table_is_complete_and_current():
    named = layout_paths((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    missing = required_paths() - named
    assert not missing, f"add to CONTRIBUTING.md's layout table: {sorted(missing)}"
    stale = [p for p in named if "<" not in p and not (ROOT / p).exists()]
    assert not stale, f"CONTRIBUTING.md's layout table names paths that do not exist: {stale}"


def test_the_parser_expands_shorthand_rows():
    text = (
        "## Layout\n| where | what |\n|---|---|\n| `a/b/c.py`, `d.py` | x |\n| `p/q/`, `r/` | y |\n"
    )
    assert layout_paths(text) == {"a/b/c.py", "a/b/d.py", "p/q/", "p/r/"}
