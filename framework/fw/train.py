"""One training loop for every learner, on lightning-fabric (CPU, one GPU, many GPUs or nodes).

The loop owns seeding, deterministic batch order, checkpoints (every N steps, on Ctrl-C, at the
end), resume, a progress bar, and metric logging (JSONL always, wandb when asked). The learner
owns its step (`fw.api.Learner`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fw.api import Learner
from fw.data import ArrayDataset, collate_batched
from fw.errors import FwError, Interrupted
from fw.recipe import Recipe, build
from fw.registry import Registry, get_registry

RUN_DIR_ENV = "FW_RUN_DIR"  # lets DDP child processes find the directory rank 0 chose
CHECKPOINT = "checkpoints/last.ckpt"


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/<recipe>-<time>``, shared with DDP children through ``FW_RUN_DIR``."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe.name}-{stamp}"


class BatchStream:
    """Deterministic batches: epoch ``e`` visits a permutation seeded by ``(seed, e)``.

    The batch of any step can be rebuilt from the step number alone, so a resumed run sees
    exactly the batches an uninterrupted one would. Ranks take strided slices of the epoch's
    permutation (as `DistributedSampler` does); the last incomplete batch is dropped.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        per_rank = self.n // world_size
        if batch_size is not None:
            if batch_size > per_rank:
                raise FwError(
                    f"batch_size {batch_size} is larger than the {per_rank} items each of the "
                    f"{world_size} process(es) sees; lower trainer.batch_size or "
                    "learner.batch_size"
                )
            self.batches_per_epoch = per_rank // batch_size
        else:
            self.batches_per_epoch = 1
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)
        self._full: dict[str, torch.Tensor] | None = None

    def _indices(self, step: int) -> torch.Tensor:
        epoch, b = divmod(step, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen)[self.rank :: self.world_size]
            self._perm_epoch = epoch
        assert self.batch_size is not None
        return self._perm[b * self.batch_size : (b + 1) * self.batch_size]

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch for ``step`` (the whole dataset when ``batch_size`` is None)."""
        if self.batch_size is None:
            if self._full is None:
                self._full = _load_all(self.dataset)
            return self._full
        idx = self._indices(step).tolist()
        if hasattr(self.dataset, "__getitems__"):
            return collate_batched(self.dataset.__getitems__(idx))
        return collate_batched([self.dataset[i] for i in idx])


def _load_all(dataset: Dataset) -> dict[str, torch.Tensor]:
    if isinstance(dataset, ArrayDataset):
        return dataset.full_batch()
    return collate_batched([dataset[i] for i in range(len(dataset))])  # type: ignore[arg-type]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def _tuples(obj: Any) -> Any:
    return tuple(_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


class MetricLogger:
    """Appends metrics to ``metrics.jsonl`` and, when configured, to wandb."""

    def __init__(self, run_dir: Path, recipe: Recipe, enabled: bool, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.wandb_run = None
        if not enabled:
            return
        if resume_step and self.path.exists():  # drop lines past the checkpoint
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(f"{line}\n" for line in kept))
        elif not resume_step:
            self.path.write_text("")
        cfg = recipe.logger
        if cfg.name == "wandb":
            try:
                import wandb
            except ImportError as exc:  # pragma: no cover - wandb is a dependency
                raise FwError("logger.name is 'wandb' but wandb is not installed") from exc
            self.wandb_run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                mode=os.environ.get("WANDB_MODE", cfg.mode),
                dir=str(run_dir),
                name=run_dir.name,
                config=recipe.raw,
                resume="allow" if resume_step else None,
                id=_wandb_id(run_dir),
            )

    def log(self, step: int, values: dict[str, float], split: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **values}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def finish(self, final: dict[str, float]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update(final)
            self.wandb_run.finish()


def _wandb_id(run_dir: Path) -> str:
    id_file = run_dir / "wandb_id.txt"
    if id_file.exists():
        return id_file.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    return run_id


class StopRequest:
    """First Ctrl-C asks the loop to stop at the next step boundary; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, fabric: Any) -> bool:
        """True when any process asked to stop (all ranks stop at the same step)."""
        if fabric.world_size == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=fabric.device)
        return bool(fabric.all_reduce(flag, reduce_op="max") > 0)


def _fabric(recipe: Recipe) -> Any:
    from lightning_fabric import Fabric

    cfg = recipe.trainer
    return Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        num_nodes=cfg.num_nodes,
    )


def train(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    resume: bool = False,
    registry: Registry | None = None,
) -> dict[str, float]:
    """Build the recipe's learner and data, train, evaluate; return the final metrics."""
    registry = registry or get_registry()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    ckpt_path = run_dir / CHECKPOINT
    if resume and not ckpt_path.exists():
        raise FwError(
            f"--resume: no checkpoint at {ckpt_path}. Pass the --out directory of the run to "
            "continue (it holds checkpoints/last.ckpt)."
        )
    os.environ[RUN_DIR_ENV] = str(run_dir)

    if recipe.trainer.threads:
        torch.set_num_threads(recipe.trainer.threads)
    fabric = _fabric(recipe)
    fabric.launch()
    fabric.seed_everything(recipe.seed, verbose=False)
    rank0 = fabric.is_global_zero
    if rank0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    fabric.barrier()

    data = build("dataset", recipe.raw["data"], registry)
    eval_spec = recipe.raw.get("eval_data")
    eval_data = build("dataset", eval_spec, registry) if eval_spec else data
    learner: Learner = build("learner", recipe.raw["learner"], registry)
    cfg = recipe.trainer
    if cfg.batch_size is not None:  # before setup: full-batch learners cache p in dataset order
        learner.batch_size = cfg.batch_size
    learner.setup(data)
    optimizer = learner.configure_optimizers()
    model, optimizer = fabric.setup(learner, optimizer)

    stream = BatchStream(
        data, learner.batch_size, recipe.seed, fabric.global_rank, fabric.world_size
    )

    start = 0
    if resume:
        state = {"learner": learner, "optimizer": optimizer, "step": 0, "rng": None, "extra": {}}
        fabric.load(ckpt_path, state)
        start = int(state["step"])
        _set_rng_state(state["rng"])
        learner.load_extra_state(state["extra"])

    def save(step: int) -> None:
        state = {
            "learner": learner,
            "optimizer": optimizer,
            "step": step,
            "rng": _rng_state(),
            "extra": learner.extra_state(),
        }
        tmp = ckpt_path.with_suffix(".tmp")
        fabric.save(tmp, state)
        if rank0:
            os.replace(tmp, ckpt_path)
        fabric.barrier()

    logger = MetricLogger(run_dir, recipe, enabled=rank0, resume_step=start)
    bar = _progress(cfg.progress and rank0, cfg.max_steps, start, recipe.name)
    device_batch: dict[str, torch.Tensor] | None = None
    t0 = time.perf_counter()
    last: dict[str, float] = {}
    with StopRequest() as stop:
        for step in range(start, cfg.max_steps):
            if stream.batch_size is None:
                if device_batch is None:
                    device_batch = _to_device(stream.batch(step), fabric.device)
                batch = device_batch
            else:
                batch = _to_device(stream.batch(step), fabric.device)
            with fabric.autocast():
                out = model(batch, step)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FwError(
                    f"the loss became {loss.item()} at step {step}; lower the learning rate or "
                    "check the recipe's distributions (p and q must share candidates)"
                )
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            done = step + 1
            if done % max(cfg.log_every, 1) == 0 or done == cfg.max_steps:
                last = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v)}
                logger.log(done, last)
                shown = {"loss": last["loss"], **({"kl": last["kl"]} if "kl" in last else {})}
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})  # kl: an estimate
            bar.update(1)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                save(done)
            if stop.agreed(fabric) and done < cfg.max_steps:
                bar.close()
                save(done)
                raise Interrupted(
                    f"interrupted after step {done}; checkpoint saved to {ckpt_path}. Continue "
                    f"with `fw run <recipe> --out {run_dir} --resume`."
                )
    bar.close()
    save(cfg.max_steps)
    elapsed = time.perf_counter() - t0

    final: dict[str, float] = {}
    if rank0:
        final = learner.evaluate(eval_data, run_dir)
        final.update({f"final_{k}": v for k, v in last.items()})
        final["steps"] = float(cfg.max_steps)
        final["train_seconds"] = elapsed
        (run_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        logger.log(cfg.max_steps, final, split="eval")
    logger.finish(final)
    fabric.barrier()
    return final


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _progress(enabled: bool, total: int, initial: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


def iterate_batches(stream: BatchStream, steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """The first ``steps`` batches of a stream (for tools and tests)."""
    for step in range(steps):
        yield stream.batch(step)
