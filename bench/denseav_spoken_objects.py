"""DenseAV on SpokenObjects (docs/benchmarks.md): trained models beside the baseline rows.

    python bench/denseav_spoken_objects.py                # full protocol
    python bench/denseav_spoken_objects.py --train 400 --test 200 \
        --steps 100 --seeds 0                             # CI tier
    python bench/denseav_spoken_objects.py --resume --out DIR   # continue a stopped run

``--resume`` reads each training that already finished in ``--out`` with the same resolved
recipe from its ``metrics.json`` and trains only the others (a stopped run loses only its
unfinished training).

Trains the reference model of ``recipes/denseav_spoken_objects.yaml`` with the ``max_mean``
(MISA) and ``mean_mean`` (SISA ablation) aggregators for each seed, evaluates each on the test
split (speaker-disjoint voices), and prints, on the two-object items (the headline) and for the
prompted / retrieval protocols: the random, centre-prior, objectness-oracle, target-oracle and
untrained rows, the whole-utterance heat of the trained model, and the trained models as
mean ± std over seeds with per-seed paired Δ (max_mean − mean_mean). Retrieval prints the
chance k/N, the label-set chance and the instance R@1 ceiling beside the models.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "denseav_spoken_objects.yaml"
LOC = ("two_map", "two_miou", "two_pointing", "two_disc", "all_map", "all_pointing")
SPOT = ("all_spot", "two_spot_disc")
PROMPT = ("prompt_map", "prompt_pointing", "prompt_disc", "presence_auroc")
RETR = ("r1_a2i", "r5_a2i", "r10_a2i", "r1_i2a", "r5_i2a", "r10_i2a", "p1_a2i", "p5_a2i")
BASELINES = ("random", "centre", "objectness", "target_oracle", "utterance")


def _recipe(args: argparse.Namespace, seed: int, aggregator: str) -> dict:
    raw = yaml.safe_load(RECIPE.read_text())
    raw = copy.deepcopy(raw)
    raw["seed"] = seed
    raw["data"].update(limit=args.train, workers=args.workers)
    raw["eval_data"].update(limit=args.test, workers=args.workers)
    raw["learner"]["aggregator"]["name"] = aggregator
    raw["learner"].update(steps=args.steps, warmup_steps=min(100, max(1, args.steps // 15)))
    if args.train is not None:
        raw["learner"]["batch_size"] = min(raw["learner"]["batch_size"], args.train)
    raw["trainer"].update(max_steps=args.steps, progress=False)
    if args.threads is not None:
        raw["trainer"]["threads"] = args.threads
    return raw


def _fmt(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    if len(arr) == 1:
        return f"{arr[0]:.3f}"
    return f"{arr.mean():.3f}±{arr.std(ddof=1):.3f}"


#: dataset settings that do not change a training's results (the trainer's own are marked
#: in fw.recipe.TrainerConfig): generation is byte-identical with any number of workers
DATA_NO_EFFECT = ("data.workers", "eval_data.workers")


def same_settings(a: Any, b: Any) -> bool:
    """Equal resolved recipes up to settings that cannot change results (a null = absent)."""
    from fw.recipe import result_settings

    return result_settings(a, DATA_NO_EFFECT) == result_settings(b, DATA_NO_EFFECT)


def finished(run: Path, recipe: Any) -> dict[str, float] | None:
    """The final metrics of a training in ``run`` that finished with this recipe, else None."""
    metrics, saved = run / "metrics.json", run / "recipe.yaml"
    if not (metrics.is_file() and saved.is_file()):
        return None
    if not same_settings(yaml.safe_load(saved.read_text()), yaml.safe_load(recipe.to_yaml())):
        return None
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--train", type=int, default=None, help="training items (default 5000)")
    parser.add_argument("--test", type=int, default=None, help="test items (default 1000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_denseav_spoken_objects"))
    parser.add_argument("--overwrite", action="store_true", help="replace earlier runs in --out")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse trainings in --out that finished with the same recipe (their metrics.json)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the recipe's)"
    )
    args = parser.parse_args()
    full = args.train is None and args.test is None and args.steps == 1500
    print(
        f"# seeds {args.seeds}, {args.steps} steps, train {args.train or 5000} / test "
        f"{args.test or 1000} items"
        + ("" if full else " -- CUT: not the full protocol of docs/benchmarks.md"),
        flush=True,
    )

    from fw.recipe import build, recipe_from_dict
    from fw.train import train

    results: dict[str, list[dict[str, float]]] = {"max_mean": [], "mean_mean": []}
    t0 = time.perf_counter()
    untrained: dict[str, float] = {}
    for seed in args.seeds:
        for agg in results:
            recipe = recipe_from_dict(_recipe(args, seed, agg))
            t = time.perf_counter()
            run = args.out / f"{agg}-seed{seed}"
            done = finished(run, recipe) if args.resume else None
            if done is not None:
                final = done
                print(f"# {agg} seed {seed}: finished earlier, read from {run}", flush=True)
            else:
                final = train(recipe, run, overwrite=args.overwrite or args.resume)
                print(f"# {agg} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
            results[agg].append(final)
            # kept as it comes, so a run stopped early still leaves its finished trainings
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "partial.json").write_text(json.dumps({"runs": results}, indent=1))
    # the untrained reference model (seed 0 init, audio statistics from the training data)
    import torch

    torch.manual_seed(args.seeds[0])
    raw = _recipe(args, args.seeds[0], "max_mean")
    learner = build("learner", recipe_from_dict(raw).raw["learner"])
    data = build("dataset", recipe_from_dict(raw).raw["data"])
    learner.audio.setup(data)
    untrained = learner.evaluate(build("dataset", recipe_from_dict(raw).raw["eval_data"]))

    first = results["max_mean"][0]
    rows: list[tuple[str, dict[str, str]]] = []
    for base in BASELINES[:4]:
        row = {k: f"{first[f'{base}_{k}']:.3f}" for k in LOC}
        if base == "random":  # the prompted and presence tables show the random row too
            row.update({k: f"{first[f'random_{k}']:.3f}" for k in PROMPT if f"random_{k}" in first})
        rows.append((base, row))
    rows.append(("untrained", {k: f"{untrained[k]:.3f}" for k in LOC + SPOT + PROMPT + RETR}))
    rows.append(
        (
            "utterance (max_mean)",
            {k: _fmt([r[f"utterance_{k}"] for r in results["max_mean"]]) for k in LOC},
        )
    )
    for agg, runs in results.items():
        rows.append((agg, {k: _fmt([r[k] for r in runs]) for k in LOC + SPOT + PROMPT + RETR}))
    chance = {}
    for k in RETR:
        if k.startswith("r"):
            at = k[1:].split("_")[0]
            chance[k] = f"{first[f'r{at}_chance']:.3f}"
    chance.update({"p1_a2i": f"{first['p_chance']:.3f}", "p5_a2i": f"{first['p_chance']:.3f}"})
    rows.append(("chance / label-set chance", chance))
    rows.append(
        (
            "instance R@1 ceiling",
            {"r1_a2i": f"{first['r1_ceiling']:.3f}", "r1_i2a": f"{first['r1_ceiling']:.3f}"},
        )
    )
    for title, cols in (
        ("localisation (two-object items: two_*)", LOC),
        ("word spotting", SPOT),
        ("prompted, held-out voices", PROMPT),
        ("retrieval", RETR),
    ):
        print(f"\n## {title}")
        print(f"{'row':<28}" + "".join(f"{c:>16}" for c in cols))
        for name, vals in rows:
            if any(c in vals for c in cols):
                print(f"{name:<28}" + "".join(f"{vals.get(c, ''):>16}" for c in cols))
    deltas = [
        a["two_map"] - b["two_map"]
        for a, b in zip(results["max_mean"], results["mean_mean"], strict=True)
    ]
    print(
        f"\npaired Δ two_map (max_mean − mean_mean), seeds {args.seeds}:",
        [round(d, 3) for d in deltas],
    )
    obj = first["objectness_two_disc"]
    disc = _fmt([r["two_disc"] for r in results["max_mean"]])
    print(f"right-object accuracy: max_mean {disc} vs objectness oracle {obj:.3f}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"total {time.perf_counter() - t0:.0f} s wall (load average at the end: {load})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"runs": results, "untrained": untrained}, indent=1)
    )


if __name__ == "__main__":
    main()
