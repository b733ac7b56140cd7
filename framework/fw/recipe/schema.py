"""The recipe's typed parts: the trainer and logger settings, the validated `Recipe`, cache keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

#: steps of a run whose recipe gives neither trainer.max_steps nor trainer.epochs
DEFAULT_STEPS = 1000


#: `TrainerConfig` field metadata: the field changes speed, logging or memory, not results
NO_EFFECT = "no_effect"


@attrs.define
class TrainerConfig:
    """How `fw.train` runs a learner (lightning-fabric settings, steps, checkpoints, logging)."""

    # 0: evaluate only; None: 1000, or no cap when `epochs` is given
    max_steps: int | None = attrs.field(default=None, metadata={"min": 0})
    # passes over the data: ceil(epochs·N / global batch) steps, at most max_steps, so the
    # step count follows the dataset's size (None: max_steps alone)
    epochs: float | None = attrs.field(default=None, metadata={"min": 0})
    # None: the learner's own choice (None there = full batch)
    batch_size: int | None = attrs.field(default=None, metadata={"min": 1})
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = attrs.field(default=1, metadata={"min": 1})
    num_workers: int = attrs.field(default=0, metadata={"min": 0, NO_EFFECT: True})
    # 0: checkpoint only on interrupt and at the end
    checkpoint_every: int = attrs.field(default=0, metadata={"min": 0, NO_EFFECT: True})
    # torch CPU threads (None: torch's default)
    # (results agree up to the order of floating-point sums)
    threads: int | None = attrs.field(default=None, metadata={"min": 1, NO_EFFECT: True})
    log_every: int = attrs.field(default=10, metadata={"min": 1, NO_EFFECT: True})
    progress: bool = attrs.field(default=True, metadata={NO_EFFECT: True})
    # keep freed large blocks in the heap (fw.memory): less page-fault system time, higher
    # peak RSS (see fw.memory)
    reuse_memory: bool = attrs.field(default=False, metadata={NO_EFFECT: True})
    # flush subnormal floats to zero on CPU: a step full of them runs up to 10x slower; values
    # below 1.2e-38 change nothing at float32 precision (recorded as metrics.json's
    # flush_denormal)
    flush_denormal: bool = attrs.field(default=True, metadata={NO_EFFECT: True})
    # false: no final evaluation, for a stage whose trained model is all that is read
    evaluate: bool = attrs.field(default=True, metadata={NO_EFFECT: True})


def result_settings(raw: Mapping[str, Any], also_ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The part of a resolved recipe that can change its results."""
    ignore = {"description", *also_ignore}
    ignore |= {
        f"trainer.{f.name}" for f in attrs.fields(TrainerConfig) if f.metadata.get(NO_EFFECT)
    }

    def prune(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                sub = f"{path}.{key}" if path else str(key)
                if value is not None and sub not in ignore:
                    out[key] = prune(value, sub)
            return out
        if isinstance(node, (list, tuple)):
            return [prune(v, path) for v in node]
        return node

    return prune(raw, "")


def dump_yaml(raw: Mapping[str, Any]) -> str:
    """A recipe mapping as fw writes it: keys in order, leaves in flow style, UTF-8 as is."""
    return yaml.safe_dump(dict(raw), sort_keys=False, allow_unicode=True, default_flow_style=None)


def settings_digest(raw: Mapping[str, Any], also_ignore: Iterable[str] = ()) -> str:
    """A 12-character hex SHA-256 of `result_settings` (sorted JSON): a key for cached results."""
    text = json.dumps(result_settings(raw, also_ignore), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@attrs.define
class LoggerConfig:
    """Where metrics go: JSONL in the run directory always, wandb too when ``name: wandb``."""

    name: Literal["jsonl", "wandb"] = "jsonl"
    project: str = "fw"
    mode: Literal["online", "offline", "disabled"] = "offline"
    entity: str | None = None


TOP_LEVEL: dict[str, str] = {
    "extends": "a recipe file (or list) this one builds on",
    "seed": "random seed (int)",
    "data": "training dataset component",
    "eval_data": "evaluation dataset component (default: the training data)",
    "learner": "the learner component",
    "trainer": "training-loop settings",
    "logger": "metric logging settings",
    "description": "free text",
}


@attrs.frozen
class Recipe:
    """A validated recipe: resolved raw mapping plus where it came from."""

    raw: dict[str, Any]
    source: Path | None
    lines: dict[str, int] = attrs.field(factory=dict)

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 0))

    @property
    def trainer(self) -> TrainerConfig:
        return TrainerConfig(**self.raw.get("trainer", {}))

    @property
    def logger(self) -> LoggerConfig:
        return LoggerConfig(**self.raw.get("logger", {}))

    @property
    def name(self) -> str:
        return self.source.stem if self.source else "recipe"

    def to_yaml(self) -> str:
        """The fully resolved recipe as YAML (rebuilds this run)."""
        return dump_yaml(self.raw)
