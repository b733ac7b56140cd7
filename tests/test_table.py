"""The periodic table: declared cells, third-party families, recipes, and a smoke run per cell."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
import yaml

from fw import api, hookimpl
from fw.cli import main as fw_main
from fw.errors import FwError
from fw.recipe import recipe_from_dict
from fw.registry import get_registry
from fw.train import train
from fw_table.picture import periodic_table
from fw_table.table import (
    P_FAMILIES,
    Q_FAMILIES,
    Cell,
    build_table,
    cell_recipe,
    cell_recipe_dict,
    find_cell,
    recipes_dir,
    render_text,
    smoke_recipe,
    status,
)
from tests.support import toy_plugin

ROOT = Path(__file__).resolve().parents[1]

#: plugins whose ``cells.py`` the lead wires into ``plugin.py``; until then this shim declares them
CELL_MODULES = {"sne": "fw_sne.cells", "simclr": "fw_simclr.cells"}


class _UnwiredCells:
    """Declares the cells of plugins whose ``plugin.py`` has no ``fw_table_cells`` hook yet."""

    def __init__(self, pm) -> None:
        self.modules = []
        for plugin, module in CELL_MODULES.items():
            loaded = pm.get_plugin(plugin)
            if loaded is not None and not hasattr(loaded, "fw_table_cells"):
                self.modules.append(importlib.import_module(module))

    @hookimpl
    def fw_table_cells(self):
        return [cell for module in self.modules for cell in module.CELLS]


def _registry():
    base = get_registry(modules=[toy_plugin])
    return get_registry(modules=[toy_plugin, _UnwiredCells(base.pm)])


REGISTRY = _registry()
TABLE = build_table(REGISTRY)


@pytest.fixture(autouse=True)
def _recipes_here(monkeypatch):
    monkeypatch.setenv("FW_RECIPES", str(ROOT / "recipes"))


# ----------------------------------------------------------------------------- contents


def test_table_lists_at_least_20_methods_and_the_gaps():
    methods = [c for c in TABLE.methods() if not c.gap]
    gaps = [c for c in TABLE.methods() if c.gap]
    names = {c.method for c in methods}
    assert len(methods) >= 20, sorted(names)
    for expected in ("SNE", "t-SNE", "PCA", "K-Means", "Normalized Cuts", "DCD", "SimCLR"):
        assert expected in names
    gap_names = {c.method for c in gaps}
    for expected in ("Dual t-SNE", "t K-Means", "Supervised Clustering", "t-SupCon"):
        assert expected in gap_names
    assert TABLE.columns[: len(P_FAMILIES)] == list(P_FAMILIES)
    assert TABLE.rows[: len(Q_FAMILIES)] == list(Q_FAMILIES)
    text = render_text(TABLE, REGISTRY)
    for cell in TABLE.methods():
        assert cell.method in text
    assert f"{len(methods)} methods and {len(gaps)} named gaps" in text


def test_every_declared_family_is_a_registered_one():
    for cell in TABLE.methods():
        assert cell.p_family in TABLE.columns and cell.q_family in TABLE.rows
        for name in (cell.p_name, cell.q_name):
            if name is not None:
                REGISTRY.get("distribution", name)


class _Unimplemented:
    """Declares a method whose distribution nobody has written."""

    @hookimpl
    def fw_table_cells(self):
        return [
            Cell("Future Loss", "Data-Label Pairs", "Gaussian σ→0", "Gap", note="q99 is missing")
        ]


def test_unimplemented_methods_are_marked_not_runnable():
    registry = get_registry(modules=[toy_plugin, _Unimplemented()])
    table = build_table(registry)
    future = find_cell(table, "future loss")
    st = status(future, registry)
    assert not st.runnable and "q99" in st.detail
    line = next(x for x in render_text(table, registry).splitlines() if "Future Loss" in x)
    assert "not runnable yet" in line
    with pytest.raises(FwError, match="not runnable yet"):
        cell_recipe("Future Loss", registry)


@pytest.mark.parametrize(
    "method",
    [
        "CLIP",
        "CMC",
        "Average Margin CLIP",
        "Triplet CLIP",
        "t-CLIP",
        "Harmonic Loss",
        "X-Sample CL",
        "Error Rate",
    ],
)
def test_the_filled_cells_run_their_own_recipes(method):
    cell = find_cell(TABLE, method)
    st = status(cell, REGISTRY)
    assert st.runnable and st.how == "recipe", st.detail
    learner = yaml.safe_load(cell_recipe(method, REGISTRY)).get("learner", {})
    for role, name in (("p", cell.p_name), ("q", cell.q_name)):
        if role in learner:  # a recipe that extends another may inherit p
            assert learner[role]["name"] == name


def test_every_cell_is_runnable_with_the_built_in_plugins():
    missing = [c.method for c in TABLE.methods() if not status(c, REGISTRY).runnable]
    assert missing == []
    assert "not runnable yet:" not in render_text(TABLE, REGISTRY)


def test_a_smoke_recipe_keeps_its_digits_options():
    clip = smoke_recipe(cell_recipe_dict(find_cell(TABLE, "CLIP"), REGISTRY), "digits", limit=300)
    assert clip["data"] == {"name": "digits", "halves": True, "limit": 300}
    other = smoke_recipe(
        {"data": {"name": "fashion_mnist", "split": "train"}, "learner": {}}, "digits"
    )
    assert other["data"] == {"name": "digits", "limit": 512}


def test_modal_pairs_have_no_generic_recipe():
    with pytest.raises(FwError, match="clip_digits"):
        cell_recipe("cross_modal,student_t", REGISTRY)


class _ToyFamily(api.NeighborhoodDistribution):
    """A distribution of a family the built-in plugins do not have."""

    family = "Toy Family"
    role = "either"

    def log_prob(self, ctx):
        x = ctx[api.FEATURES]
        mask = ~torch.eye(len(x), dtype=torch.bool)
        return api.Neighborhood.from_logits(-torch.cdist(x, x), mask)


class _ThirdParty:
    @hookimpl
    def fw_distributions(self):
        return {"toy_family": _ToyFamily}

    @hookimpl
    def fw_table_cells(self):
        return [
            Cell(
                "Toy Method",
                "Toy Family",
                "Toy Family",
                "Gap",
                p_name="toy_family",
                q_name="toy_family",
                gap=True,
            )
        ]


def test_a_third_party_family_adds_a_row_and_a_column(tmp_path):
    registry = get_registry(modules=[toy_plugin, _ThirdParty()])
    table = build_table(registry)
    assert table.columns[-1] == "Toy Family" and table.rows[-1] == "Toy Family"
    (cell,) = table.cells[("Toy Family", "Toy Family")]
    assert cell.method == "Toy Method" and cell.plugin
    assert all(table.cells[("Toy Family", col)] == [] for col in table.columns[:-1])
    assert "Toy Family" in render_text(table, registry)
    assert status(cell, registry).runnable
    assert periodic_table(table, tmp_path / "t.png", registry=registry).stat().st_size > 10_000


def test_a_cell_outside_every_family_is_an_error():
    class Stray:
        @hookimpl
        def fw_table_cells(self):
            return [Cell("Nowhere", "No Such p", "Gaussian", "Gap")]

    with pytest.raises(FwError, match="not a family"):
        build_table(get_registry(modules=[Stray()]))


def test_a_method_declared_twice_is_listed_once():
    class Twice:
        @hookimpl
        def fw_table_cells(self):
            return [Cell("K-Means", "Gaussian", "Uniform on Clusters", "Cluster Learning")]

    table = build_table(get_registry(modules=[Twice()]))
    kmeans = [c for c in table.methods() if c.method == "K-Means"]
    assert len(kmeans) == 1 and kmeans[0].recipe == "kmeans_digits.yaml"


# ----------------------------------------------------------------------------- recipes


def test_recipe_of_a_method_is_its_file():
    cell = find_cell(TABLE, "t-SNE")
    path = recipes_dir() / cell.recipe
    if not path.is_file():
        pytest.skip(f"recipe {cell.recipe} of t-SNE does not exist yet")
    assert cell_recipe("t-SNE", REGISTRY) == path.read_text()
    assert cell_recipe("k means", REGISTRY) == (recipes_dir() / "kmeans_digits.yaml").read_text()


@pytest.mark.parametrize("pair", ["gaussian,cluster", "knn,student_t", "same_class,triplet"])
def test_recipe_of_a_pair_is_valid(pair):
    raw = yaml.safe_load(cell_recipe(pair, REGISTRY))
    p_name, q_name = pair.split(",")
    assert raw["learner"]["p"]["name"] == p_name and raw["learner"]["q"]["name"] == q_name
    recipe_from_dict(raw, REGISTRY)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(FwError, match="known: .*K-Means"):
        find_cell(TABLE, "no such method")


def test_cli_table_prints_draws_and_writes_recipes(tmp_path, capsys):
    assert fw_main(["table", "--png", str(tmp_path / "table.png")]) == 0
    out = capsys.readouterr().out
    assert "K-Means" in out and "named gaps" in out
    assert (tmp_path / "table.png").stat().st_size > 10_000
    assert fw_main(["table", "--recipe", "gaussian,cluster"]) == 0
    raw = yaml.safe_load(capsys.readouterr().out)
    assert raw["learner"]["q"]["name"] == "cluster"
    assert fw_main(["table", "--recipe", "K-Means", "--out", str(tmp_path / "k.yaml")]) == 0
    assert (tmp_path / "k.yaml").read_text() == (recipes_dir() / "kmeans_digits.yaml").read_text()


# ----------------------------------------------------------------------------- smoke runs


def _runs() -> list:
    """One parameter per distinct runnable recipe (cells sharing a recipe share the run)."""
    runs: dict[str, list[Cell]] = {}
    for cell in TABLE.methods():
        if cell.recipe:
            key = cell.recipe
        elif cell.p_name and cell.q_name:
            key = f"{cell.p_name},{cell.q_name},{sorted(cell.p_params.items())}"
            key += str(sorted(cell.q_params.items()))
        else:
            continue
        runs.setdefault(key, []).append(cell)
    params = []
    for cells in runs.values():
        ident = "+".join(c.method for c in cells)
        params.append(pytest.param(cells[0], id=ident))
    return params


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cell", _runs())
def test_every_runnable_cell_trains_20_steps_without_nan(cell, tmp_path):
    st = status(cell, REGISTRY)
    if st.how == "missing":
        pytest.skip(f"recipe {cell.recipe} of '{cell.method}' does not exist yet")
    if not st.runnable:
        pytest.skip(f"'{cell.method}' is not runnable with the installed plugins: {st.detail}")
    raw = smoke_recipe(cell_recipe_dict(cell, REGISTRY), "digits", steps=20, limit=300)
    final = train(recipe_from_dict(raw, REGISTRY), tmp_path / "run", registry=REGISTRY)
    assert math.isfinite(final["final_loss"])
    for key, value in final.items():
        assert not math.isnan(value), key


def test_a_smoke_recipe_of_an_epochs_recipe_logs_once():
    raw = cell_recipe_dict(find_cell(TABLE, "CLIP"), REGISTRY)
    raw["trainer"] = {**raw.get("trainer", {}), "max_steps": None, "epochs": 2.0}
    out = smoke_recipe(raw, "digits", steps=None, limit=300)  # keeps the recipe's own steps
    assert out["trainer"]["log_every"] == 1000  # no max_steps: the default step count
