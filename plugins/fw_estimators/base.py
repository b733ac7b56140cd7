"""The recipe behind every estimator: parameters are dotted recipe keys, ``fit`` is `fw.run`.

An estimator class names a base recipe (a file under ``recipes/``, or a mapping) and a table
``params`` of scikit-learn parameters, each the recipe keys it sets. Its ``__init__`` (and so
``get_params``/``set_params``) is generated from that table, with the defaults read from the
base recipe: the recipe is the one source of truth. ``fit`` writes the data as a ``.npz`` file,
points an ``arrays`` dataset at it, and trains the recipe with `fw.run` (the same loop, seeding
and checkpoints as ``fw run``), in a temporary directory or in ``run_dir`` when given, which then
holds a run directory that `fw.load_run` and ``Estimator.load`` read back.
"""

from __future__ import annotations

import copy
import inspect
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from fw.errors import DataError, FwError
from fw.files import save, write_text
from fw.recipe import dump_yaml, read_recipe_file

#: the recipes shipped with fw (estimators take their defaults from them)
RECIPES = Path(__file__).resolve().parents[2] / "recipes"
#: the training points of an estimator's run, next to its recipe.yaml
DATA_FILE = "data.npz"
#: the estimator class and parameters of a run written by an estimator
ESTIMATOR_FILE = "estimator.json"

_FROM_RECIPE = object()
#: what a `Param.to_recipe` returns to leave the base recipe's value in place
KEEP = object()


class EstimatorError(FwError, ValueError):
    """A parameter or input an estimator cannot use; names the parameter and the fix."""


def _same(value: Any) -> Any:
    return value


@attrs.frozen
class Param:
    """An estimator parameter: the recipe keys it sets and how its value is written there.

    ``to_recipe`` maps the estimator's value to the recipe's; ``from_recipe`` maps it back (the
    default, and the parameters of a loaded run). ``default`` overrides the recipe's value.
    """

    paths: tuple[str, ...]
    to_recipe: Callable[[Any], Any] = _same
    from_recipe: Callable[[Any], Any] = _same
    default: Any = _FROM_RECIPE

    def default_in(self, raw: Mapping[str, Any]) -> Any:
        """The estimator's default: ``default``, else the base recipe's value at ``paths[0]``."""
        if self.default is not _FROM_RECIPE:
            return self.default
        value = get_path(raw, self.paths[0])
        return self.from_recipe(schema_default(raw, self.paths[0]) if value is None else value)


def get_path(raw: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted key (None when absent)."""
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def schema_default(raw: Mapping[str, Any], path: str) -> Any:
    """The default of a key the recipe leaves out: its factory's (learner) or the trainer's."""
    from fw.recipe import TrainerConfig
    from fw.recipe.checker import factory_params
    from fw.registry import get_registry

    top, _, rest = path.partition(".")
    if top == "trainer" and "." not in rest:
        fields = {f.name: f.default for f in attrs.fields(TrainerConfig)}
        return fields.get(rest)
    if top == "learner" and "." not in rest:
        factory = get_registry().get("learner", raw["learner"]["name"]).factory
        param = factory_params(factory).get(rest)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return None


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted key, creating the mappings on the way."""
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _seed(value: Any) -> int:
    """A recipe seed from ``random_state`` (None or a RandomState: a seed drawn from it)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return int(check_random_state(value).randint(np.iinfo(np.int32).max))


def _accelerator(device: str) -> str:
    """``trainer.accelerator`` for a torch-style device name."""
    name = str(device).split(":")[0]
    if name not in ("cpu", "cuda", "gpu", "mps", "auto"):
        raise EstimatorError(f"device={device!r}: give 'cpu', 'cuda' (or 'gpu'), 'mps' or 'auto'")
    return "gpu" if name == "cuda" else name


def _device(accelerator: str) -> str:
    return "cuda" if accelerator == "gpu" else str(accelerator)


#: the parameters of every estimator
COMMON: dict[str, Param] = {
    "max_iter": Param(("trainer.max_steps",)),
    "random_state": Param(("seed",), to_recipe=_seed, default=None),
    "device": Param(("trainer.accelerator",), _accelerator, _device, default="cpu"),
    "verbose": Param(("trainer.progress",), bool, bool, default=False),
}


def as_array(X: Any) -> Any:
    """A torch tensor as a numpy array (scikit-learn's validation takes the rest)."""
    if torch.is_tensor(X):
        return X.detach().cpu().numpy()
    return X


class RecipeEstimator(BaseEstimator):
    """Base of the estimators: the recipe from the parameters, ``fit`` through `fw.run`."""

    #: the base recipe: a file name under ``recipes/``
    recipe_file: ClassVar[str]
    #: scikit-learn parameter -> the recipe keys it sets (besides `COMMON` and ``run_dir``)
    params: ClassVar[dict[str, Param]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params" not in cls.__dict__:
            return
        table = cls.param_table()
        base = cls.base_recipe()
        defaults = {name: spec.default_in(base) for name, spec in table.items()}
        defaults["run_dir"] = None

        def __init__(self: RecipeEstimator, **given: Any) -> None:
            unknown = sorted(set(given) - set(defaults))
            if unknown:
                raise TypeError(
                    f"{type(self).__name__} got unknown parameters {unknown}; its parameters "
                    f"are {sorted(defaults)}"
                )
            for name, default in defaults.items():
                setattr(self, name, given.get(name, default))

        kw = inspect.Parameter.KEYWORD_ONLY
        __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(name, kw, default=value) for name, value in defaults.items()]
        )
        __init__.__doc__ = f"Parameters and defaults of ``{cls.recipe_file}``: " + ", ".join(
            f"{name}={value!r}" for name, value in defaults.items()
        )
        cls.__init__ = __init__  # type: ignore[method-assign]

    # -- the recipe -------------------------------------------------------------------------

    @classmethod
    def base_recipe(cls) -> dict[str, Any]:
        """The base recipe's resolved mapping (``extends`` merged, no description)."""
        raw, _ = read_recipe_file(RECIPES / cls.recipe_file)
        raw.pop("description", None)
        return raw

    @classmethod
    def param_table(cls) -> dict[str, Param]:
        """Every parameter but ``run_dir`` with the recipe keys it sets."""
        return {**cls.params, **{k: v for k, v in COMMON.items() if k not in cls.params}}

    def recipe(self, data: dict[str, Any], n_samples: int | None = None) -> dict[str, Any]:
        """The recipe this estimator trains on ``data`` (a dataset spec of ``n_samples``)."""
        raw = self.base_recipe()
        for name, spec in self.param_table().items():
            value = spec.to_recipe(getattr(self, name))
            if value is KEEP:
                continue
            for path in spec.paths:
                set_path(raw, path, copy.deepcopy(value))
        raw["data"] = data
        self._adjust(raw)
        batch = raw["learner"].get("batch_size")
        if n_samples is not None and isinstance(batch, int) and batch > n_samples:
            raw["learner"]["batch_size"] = n_samples  # as MiniBatchKMeans: at most the data
        return raw

    def _adjust(self, raw: dict[str, Any]) -> None:
        """Estimator-specific edits of the recipe (no plots: nobody looks at them)."""
        raw["learner"]["plot"] = False

    def _data_spec(self, path: Path) -> dict[str, Any]:
        return {"name": "arrays", "path": str(path), "label": None}

    # -- fitting ----------------------------------------------------------------------------

    def _validate(self, X: Any, reset: bool) -> np.ndarray:
        return validate_data(
            self, as_array(X), reset=reset, dtype=np.float32, ensure_min_samples=2 if reset else 1
        )

    def _fit_recipe(self, X: Any) -> None:
        """Train the recipe on ``X``; sets ``learner_``, ``metrics_``, ``recipe_``, ``run_dir_``."""
        import fw

        x = self._validate(X, reset=True)
        self._check_data(x)
        keep = self.run_dir is not None
        run_dir = Path(self.run_dir) if keep else Path(tempfile.mkdtemp(prefix="fw-estimator-"))
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            np.savez(run_dir / DATA_FILE, x=x)
            raw = self.recipe(self._data_spec((run_dir / DATA_FILE).resolve()), len(x))
            result = fw.run(raw, out=run_dir, overwrite=True)
            self.learner_ = result.learner.cpu().eval()
            self.metrics_ = dict(result.metrics)
            self.recipe_ = raw
            self.run_dir_ = run_dir if keep else None
            self.train_x_ = x
            self._after_load()  # while the run's files exist
            if keep:
                self._write_estimator_file(run_dir)
        finally:
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _check_data(self, x: np.ndarray) -> None:
        """Refuse data the recipe cannot use, naming the parameter (subclasses add checks)."""

    def _write_estimator_file(self, run_dir: Path) -> None:
        params = {k: v for k, v in self.get_params().items() if k != "run_dir"}
        info = {"class": type(self).__name__, "params": params}
        if hasattr(self, "feature_names_in_"):
            info["feature_names_in"] = [str(c) for c in self.feature_names_in_]
        write_text(run_dir / ESTIMATOR_FILE, json.dumps(info, indent=2, default=str) + "\n")

    # -- saving and loading -----------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator as a run directory (`fw.load_run` and `load` read it)."""
        check_is_fitted(self, "learner_")
        out = Path(path)
        if (out / "recipe.yaml").exists() and out.resolve() != _resolved(self.run_dir_):
            raise EstimatorError(f"save: {out} already holds a run; choose another directory")
        if self.run_dir_ is not None and out.resolve() == Path(self.run_dir_).resolve():
            return out
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        np.savez(out / DATA_FILE, x=self.train_x_)
        raw = copy.deepcopy(self.recipe_)
        self._relocate(raw, (out / DATA_FILE).resolve())
        write_text(out / "recipe.yaml", dump_yaml(raw))
        state = {"learner": self.learner_.state_dict(), "extra": self.learner_.extra_state()}
        save(state, out / "checkpoints" / "last.ckpt")
        write_text(out / "metrics.json", json.dumps(self.metrics_, indent=2) + "\n")
        self._write_estimator_file(out)
        return out

    def _relocate(self, raw: dict[str, Any], data_path: Path) -> None:
        raw["data"]["path"] = str(data_path)

    @classmethod
    def load(cls, run_dir: str | Path) -> RecipeEstimator:
        """A fitted estimator from a run directory written by ``fit(run_dir=...)`` or ``save``."""
        import yaml

        import fw

        run_dir = Path(run_dir)
        info_path = run_dir / ESTIMATOR_FILE
        if not info_path.is_file():
            raise DataError(
                f"{run_dir} was not written by an fw estimator ({info_path} is missing); "
                "rebuild its learner with fw.load_run instead"
            )
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("class") != cls.__name__:
            raise DataError(f"{run_dir} holds a {info.get('class')}, not a {cls.__name__}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in info["params"].items()}
        est = cls(**{**params, "run_dir": str(run_dir)})
        est.learner_ = fw.load_run(run_dir).cpu().eval()
        est.recipe_ = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        est.metrics_ = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        est.run_dir_ = run_dir
        with np.load(run_dir / DATA_FILE) as archive:
            est.train_x_ = archive["x"]
        est.n_features_in_ = int(est.train_x_.shape[1])
        if "feature_names_in" in info:
            est.feature_names_in_ = np.asarray(info["feature_names_in"], dtype=object)
        est._after_load()
        return est

    def _after_load(self) -> None:
        """Rebuild fitted attributes that are not in the checkpoint (subclasses)."""

    # -- outputs ----------------------------------------------------------------------------

    @torch.no_grad()
    def _infer(self, x: np.ndarray, index: bool = False) -> np.ndarray:
        """The learner's output on points (``index``: the training points by position)."""
        batch = {"x": torch.from_numpy(np.ascontiguousarray(x)), "index": torch.arange(len(x))}
        if not index:
            batch.pop("index")
        return self.learner_.infer(batch).float().numpy()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def _resolved(path: Any) -> Path | None:
    return None if path is None else Path(path).resolve()
