"""The self-supervised table's summary (bench/ssl_table.py): mean ± sample std per method, the
random-init check, and files that several invocations appended to."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import ssl_table  # noqa: E402


def _row(method: str, seed: int, knn: float, steps: int = 1000) -> dict:
    return {
        "method": method, "seed": seed, "steps": steps, "knn": knn, "linear": knn + 0.05,
        "alignment": 0.1, "uniformity": -0.7, "effective_rank": 16.0, "dim_std_ratio": 0.4,
        "collapsed": False, "collapse_reasons": [], "train_seconds": 10.0 * (seed + 1),
    }  # fmt: skip


@pytest.fixture
def rows() -> list[dict]:
    rand = [0.775, 0.780, 0.776]
    good = [0.796, 0.782, 0.782]  # margin +0.0097 > spreads 0.0081 and 0.0026
    weak = [0.788, 0.770, 0.786]  # margin +0.0043 < its spread 0.0099
    return (
        [_row("random-init", s, v) for s, v in enumerate(rand)]
        + [_row("BYOL", s, v) for s, v in enumerate(good)]
        + [_row("VICReg", s, v) for s, v in enumerate(weak)]
    )


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(name))


def test_summary_means_spreads_and_verdicts(rows):
    text = ssl_table.summarise(rows)
    knn = [r["knn"] for r in rows if r["method"] == "BYOL"]
    cell = f"{statistics.mean(knn):>8.3f} ± {statistics.stdev(knn):<5.3f}"
    assert cell in _line(text, "BYOL")
    verdicts = text.split("kNN probe vs the random-init encoder")[1]
    assert "BYOL         +0.010 (beats it)" in verdicts
    assert "VICReg       +0.004 (does NOT beat it)" in verdicts


def test_random_init_rows_repeated_by_a_second_invocation_count_once(rows, tmp_path):
    second = [_row("random-init", s, r["knn"]) for s, r in enumerate(rows[:3])]
    path = tmp_path / "table.jsonl"
    lines = [{"header": {"command": "first"}}, *rows, {"header": {"command": "second"}}, *second]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    once = ssl_table.summarise(rows)
    assert ssl_table.summarise(rows + second) == once
    assert ssl_table.main(["--summary", str(path)]) == 0


def test_a_rerun_with_other_results_is_named_not_silently_dropped(rows):
    rerun = _row("BYOL", 1, 0.790)  # seed 1 measured again, with another result
    text = ssl_table.summarise([*rows, rerun])
    assert "BYOL seed 1 (1000 steps)" in text.split("note:")[1]
    assert _line(text, "BYOL") == _line(ssl_table.summarise(rows), "BYOL")  # the first counts
    assert "note:" not in ssl_table.summarise([*rows, _row("BYOL", 1, 0.782)])  # same result
