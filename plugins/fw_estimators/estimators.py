"""The estimators: t-SNE, SNE, any I-Con learner, the default clusterer and k-Means as I-Con.

Each is a recipe (`fw_estimators.base`): its parameters are keys of the recipe named by
``recipe_file`` and ``fit`` trains that recipe with `fw.run`, so an estimator and ``fw run`` on
the same recipe give the same result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from fw.recipe import read_recipe_file
from fw_estimators.base import KEEP, RECIPES, EstimatorError, Param, RecipeEstimator
from fw_estimators.transform import transform_points
from fw_sne.fused import radial_kernel


def _tuple(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


def _list(value: Any) -> list[int]:
    return [int(v) for v in value]


def _component(value: Any) -> Any:
    """A component parameter: None keeps the base recipe's, a name or a mapping replaces it."""
    if value is None:
        return KEEP
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" in value:
        return dict(value)
    raise EstimatorError(
        f"a component parameter must be None, a registered name or a mapping with 'name' "
        f"(e.g. {{'name': 'gaussian', 'perplexity': 30}}), got {value!r}"
    )


#: openTSNE 1.0's ``transform`` defaults (see `fw_estimators.transform`)
TRANSFORM_PARAMS: dict[str, Param] = {
    "transform_perplexity": Param((), default=5.0),
    "transform_k": Param((), default=25),
    "transform_iter": Param((), default=250),
    "transform_learning_rate": Param((), default=0.1),
    "transform_exaggeration": Param((), default=1.5),
    "transform_repulsion": Param((), default="auto"),
}


class _Embedder(TransformerMixin, RecipeEstimator):
    """``fit``/``fit_transform``/``transform`` for learners whose output is an embedding."""

    def fit(self, X: Any, y: Any = None) -> _Embedder:
        """Train the recipe on ``X`` [n_samples, n_features]; ``y`` is ignored."""
        self._fit_recipe(X)
        return self

    def _after_load(self) -> None:
        mapper = self.learner_.mapper
        self.parametric_ = getattr(mapper, "input_key", "x") != "index"
        self.embedding_ = self._infer(self.train_x_, index=True)
        self.n_iter_ = int(self.metrics_.get("steps", 0))

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit`` and return the training points' embedding ``[n_samples, n_components]``."""
        return self.fit(X, y).embedding_

    def transform(self, X: Any) -> np.ndarray:
        """New points in the fitted map: the mapper's output, or each point optimised alone
        against the fixed map (non-parametric embeddings; `fw_estimators.transform`)."""
        check_is_fitted(self, "learner_")
        x = self._validate(X, reset=False)
        if self.parametric_:
            return self._infer(x)
        kernel = radial_kernel(self.learner_.q)
        if kernel is None:
            raise EstimatorError(
                f"transform of an embedding table needs a radial q ('student_t' or a gaussian "
                f"with 'sigma'), got {type(self.learner_.q).__name__}; use a parametric mapper"
            )
        return transform_points(
            x,
            self.train_x_,
            torch.from_numpy(self.embedding_),
            kernel,
            perplexity=self.transform_perplexity,
            k=self.transform_k,
            n_iter=self.transform_iter,
            learning_rate=self.transform_learning_rate,
            exaggeration=self.transform_exaggeration,
            repulsion=self.transform_repulsion,
        )

    def _check_data(self, x: np.ndarray) -> None:
        dim = getattr(self, "n_components", None)
        init = getattr(self, "init", None)
        if init == "pca" and dim is not None and dim > min(x.shape):
            raise EstimatorError(
                f"init='pca' takes {dim} principal components (n_components) but the data has "
                f"{x.shape[0]} samples and {x.shape[1]} feature(s); lower n_components or use "
                "init='random'"
            )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


_MAP = {
    "n_components": Param(("learner.mapper.dim",)),
    "perplexity": Param(("learner.p.perplexity",), float, float),
    "learning_rate": Param(("learner.optimizer.lr",)),
    "init": Param(("learner.mapper.init",)),
}


class TSNE(_Embedder):
    """t-SNE as I-Con (``recipes/tsne_digits.yaml``); ``method='fft'`` is the scalable one.

    ``method``: ``'exact'`` (dense p, exact gradients, O(N²) memory) or ``'fft'`` (sparse p on
    the 3·perplexity nearest neighbours and openTSNE's FFT repulsion, O(N), for large N).
    ``transform`` places new points as openTSNE does (``transform_*`` parameters).
    """

    recipe_file = "tsne_digits.yaml"
    params = {  # noqa: RUF012 - read by RecipeEstimator.__init_subclass__
        **_MAP,
        "early_exaggeration": Param(
            ("learner.exaggeration", "learner.optimizer.early_exaggeration"), float, float
        ),
        "early_exaggeration_iter": Param(
            ("learner.exaggeration_steps", "learner.optimizer.momentum_switch_step")
        ),
        "method": Param(("learner.repulsion",)),
        "knn_index": Param(("learner.p.knn_index",), default="auto"),
        **TRANSFORM_PARAMS,
    }

    def _adjust(self, raw: dict[str, Any]) -> None:
        super()._adjust(raw)
        if self.method not in ("exact", "fft"):
            raise EstimatorError(f"method={self.method!r}: give 'exact' or 'fft'")
        if self.method == "fft":
            raw["learner"]["p"]["scale"] = "sparse"


class SNE(_Embedder):
    """SNE (Hinton & Roweis 2002) as I-Con (``recipes/sne_digits.yaml``)."""

    recipe_file = "sne_digits.yaml"
    params = {  # noqa: RUF012
        **_MAP,
        "early_exaggeration": Param(
            ("learner.exaggeration", "learner.optimizer.early_exaggeration"), float, float
        ),
        "early_exaggeration_iter": Param(("learner.exaggeration_steps",)),
        **TRANSFORM_PARAMS,
    }


#: the generic learner's base recipe for `ICon`
ICON_BASE: dict[str, Any] = {
    "seed": 0,
    "learner": {
        "name": "icon",
        "p": {"name": "gaussian", "perplexity": 30.0},
        "q": {"name": "student_t"},
        "mapper": {"name": "mlp", "dim": 2, "hidden": [256]},
        "optimizer": {"name": "adam", "lr": 0.001},
        "batch_size": None,
        "direction": "forward",
        "exaggeration": 1.0,
        "exaggeration_steps": 0,
    },
    "trainer": {"max_steps": 500},
}


class ICon(_Embedder):
    """Any I-Con learner: registered p, q and mapper by name (or a mapping with parameters).

    ``p``/``q``/``mapper``/``optimizer`` = None keep the base recipe's (`ICON_BASE`): a
    perplexity-30 Gaussian p, a Student-t q and a 2-D MLP mapper trained with Adam on the full
    batch (a parametric t-SNE with conditional normalisation); ``transform`` is the mapper.
    """

    recipe_file = "<ICON_BASE>"

    @classmethod
    def base_recipe(cls) -> dict[str, Any]:
        import copy

        return copy.deepcopy(ICON_BASE)

    params = {  # noqa: RUF012
        "p": Param(("learner.p",), _component, default=None),
        "q": Param(("learner.q",), _component, default=None),
        "mapper": Param(("learner.mapper",), _component, default=None),
        "optimizer": Param(("learner.optimizer",), _component, default=None),
        "batch_size": Param(("learner.batch_size",)),
        "direction": Param(("learner.direction",)),
        "exaggeration": Param(("learner.exaggeration",), float, float),
        "exaggeration_steps": Param(("learner.exaggeration_steps",)),
        **TRANSFORM_PARAMS,
    }


class _Clusterer(ClusterMixin, RecipeEstimator):
    """``fit``/``fit_predict``/``predict`` for learners whose output is cluster logits."""

    def fit(self, X: Any, y: Any = None) -> _Clusterer:
        """Train the recipe on ``X`` [n_samples, n_features]; ``y`` is ignored."""
        self._fit_recipe(X)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The cluster of each point: the argmax of the learned cluster logits."""
        check_is_fitted(self, "learner_")
        return self._logits(self._validate(X, reset=False)).argmax(axis=1)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self._infer(x)

    def _after_load(self) -> None:
        self.labels_ = self._logits(self.train_x_).argmax(axis=1)
        self.n_iter_ = int(self.metrics_.get("steps", 0))


class KMeans(_Clusterer):
    """K-Means as I-Con (``recipes/kmeans_digits.yaml``): Gaussian p × cluster kernel q."""

    recipe_file = "kmeans_digits.yaml"
    params = {  # noqa: RUF012
        "n_clusters": Param(("learner.clusters",)),
        "perplexity": Param(("learner.p.perplexity",), float, float),
        "n_init": Param(("learner.restarts",)),
        "hidden": Param(("learner.mapper.hidden",), _list, _tuple),
        "batch_size": Param(("learner.batch_size",)),
        "learning_rate": Param(("learner.optimizer.lr",)),
        "max_iter": Param(("trainer.max_steps", "learner.restart_steps")),
    }


_STAGE, _ = read_recipe_file(RECIPES / "tsne_fashion_mnist.yaml")


def _stage_name(spec: dict[str, Any]) -> str:
    """The directory the ``chained`` dataset of ``spec`` keeps its stage in (its cache key)."""
    import json

    from fw.recipe import load_recipe, settings_digest

    overrides = [f"data={json.dumps(spec['data'])}", *spec.get("overrides", [])]
    overrides.append(f"seed={int(spec['seed'])}")  # the default clusterer pins the stage seed
    inner = load_recipe(RECIPES / spec["recipe"], overrides)
    return f"{inner.name}-{settings_digest(inner.raw)}"


class IConClustering(_Clusterer):
    """The default I-Con clusterer (``recipes/icon_clustering.yaml``): scalable t-SNE, then heads.

    Stage 1 embeds the data with ``recipes/tsne_fashion_mnist.yaml`` (its ``perplexity`` and
    ``embed_iter`` are parameters here); stage 2 trains the debiased clustering heads on that
    embedding. ``predict`` of new points places them in the stage-1 map (`TSNE.transform`'s
    procedure), then applies the selected head.
    """

    recipe_file = "icon_clustering.yaml"
    params = {  # noqa: RUF012
        "n_clusters": Param(("learner.clusters",)),
        "heads": Param(("learner.heads",)),
        "hidden": Param(("learner.hidden",), _list, _tuple),
        "knn_k": Param(("learner.knn_k",)),
        "batch_size": Param(("learner.batch_size",)),
        "learning_rate": Param(("learner.optimizer.lr",)),
        "epochs": Param(("trainer.epochs",)),
        "perplexity": Param((), default=float(_STAGE["learner"]["p"]["perplexity"])),
        "embed_iter": Param((), default=int(_STAGE["trainer"]["max_steps"])),
        **TRANSFORM_PARAMS,
    }

    def _adjust(self, raw: dict[str, Any]) -> None:
        if int(self.n_clusters) < 2:
            raise EstimatorError(f"n_clusters={self.n_clusters}: the clusterer needs at least 2")

    def _check_data(self, x: np.ndarray) -> None:
        if x.shape[1] < 2:
            raise EstimatorError(
                f"the stage-1 t-SNE starts from 2 principal components; the data has "
                f"{x.shape[1]} feature(s)"
            )

    def _data_spec(self, path: Path) -> dict[str, Any]:
        spec = dict(self.base_recipe()["data"])
        spec["data"] = {"name": "arrays", "path": str(path), "label": None}
        spec["overrides"] = [
            f"learner.p.perplexity={float(self.perplexity)}",
            f"trainer.max_steps={int(self.embed_iter)}",
            "learner.plot=false",
            f"trainer.progress={str(bool(self.verbose)).lower()}",
        ]
        spec["cache_dir"] = str(path.parent / "stages")
        return spec

    def _relocate(self, raw: dict[str, Any], data_path: Path) -> None:
        """Point the recipe at the saved data and write the stage-1 run where it is looked up."""
        import yaml

        from fw.recipe import dump_yaml

        spec = raw["data"]
        spec["data"] = {**spec["data"], "path": str(data_path)}
        spec["cache_dir"] = str(data_path.parent / "stages")
        stage = Path(spec["cache_dir"]) / _stage_name(spec)
        for rel, blob in self._stage_files_.items():
            if rel == "recipe.yaml":  # the stage's own recipe names the data file too
                stage_raw = yaml.safe_load(blob.decode("utf-8"))
                stage_raw["data"]["path"] = str(data_path)
                blob = dump_yaml(stage_raw).encode("utf-8")
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_bytes(blob)

    def _after_load(self) -> None:
        from fw.recipe import build
        from fw.registry import get_registry
        from fw.runs import load_run

        data = build("dataset", self.recipe_["data"], get_registry(), "data")
        self.train_z_ = data.tensors["z"].float().numpy()
        stage = Path(data.meta["chained"]["z"])
        self.embedder_ = load_run(stage).cpu().eval()
        # the stage's files, for `save` (a fit without run_dir deletes its directory)
        self._stage_files_ = {
            f.relative_to(stage).as_posix(): f.read_bytes()
            for f in sorted(stage.rglob("*"))
            if f.is_file() and f.suffix in (".yaml", ".ckpt", ".json", ".pt")
        }
        super()._after_load()

    @torch.no_grad()
    def _logits(self, x: np.ndarray) -> np.ndarray:
        if x is self.train_x_:
            z = self.train_z_
        else:
            kernel = radial_kernel(self.embedder_.q)
            y_train = self.embedder_.infer({"index": torch.arange(len(self.train_x_))})
            z = transform_points(
                x,
                self.train_x_,
                y_train,
                kernel,  # type: ignore[arg-type]
                perplexity=self.transform_perplexity,
                k=self.transform_k,
                n_iter=self.transform_iter,
                learning_rate=self.transform_learning_rate,
                exaggeration=self.transform_exaggeration,
                repulsion=self.transform_repulsion,
            )
        return self.learner_.infer({"z": torch.from_numpy(np.ascontiguousarray(z))}).numpy()
