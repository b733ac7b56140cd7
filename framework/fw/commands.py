"""The host's own `fw` commands: run, show, plugins and check, contributed as a plugin."""

from __future__ import annotations

import argparse
from pathlib import Path

from fw.api import Command, Learner
from fw.errors import FwError
from fw.hookspecs import hookimpl

#: the name `fw --help` and `fw plugins` show for these commands
PLUGIN_NAME = "fw"


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path of a YAML recipe")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _recipe_arguments(parser)
    parser.add_argument("--out", help="run directory (default runs/<recipe>-<time>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run OUT already holds"
    )


def summary_line(final: dict[str, float], run_dir: Path, learner: Learner) -> str:
    """One line: the learner's headline metrics and the files the run wrote."""
    keys = [k for frag in learner.headline for k in final if frag in k]
    picked = list(dict.fromkeys(keys))[:4] or [k for k in final if k != "train_seconds"][:3]
    metrics = ", ".join(f"{k} {final[k]:.4g}" for k in picked)
    start = run_dir / "recipe.yaml"  # written as the run starts: older files are not the run's
    since = start.stat().st_mtime if start.is_file() else 0.0
    wrote = run_dir.iterdir() if run_dir.is_dir() else ()
    files = sorted(p.name for p in wrote if p.is_file() and p.stat().st_mtime >= since)
    files = [f for f in files if not f.startswith(".")]
    seconds = final.get("train_seconds", 0.0)
    return f"{metrics} ({seconds:.0f} s) -> {run_dir}/ [{', '.join(files)}]"


def run_main(args: argparse.Namespace) -> int:
    """`fw run`: train and evaluate a recipe (`fw.run`), then print its summary line."""
    from fw.runs import run

    result = run(args.recipe, args.overrides, args.out or None, args.resume, args.overwrite)
    if result.metrics:
        print(summary_line(result.metrics, result.run_dir, result.learner))
    return 0


def show_main(args: argparse.Namespace) -> int:
    """`fw show`: print the resolved recipe."""
    from fw.recipe import load_recipe
    from fw.registry import get_registry

    print(load_recipe(args.recipe, args.overrides, get_registry()).to_yaml(), end="")
    return 0


def plugins_main(args: argparse.Namespace) -> int:
    """`fw plugins`: every registered component and command, with its plugin."""
    from fw.registry import get_registry

    registry = get_registry()
    for kind in registry.kinds():
        entries = registry.entries(kind)
        print(f"{kind} ({len(entries)})")
        if not entries:
            print("  (none registered)")
        for e in entries:
            doc = (e.factory.__doc__ or "").strip().splitlines()
            summary = doc[0] if doc else ""
            print(f"  {e.name:<22} {e.plugin:<10} [{e.distribution}]  {summary}")
    print(f"command ({len(registry.commands)})")
    for name, e in sorted(registry.commands.items()):
        print(f"  {name:<22} {e.plugin:<10} [{e.distribution}]  {e.factory.help}")
    return 0


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="PLUGIN_OR_NAME",
        help="a plugin name (checks all its components) or a component name",
    )


def check_main(args: argparse.Namespace) -> int:
    """`fw check`: run the smoke check on a plugin's components or on named components."""
    from fw.registry import get_registry
    from fw.smoke import SmokeError, check, select

    registry = get_registry()
    failed = 0
    for entry in select(registry, args.targets):
        try:
            what = check(entry, registry)
        except SmokeError as err:
            failed += 1
            print(f"FAIL {entry.kind} {entry.name} ({entry.plugin}): {err}")
        else:
            print(f"ok   {entry.kind} {entry.name} ({entry.plugin}): {what}")
    if failed:
        raise FwError(f"{failed} component(s) failed the smoke check (details above)")
    return 0


@hookimpl
def fw_commands() -> dict[str, Command]:
    return {
        "run": Command(
            help="train and evaluate a recipe",
            description="Train the recipe's learner, then evaluate it. Overrides are dotted "
            "key=value pairs, e.g. `learner.q.dof=2 trainer.max_steps=200`.",
            configure=_run_arguments,
            main=run_main,
        ),
        "show": Command(
            help="print the fully resolved recipe",
            description="Print the recipe after `extends`, overrides and defaults.",
            configure=_recipe_arguments,
            main=show_main,
        ),
        "plugins": Command(
            help="list every registered component and command by kind",
            description="List registered components with the plugin and distribution of each.",
            main=plugins_main,
        ),
        "check": Command(
            help="smoke-check a plugin's components (or named components)",
            description="Build each component small and run it through its kind's contract "
            "(shapes, finiteness, gradients), printing what was checked.",
            configure=_check_arguments,
            main=check_main,
        ),
    }
