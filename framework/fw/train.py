"""One training loop for every learner, on lightning-fabric (CPU, one GPU, many GPUs or nodes)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from fw.api import Learner, Optimization
from fw.data import ArrayDataset, SeededItems, StepSampler, collate_batched, gather, load_all
from fw.errors import FwError, Interrupted, RecipeError
from fw.files import durable, locked, why, write_text
from fw.memory import reuse_freed_memory
from fw.recipe import DEFAULT_STEPS, Recipe, TrainerConfig, build, result_settings
from fw.registry import Registry, get_registry

RUN_DIR_ENV = "FW_RUN_DIR"  # lets DDP child processes find the directory rank 0 chose
CHECKPOINT = "checkpoints/last.ckpt"


def default_run_dir(recipe: Recipe) -> Path:
    """``runs/<recipe>-<time>``, shared with DDP children through ``FW_RUN_DIR``."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe.name}-{stamp}"


def batches(
    dataset: Dataset,
    batch_size: int | None,
    seed: int,
    start: int,
    stop: int,
    fabric: Any,
    num_workers: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """The device batches of steps ``start..stop``, the same whether or not the run resumed."""
    if batch_size is None:
        full = _to_device(load_all(dataset), fabric.device)
        for _ in range(start, stop):
            yield full
        return
    n = len(dataset)  # type: ignore[arg-type]
    sampler = StepSampler(n, batch_size, seed, start, stop, fabric.global_rank, fabric.world_size)
    if isinstance(dataset, ArrayDataset):
        for step in range(start, stop):
            yield _to_device(gather(dataset, sampler.indices(step).tolist()), fabric.device)
        return
    loader = DataLoader(
        SeededItems(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_batched,
    )
    yield from fabric.setup_dataloaders(loader, use_distributed_sampler=False)


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
    """First Ctrl-C or SIGTERM asks the loop to stop at the next step boundary; a second aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = int(signal.SIGINT)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def agreed(self, fabric: Any) -> bool:
        """True when any process asked to stop (all ranks stop at the same step)."""
        if fabric.world_size == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=fabric.device)
        return bool(fabric.all_reduce(flag, reduce_op="max") > 0)


def _fabric(recipe: Recipe) -> Any:
    from lightning_fabric import Fabric

    cfg = recipe.trainer
    _check_trainer(cfg)
    keys = ("accelerator", "devices", "strategy", "precision", "num_nodes")
    settings = {k: getattr(cfg, k) for k in keys}
    try:
        return Fabric(**settings)
    except Exception as err:  # lightning's own refusal of a combination of settings
        given = " ".join(f"trainer.{k}={v}" for k, v in settings.items())
        raise RecipeError(f"lightning-fabric refuses {given}: {err}") from err


def _check_trainer(cfg: TrainerConfig) -> None:
    """Refuse trainer settings lightning-fabric cannot use, naming the key and the choices."""
    from lightning_fabric.accelerators import ACCELERATOR_REGISTRY as accelerators
    from lightning_fabric.plugins.precision import precision
    from lightning_fabric.strategies import STRATEGY_REGISTRY

    choices = {
        "accelerator": ("auto", "cpu", "gpu", *sorted(accelerators.available_accelerators())),
        "strategy": ("auto", *STRATEGY_REGISTRY.available_strategies()),
        "precision": typing.get_args(precision._PRECISION_INPUT_STR)
        + typing.get_args(precision._PRECISION_INPUT_STR_ALIAS),
    }
    for key, allowed in choices.items():
        if str(getattr(cfg, key)) not in allowed:
            raise RecipeError(
                f"trainer.{key}: unknown value {getattr(cfg, key)!r}; choose one of "
                f"{', '.join(allowed)}"
            )
    wanted = ("cuda", "mps") if cfg.accelerator == "gpu" else (cfg.accelerator,)
    usable = [
        a for a in wanted if a in accelerators and accelerators[a]["accelerator"].is_available()
    ]
    if cfg.accelerator not in ("auto", "cpu") and not usable:
        raise RecipeError(
            f"trainer.accelerator={cfg.accelerator}: no {'/'.join(wanted).upper()} device on this "
            "machine; use trainer.accelerator=cpu (or auto)"
        )
    devices = str(cfg.devices).strip("[]").replace(" ", "")
    if not (devices in ("auto", "-1") or devices.replace(",", "").isdigit()) or devices == "0":
        raise RecipeError(
            f"trainer.devices={cfg.devices!r}: give a number of devices >= 1, -1 (all), 'auto' "
            "or device ids such as '0,1'"
        )


def train(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    resume: bool = False,
    registry: Registry | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Build the recipe's learner and data, train, evaluate; return the final metrics."""
    return fit(recipe, run_dir, resume, registry, overwrite)[0]


def fit(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    resume: bool = False,
    registry: Registry | None = None,
    overwrite: bool = False,
) -> tuple[dict[str, float], Learner]:
    """`train`, also returning the trained learner (for in-process use, `fw.run`)."""
    registry = registry or get_registry()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    child = os.environ.get(RUN_DIR_ENV) == str(run_dir) and os.environ.get("LOCAL_RANK")
    # DDP children launched below inherit the directory; a later run in this process must not
    previous = os.environ.get(RUN_DIR_ENV)
    try:
        with contextlib.nullcontext() if child else locked(run_dir):  # one writer per run
            _check_run_dir(recipe, run_dir, resume, overwrite)
            os.environ[RUN_DIR_ENV] = str(run_dir)
            return _fit_in(recipe, run_dir, resume, registry)
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def _fit_in(
    recipe: Recipe, run_dir: Path, resume: bool, registry: Registry
) -> tuple[dict[str, float], Learner]:
    if recipe.trainer.reuse_memory:  # fewer page faults, higher peak RSS (fw.memory)
        reuse_freed_memory()
    # a run inside a run (a stage another learner trains) restores its caller's threads, flushing
    threads, flushing = torch.get_num_threads(), float(torch.full((1,), 1e-39) * 1.0) == 0.0
    if recipe.trainer.threads:
        torch.set_num_threads(recipe.trainer.threads)
    # set_flush_denormal returns False where the CPU cannot flush them
    flush = recipe.trainer.flush_denormal
    flushed = torch.set_flush_denormal(flush) and flush
    try:
        return _train_loop(recipe, run_dir, resume, registry, flushed)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)


def _train_loop(
    recipe: Recipe, run_dir: Path, resume: bool, registry: Registry, flushed: bool
) -> tuple[dict[str, float], Learner]:
    ckpt_path = run_dir / CHECKPOINT
    fabric = _fabric(recipe)
    fabric.launch()
    fabric.seed_everything(recipe.seed, verbose=False)
    rank0 = fabric.is_global_zero
    data = build("dataset", recipe.raw["data"], registry)
    eval_spec = recipe.raw.get("eval_data")
    eval_data = build("dataset", eval_spec, registry) if eval_spec else data
    learner: Learner = build("learner", recipe.raw["learner"], registry, "learner")
    cfg = recipe.trainer
    if cfg.batch_size is not None:  # before setup: full-batch learners cache p in dataset order
        learner.batch_size = cfg.batch_size
    with _recipe_values("while looking at the data"):
        learner.setup(data)
        optim = Optimization.of(learner.configure_optimizers())
    model, *optimizers = fabric.setup(learner, *optim.optimizers)
    schedulers = optim.schedulers
    steps = total_steps(cfg, data, learner.batch_size, fabric.world_size)
    # only now: a run refused for its data or values leaves no empty directory behind
    if rank0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    fabric.barrier()

    start, spent, last = 0, 0.0, {}
    if resume:
        state = {"learner": learner, **_optim_state(optimizers, schedulers)}
        state.update(step=0, rng=None, extra={})
        try:
            rest = fabric.load(ckpt_path, state, weights_only=True)
        except Exception as err:  # truncated file, or the state of another learner
            raise FwError(
                f"--resume: cannot restore {ckpt_path}: {why(err)}. It is truncated or was "
                "written by another recipe; run again with --overwrite to start afresh."
            ) from err
        _load_schedulers(schedulers, state)
        start, spent, last = int(state["step"]), rest.get("seconds", 0.0), rest.get("last", {})
        _set_rng_state(state["rng"])
        learner.load_extra_state(state["extra"])

    def save(step: int) -> None:
        state = {
            "learner": learner,
            **_optim_state(optimizers, schedulers),
            "step": step,
            "rng": _rng_state(),
            "extra": learner.extra_state(),
            "seconds": time.perf_counter() - t0,  # training time summed over resumes
            "last": last,
        }
        tmp = ckpt_path.with_suffix(".tmp")
        fabric.save(tmp, state)
        if rank0:
            durable(tmp)
            os.replace(tmp, ckpt_path)
        fabric.barrier()

    logger = MetricLogger(run_dir, recipe, enabled=rank0, resume_step=start)
    bar = _progress(cfg.progress and rank0, steps, start, recipe.name)
    t0 = time.perf_counter() - spent
    stream = batches(data, learner.batch_size, recipe.seed, start, steps, fabric, cfg.num_workers)
    with StopRequest() as stop, bar:  # the bar closes first, so an error gets its own line
        for step, batch in zip(range(start, steps), stream, strict=False):
            with fabric.autocast():
                out = model(batch, step)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FwError(
                    f"the loss became {loss.item()} at step {step}; lower the learning rate or "
                    "check the recipe's distributions (p and q must share candidates)"
                )
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            done = step + 1
            if done % max(cfg.log_every, 1) == 0 or done == steps:
                last = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v)}
                logger.log(done, last)
                shown = {"loss": last["loss"], **({"kl": last["kl"]} if "kl" in last else {})}
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})  # kl: an estimate
            bar.update(1)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                save(done)
            if stop.agreed(fabric) and done < steps:
                bar.close()
                save(done)
                raise Interrupted(
                    f"interrupted after step {done}; checkpoint saved to {ckpt_path}. Continue "
                    f"with `fw run <recipe> --out {run_dir} --resume`.",
                    stop.signum,
                )
    bar.close()
    save(steps)
    elapsed = time.perf_counter() - t0

    final: dict[str, float] = {}
    if rank0:
        if cfg.evaluate:
            with _recipe_values("while evaluating (the checkpoint is saved)"):
                final = learner.evaluate(eval_data, run_dir)
        final.update({f"final_{k}": v for k, v in last.items()})
        final["steps"] = float(steps)
        final["train_seconds"] = elapsed
        final["flush_denormal"] = float(flushed)
        write_text(run_dir / "metrics.json", json.dumps(final, indent=2) + "\n")
        logger.log(steps, final, split="eval")
    logger.finish(final)
    fabric.barrier()
    return final, learner


def total_steps(cfg: TrainerConfig, data: Any, batch_size: int | None, world_size: int = 1) -> int:
    """Steps of the run: ``ceil(epochs·N / global batch)``, at most ``max_steps`` if given."""
    if cfg.epochs is None:
        return DEFAULT_STEPS if cfg.max_steps is None else cfg.max_steps
    if cfg.epochs <= 0:
        raise RecipeError("trainer.epochs=0 trains nothing: give epochs > 0 (or max_steps=0)")
    try:
        n = len(data)
    except TypeError as err:
        raise FwError(
            f"trainer.epochs needs a dataset with a known length; {type(data).__name__} has "
            "none. Set trainer.epochs=null and trainer.max_steps instead."
        ) from err
    per_step = n if batch_size is None else min(batch_size * world_size, n)
    steps = math.ceil(cfg.epochs * n / max(per_step, 1))
    return steps if cfg.max_steps is None else min(steps, cfg.max_steps)


def _message(err: BaseException) -> str:
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


@contextlib.contextmanager
def _recipe_values(when: str) -> Iterator[None]:
    """Turn a component's refusal of the recipe's values into an error naming what to fix."""
    try:
        yield
    except FwError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise FwError(
            f"the learner rejected the recipe {when}: {_message(err)}. Fix the value under "
            "'learner' (or 'data') in the recipe or its override."
        ) from err
    except RuntimeError as err:
        if "allocate" not in str(err):
            raise
        raise FwError(
            f"the recipe asks for more memory than this machine has ({when}); lower the sizes "
            "under 'learner' or 'trainer' (batch_size, dimensions)"
        ) from err


def _check_run_dir(recipe: Recipe, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to lose a run: resume needs its checkpoint and recipe; a finished run stays."""
    ckpt_path = run_dir / CHECKPOINT
    saved = run_dir / "recipe.yaml"
    if resume and overwrite:
        raise FwError("--resume and --overwrite contradict each other; pass one of them")
    if resume:
        if not ckpt_path.exists():
            raise FwError(
                f"--resume: no checkpoint at {ckpt_path}. "
                + (
                    "The run stopped before its first checkpoint (trainer.checkpoint_every=0 "
                    "saves only on Ctrl-C, SIGTERM and at the end): start it again with "
                    "--overwrite, with trainer.checkpoint_every=N to survive a kill."
                    if saved.exists()
                    else "Pass the --out directory of the run (it holds checkpoints/last.ckpt)."
                )
            )
        before: dict[str, Any] = {}
        if saved.exists():
            before = result_settings(yaml.safe_load(saved.read_text(encoding="utf-8")) or {})
            now = result_settings(recipe.raw)
            changed = [
                k for k in ("seed", "data", "eval_data", "learner") if before.get(k) != now.get(k)
            ]
            if changed:
                raise FwError(
                    f"--resume: {run_dir} holds a run of another recipe (its {', '.join(changed)} "
                    f"differ; see {saved}). Resume with that recipe, or use another --out."
                )
        budget = ("max_steps", "epochs")  # a finished run resumed with more steps goes on
        same_budget = all(
            before.get("trainer", {}).get(k) == recipe.raw.get("trainer", {}).get(k) for k in budget
        )
        if (run_dir / "metrics.json").exists() and same_budget:
            raise FwError(f"--resume: {run_dir} holds a finished run; nothing was changed")
        return
    if os.environ.get(RUN_DIR_ENV) == str(run_dir) and os.environ.get("LOCAL_RANK"):
        return  # a DDP child of the process that already checked (and cleared) the directory
    finished = (run_dir / "metrics.json").exists()
    if (finished or ckpt_path.exists()) and not overwrite:
        what = "a finished run" if finished else "an interrupted run (continue it with --resume)"
        raise FwError(
            f"{run_dir} holds {what}; pass --overwrite to replace it, or choose another --out"
        )
    if overwrite:
        for stale in (run_dir / "metrics.json", run_dir / "metrics.jsonl", ckpt_path):
            stale.unlink(missing_ok=True)


def _optim_state(optimizers: list[Any], schedulers: list[Any]) -> dict[str, Any]:
    """Checkpoint entries of the optimizers (Fabric restores them in place) and schedulers."""
    state: dict[str, Any] = {f"optimizer{i or ''}": o for i, o in enumerate(optimizers)}
    state["schedulers"] = [s.state_dict() for s in schedulers]
    return state


def _load_schedulers(schedulers: list[Any], state: dict[str, Any]) -> None:
    saved = state.get("schedulers") or []
    if len(saved) != len(schedulers):
        raise FwError(
            f"the checkpoint holds {len(saved)} learning-rate scheduler(s), the learner has "
            f"{len(schedulers)}: it was written by another recipe"
        )
    for scheduler, sd in zip(schedulers, saved, strict=True):
        scheduler.load_state_dict(sd)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _progress(enabled: bool, total: int, initial: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)
