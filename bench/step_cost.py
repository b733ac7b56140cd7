"""How the cost of one training step drifts over a run, for every recipe that runs offline.

Each recipe in `recipes/` is trained at reduced steps (its own step count, at most
``--steps``); the wall time between the starts of consecutive training steps (forward,
backward, optimizer, next batch) is recorded, and the table gives the median step time over
the first, middle and last tenth of the run and the drift ratio last/first. Recipes whose data
or weights are not on this machine are listed as skipped with the reason; evaluation is not
run, and `SMALLER_DATA` shrinks generated datasets without changing a step's work. A drift above
``--limit`` fails the benchmark (exit 1) unless the recipe is in ``EXPLAINED`` with the reason
it is inherent. With ``--compare-flush`` every recipe also runs with
``trainer.flush_denormal=false`` in the same process, beside the default.

    OMP_NUM_THREADS=1 python bench/step_cost.py                       # every recipe
    OMP_NUM_THREADS=1 python bench/step_cost.py --only tsne_digits icon_clustering_digits
    OMP_NUM_THREADS=1 python bench/step_cost.py --compare-flush --json bench/results/step_cost.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from fw.errors import FwError
from fw.recipe import load_recipe
from fw.registry import get_registry
from fw.train import train

ROOT = Path(__file__).resolve().parents[1]

#: recipes whose step cost changes by design, with the reason (printed beside their row)
EXPLAINED: dict[str, str] = {}
#: overrides that shrink a recipe's generated data without changing the work of a step
SMALLER_DATA: dict[str, list[str]] = {
    "denseav_spoken_objects": [
        "data.limit=600",
        "eval_data.limit=50",
        "data.progress=false",
        "eval_data.progress=false",
    ],
}


class _Budget(Exception):
    """Raised from inside a step when a recipe has used its wall-time budget."""


def step_times(recipe_path: Path, steps: int, budget: float, flush: bool) -> list[float]:
    """Seconds between consecutive training-step starts of one reduced run."""
    registry = get_registry()
    overrides = [
        f"trainer.max_steps={steps}",
        "trainer.progress=false",
        "trainer.threads=1",
        f"trainer.flush_denormal={str(flush).lower()}",
        *SMALLER_DATA.get(recipe_path.stem, []),
    ]
    recipe = load_recipe(recipe_path, overrides, registry)
    learner_cls = registry.get("learner", recipe.raw["learner"]["name"]).factory
    if not isinstance(learner_cls, type):
        raise FwError(f"learner '{recipe.raw['learner']['name']}' is not a class")

    def stop(step: int, starts: list[float]) -> None:
        if len(starts) == steps or (starts[-1] - starts[0] > budget and len(starts) > 20):
            raise _Budget  # also at the last step: the evaluation is not what is measured

    with step_starts(learner_cls, stop) as starts, tempfile.TemporaryDirectory() as tmp:
        try:
            train(recipe, Path(tmp) / "run", registry=registry)
        except _Budget:
            starts.pop()
    return durations(starts)


@contextlib.contextmanager
def step_starts(
    learner_cls: type, before_step: Callable[[int, list[float]], None] | None = None
) -> Iterator[list[float]]:
    """The start time of every training step of ``learner_cls`` while the block runs.

    ``before_step(step, starts)`` runs after each start is recorded and may raise to stop.
    """
    starts: list[float] = []
    original = learner_cls.training_step

    def timed(self, batch, step):
        starts.append(time.perf_counter())
        if before_step is not None:
            before_step(step, starts)
        return original(self, batch, step)

    learner_cls.training_step = timed
    try:
        yield starts
    finally:
        learner_cls.training_step = original


def durations(starts: list[float]) -> list[float]:
    """Seconds between consecutive step starts."""
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def tenths(times: list[float]) -> tuple[float, float, float]:
    """Median step time over the first, middle and last tenth (at least 3 steps each)."""
    k = max(3, len(times) // 10)
    mid = len(times) // 2
    parts = (times[:k], times[mid - k // 2 : mid - k // 2 + k], times[-k:])
    return tuple(statistics.median(p) for p in parts)  # type: ignore[return-value]


def measure(path: Path, args: argparse.Namespace, flush: bool) -> dict:
    """One row: the recipe's tenths and drift, or why it was skipped."""
    row = {"recipe": path.stem, "flush_denormal": flush}
    try:
        recipe = load_recipe(path, SMALLER_DATA.get(path.stem, []), get_registry())
        own = recipe.trainer.max_steps
        if own == 0:
            row["skipped"] = "no training steps (max_steps: 0, the recipe only evaluates)"
            return row
        steps = args.steps if own is None else min(args.steps, own)
        times = step_times(path, steps, args.budget, flush)
    except FwError as err:
        row["skipped"] = str(err).splitlines()[0][:120]
        return row
    if len(times) < 9:
        row["skipped"] = f"only {len(times) + 1} steps"
        return row
    first, middle, last = tenths(times)
    row.update(
        steps=len(times),
        first_ms=1e3 * first,
        middle_ms=1e3 * middle,
        last_ms=1e3 * last,
        drift=last / first,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per recipe at most")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per recipe at most")
    parser.add_argument("--limit", type=float, default=1.5, help="largest unexplained drift")
    parser.add_argument("--only", nargs="*", help="recipe names (file stems)")
    parser.add_argument("--compare-flush", action="store_true", help="also run without flushing")
    parser.add_argument("--json", type=Path, help="append one JSON line per row")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted((ROOT / "recipes").glob("*.yaml"))
    if args.only:
        paths = [p for p in paths if p.stem in args.only]
    modes = (True, False) if args.compare_flush else (True,)
    header = f"{'recipe':<42} {'flush':>5} {'steps':>5} {'first':>9} {'middle':>9} {'last':>9}"
    print(header + f" {'drift':>6}  note")
    failures = []
    for path in paths:
        for flush in modes:
            row = measure(path, args, flush)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            name = f"{row['recipe']:<42} {str(flush):>5}"
            if "skipped" in row:
                print(f"{name} skipped: {row['skipped']}", flush=True)
                continue
            note = EXPLAINED.get(row["recipe"], "")
            if row["drift"] > args.limit and not note and flush:
                failures.append(row["recipe"])
                note = f"DRIFT ABOVE {args.limit}: unexplained"
            print(
                f"{name} {row['steps']:>5} {row['first_ms']:>7.2f}ms {row['middle_ms']:>7.2f}ms "
                f"{row['last_ms']:>7.2f}ms {row['drift']:>6.2f}  {note}",
                flush=True,
            )
    if failures:
        print(f"\nunexplained drift > {args.limit}: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
