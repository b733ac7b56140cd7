"""The periodic table of representation learning (Hamilton, PhD thesis, Fig. 8.1).

Columns are supervisory p families, rows learned q families. Plugins declare the methods they
reproduce — and the named gaps of that figure — with the ``fw_table_cells`` hook, a list of
:class:`Cell`. The families come from what is registered, so a third-party distribution of a
new family adds a row or a column.

Every cell says how it runs, and `fw table` reports it honestly:

- ``recipe``: a file under ``recipes/``; runnable when the file exists and validates against
  the loaded plugins;
- ``p_name``/``q_name`` (+ ``p_params``/``q_params``) without a recipe: a generic recipe is
  generated (`generic_recipe`); runnable when it validates;
- neither (e.g. a distribution nobody implements yet): listed, marked "not runnable yet".
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from fw.errors import FwError
from fw.recipe import DEFAULT_STEPS, dump_yaml
from fw.registry import Registry

#: The families of the table (I-Con, Fig. 1): columns are supervisory p, rows learned q.
P_FAMILIES: tuple[str, ...] = (
    "Gaussian",
    "Student-T",
    "Identity",
    "Graph Kernel Weights",
    "Uniform over K-Neighbors",
    "Uniform over Positive Pairs",
    "Cross-Modal Pairs",
    "Uniform over Classes",
    "Data-Label Pairs",
)
Q_FAMILIES: tuple[str, ...] = (
    "Gaussian",
    "Gaussian σ→∞",
    "Gaussian σ→0",
    "Student-T",
    "Uniform on Clusters",
)
CLUSTER_FAMILY = "Uniform on Clusters"

CATEGORIES: dict[str, str] = {  # legend colours of the thesis's Fig. 8.1
    "Dimensionality Reduction": "#9ecae1",
    "Cluster Learning": "#fdae6b",
    "Unimodal SSL": "#bcbddc",
    "Multimodal SSL": "#fbb4ae",
    "Supervised Learning": "#a1d99b",
    "Gap": "#e0e0e0",
}

#: Short column / row labels for the text table (unknown families are clipped instead).
SHORT: dict[str, str] = {
    "Gaussian": "Gaussian",
    "Student-T": "Student-T",
    "Identity": "Identity",
    "Graph Kernel Weights": "Graph",
    "Uniform over K-Neighbors": "kNN",
    "Uniform over Positive Pairs": "Pos. pairs",
    "Cross-Modal Pairs": "X-modal",
    "Uniform over Classes": "Classes",
    "Data-Label Pairs": "Data-label",
    "Gaussian σ→∞": "Gaussian σ→∞",
    "Gaussian σ→0": "Gaussian σ→0",
    "Uniform on Clusters": "Clusters",
}


@attrs.frozen
class Cell:
    """A method (or a named gap) at one (p family, q family) position of the table.

    ``recipe`` is a file under ``recipes/`` that runs it; without one, ``p_name``/``q_name``
    (registered distribution names, with ``p_params``/``q_params``) let `fw table --recipe`
    generate a generic recipe. ``note`` says what is missing when neither exists.
    ``scales`` names variants of the cell's recipe as dotted overrides (e.g. ``"sparse"``: the
    large-data form of a kernel cell), built by ``fw table --recipe CELL --scale NAME``.
    """

    method: str
    p_family: str
    q_family: str
    category: str
    citation: str = ""
    recipe: str | None = None
    p_name: str | None = None
    q_name: str | None = None
    gap: bool = False
    note: str = ""
    p_params: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)
    q_params: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)
    plugin: str = ""
    scales: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict, converter=dict, hash=False)


@attrs.frozen
class RecipeTemplate:
    """How a plugin's learner runs any (p, q) cell whose p belongs to ``p_families``.

    ``recipe`` is a whole recipe in which the values ``"{p}"`` and ``"{q}"`` stand for the two
    distributions and ``"{dim}"`` for the output width the q asks for (its ``table_dim``, 2 by
    default). An empty ``p_families`` is the fallback for every family no other template
    claims. ``refuse`` instead says why such cells have no generic recipe (e.g. two modalities).
    Plugins return templates from ``fw_table_cells`` beside their cells.
    """

    recipe: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)
    p_families: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    refuse: str = ""
    plugin: str = ""


@attrs.frozen
class Status:
    """Whether a cell can be trained, and how (``recipe``, ``generic``) or why not."""

    runnable: bool
    how: str  # "recipe" | "generic" | "missing" | "invalid" | "unavailable"
    detail: str


@attrs.frozen
class Table:
    """Columns, rows, and the cells at each position."""

    columns: list[str]
    rows: list[str]
    cells: dict[tuple[str, str], list[Cell]]  # (q row, p column) -> cells
    templates: list[RecipeTemplate] = attrs.field(factory=list)

    def methods(self) -> list[Cell]:
        """Every declared cell, known methods first, then gaps; in table order within each."""
        order = {(r, c): k for k, (r, c) in enumerate(self.cells)}
        every = [c for cs in self.cells.values() for c in cs]
        return sorted(every, key=lambda c: (c.gap, order[(c.q_family, c.p_family)]))


def _families(registry: Registry) -> tuple[list[str], list[str]]:
    columns, rows = list(P_FAMILIES), list(Q_FAMILIES)
    for entry in registry.entries("distribution"):
        factory = entry.factory
        family = getattr(factory, "family", "")
        role = getattr(factory, "role", "either")
        if not family or not isinstance(family, str):
            continue
        if role in ("supervisory", "either") and family not in columns:
            columns.append(family)
        if role in ("learned", "either") and family not in rows:
            rows.append(family)
    return columns, rows


def build_table(registry: Registry) -> Table:
    """Collect the declared cells of every loaded plugin into a table.

    A method declared twice at the same position (two plugins that both reproduce it) is
    listed once: the declaration with a recipe wins, else the first one.
    """
    columns, rows = _families(registry)
    cells: dict[tuple[str, str], list[Cell]] = {(r, c): [] for r in rows for c in columns}
    templates: list[RecipeTemplate] = []
    for plugin, declared in registry.hook_results("fw_table_cells"):
        for cell in declared or []:
            if isinstance(cell, RecipeTemplate):
                templates.append(attrs.evolve(cell, plugin=plugin))
                continue
            if not isinstance(cell, Cell):
                raise FwError(
                    f"plugin '{plugin}' returned {cell!r} from fw_table_cells; return a list of "
                    "fw_table.table.Cell and fw_table.table.RecipeTemplate"
                )
            cell = attrs.evolve(cell, plugin=plugin)
            key = (cell.q_family, cell.p_family)
            if key not in cells:
                raise FwError(
                    f"plugin '{plugin}' puts '{cell.method}' at p='{cell.p_family}', "
                    f"q='{cell.q_family}', which is not a family of any registered distribution"
                )
            same = [k for k, c in enumerate(cells[key]) if _norm(c.method) == _norm(cell.method)]
            if same:
                if cell.recipe and not cells[key][same[0]].recipe:
                    cells[key][same[0]] = cell
                continue
            cells[key].append(cell)
    return Table(columns, rows, cells, templates)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_cell(table: Table, query: str) -> Cell:
    """A cell by method name (case and punctuation ignored; a unique prefix also matches)."""
    wanted = _norm(query)
    every = table.methods()
    for cell in every:
        if _norm(cell.method) == wanted:
            return cell
    starts = [c for c in every if _norm(c.method).startswith(wanted)] if wanted else []
    if len(starts) == 1:
        return starts[0]
    names = ", ".join(c.method for c in every)
    raise FwError(f"no method named '{query}' in the table; known: {names}")


def recipes_dir() -> Path:
    """Where recipe files live: ``$FW_RECIPES``, ``./recipes``, or the source checkout's."""
    if os.environ.get("FW_RECIPES"):
        return Path(os.environ["FW_RECIPES"])
    here = Path.cwd() / "recipes"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "recipes"


# ----------------------------------------------------------------------------- recipes


def _component(factory: Any, name: str, role: str, params: Mapping[str, Any] | None) -> dict:
    """``{name, **params}``; without params, the ones the distribution declares for ``role``."""
    declared = (getattr(factory, "table_params", None) or {}).get(role, {})
    return {"name": name, **(params or declared)}


def _fill(value: Any, slots: Mapping[str, Any]) -> Any:
    """A template with its ``"{slot}"`` values replaced."""
    if isinstance(value, str) and value in slots:
        return copy.deepcopy(slots[value])
    if isinstance(value, Mapping):
        return {k: _fill(v, slots) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, slots) for v in value]
    return value


def _template(family: str, registry: Registry) -> RecipeTemplate:
    templates = build_table(registry).templates
    claimed = [t for t in templates if family in t.p_families]
    chosen = claimed or [t for t in templates if not t.p_families]
    if not chosen:
        raise FwError(
            f"no installed plugin declares a recipe template for p family '{family}' "
            "(fw_table.table.RecipeTemplate from fw_table_cells)"
        )
    return chosen[0]


def generic_recipe(
    p_name: str,
    q_name: str,
    registry: Registry,
    p_params: Mapping[str, Any] | None = None,
    q_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A runnable recipe for any (p, q) pair, from the template a plugin declares for p's family.

    The q's class may declare ``table_dim`` (the width its mapper must output, e.g. one logit
    per cluster) and ``table_learner`` (learner entries it needs, e.g. a bounded mapper for the
    σ→∞ limit), merged into the template's learner where the template has those keys.
    """
    p_factory = registry.get("distribution", p_name).factory
    q_factory = registry.get("distribution", q_name).factory
    family = getattr(p_factory, "family", "")
    template = _template(family, registry)
    if template.refuse:
        raise FwError(f"p '{p_name}' ({family}): {template.refuse}")
    slots = {
        "{p}": _component(p_factory, p_name, "p", p_params),
        "{q}": _component(q_factory, q_name, "q", q_params),
        "{dim}": getattr(q_factory, "table_dim", None) or 2,
    }
    raw = _fill(template.recipe, slots)
    learner = raw["learner"]
    for key, value in (getattr(q_factory, "table_learner", None) or {}).items():
        if key not in learner:
            continue  # the template's learner has no such entry (e.g. no mapper)
        current = learner[key]
        same = isinstance(current, Mapping) and value.get("name", current.get("name")) == (
            current.get("name")
        )
        learner[key] = {**current, **value} if same else copy.deepcopy(dict(value))
    raw["description"] = f"generic I-Con cell: p={p_name}, q={q_name} (generated by `fw table`)"
    return raw


def cell_recipe_dict(cell: Cell, registry: Registry) -> dict[str, Any]:
    """The raw recipe mapping of a cell (its file, or the generic one); raises if none."""
    if cell.recipe:
        path = recipes_dir() / cell.recipe
        if not path.is_file():
            raise FwError(f"'{cell.method}' names recipe {path}, which does not exist (yet)")
        from fw.recipe import read_recipe_file

        raw, _ = read_recipe_file(path)
        return raw
    if cell.p_name and cell.q_name:
        return generic_recipe(
            cell.p_name, cell.q_name, registry, p_params=cell.p_params, q_params=cell.q_params
        )
    raise FwError(
        f"'{cell.method}' is not runnable yet: {cell.note or 'no recipe and no registered p/q'}"
    )


def status(cell: Cell, registry: Registry) -> Status:
    """Can this cell be trained with the loaded plugins? (Validates its recipe.)"""
    from fw.recipe import load_recipe, recipe_from_dict

    try:
        if cell.recipe:
            path = recipes_dir() / cell.recipe
            if not path.is_file():
                return Status(False, "missing", f"recipe {cell.recipe} does not exist yet")
            load_recipe(path, registry=registry)
            return Status(True, "recipe", f"recipes/{cell.recipe}")
        if cell.p_name and cell.q_name:
            recipe_from_dict(cell_recipe_dict(cell, registry), registry)
            return Status(True, "generic", f"generic recipe (p={cell.p_name}, q={cell.q_name})")
    except FwError as exc:
        first = str(exc).strip().splitlines()[0]
        return Status(False, "invalid", first)
    return Status(False, "unavailable", cell.note or "no recipe and no registered p/q")


def scaled_recipe(cell_name: str, scale: str, registry: Registry) -> str:
    """YAML text of a cell's recipe with the overrides of its ``scale`` variant applied."""
    from fw.recipe import apply_overrides, recipe_from_dict

    cell = find_cell(build_table(registry), cell_name)
    if scale not in cell.scales:
        having = sorted(c.method for c in build_table(registry).methods() if scale in c.scales)
        raise FwError(
            f"--scale: cell '{cell.method}' has no '{scale}' variant; cells with one: "
            f"{', '.join(having) or 'none'}"
        )
    raw = apply_overrides(cell_recipe_dict(cell, registry), cell.scales[scale])
    raw.pop("extends", None)
    raw["description"] = f"{cell.method}, scale '{scale}' ({', '.join(cell.scales[scale])})"
    recipe_from_dict(raw, registry)  # fail here, not at `fw run`
    return dump_yaml(raw)


def cell_recipe(cell_or_pair: str, registry: Registry) -> str:
    """YAML text of a runnable recipe for a method name or a ``p_name,q_name`` pair."""
    if "," in cell_or_pair:
        p_name, q_name = (s.strip() for s in cell_or_pair.split(",", 1))
        # a declared cell with exactly this pair lends its parameters
        declared = [
            c
            for c in build_table(registry).methods()
            if c.p_name == p_name and c.q_name == q_name and not c.recipe
        ]
        p_params = declared[0].p_params if declared else None
        q_params = declared[0].q_params if declared else None
        raw = generic_recipe(p_name, q_name, registry, p_params=p_params, q_params=q_params)
        from fw.recipe import recipe_from_dict

        recipe_from_dict(raw, registry)  # fail here, not at `fw run`
        return dump_yaml(raw)
    cell = find_cell(build_table(registry), cell_or_pair)
    if cell.recipe:
        path = recipes_dir() / cell.recipe
        if not path.is_file():
            raise FwError(f"'{cell.method}' names recipe {path}, which does not exist (yet)")
        return path.read_text()
    raw = cell_recipe_dict(cell, registry)
    return dump_yaml(raw)


def smoke_recipe(
    raw: Mapping[str, Any],
    dataset: str,
    steps: int | None = 20,
    limit: int | None = 512,
) -> dict[str, Any]:
    """A copy of a recipe that trains ``steps`` steps on (the first ``limit``) ``dataset``.

    ``steps=None`` keeps the recipe's own ``max_steps``; ``limit=None`` the whole dataset.
    A recipe already on ``dataset`` keeps its dataset options (e.g. the digits' two modalities
    or side embedding); any other dataset is replaced by a plain ``dataset``.
    Progress bars and plots are off, logging is sparse, and every ``batch_size`` of the learner
    that exceeds ``limit`` is lowered to it (tests and `bench/table_sweep.py` use this).
    """
    out = copy.deepcopy(dict(raw))
    own = dict(out.get("data") or {})
    data: dict[str, Any] = own if own.get("name") == dataset else {"name": dataset}
    if limit is not None:
        data["limit"] = limit
    out["data"] = data
    out.pop("eval_data", None)
    trainer = dict(out.get("trainer") or {})
    if steps is not None:
        trainer["max_steps"] = steps
    trainer["progress"] = False
    # one record at the end (a validated recipe holds max_steps: null when it gives epochs)
    trainer["log_every"] = max(1, int(trainer.get("max_steps") or DEFAULT_STEPS))
    if limit is not None and isinstance(trainer.get("batch_size"), int):
        trainer["batch_size"] = min(trainer["batch_size"], limit)
    out["trainer"] = trainer
    learner = dict(out["learner"])
    if limit is not None and isinstance(learner.get("batch_size"), int):
        learner["batch_size"] = min(learner["batch_size"], limit)
    if "plot" in learner:
        learner["plot"] = False
    out["learner"] = learner
    return out


# ----------------------------------------------------------------------------- rendering


def _short(family: str, width: int = 12) -> str:
    text = SHORT.get(family, family)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_text(table: Table, registry: Registry | None = None) -> str:
    """The table as text: a grid of numbered cells, then one line per method and gap."""
    every = table.methods()
    number = {id(c): k + 1 for k, c in enumerate(every)}
    states = {id(c): status(c, registry) for c in every} if registry is not None else {}

    def entry(cell: Cell) -> str:
        mark = "" if not states or states[id(cell)].runnable else "*"
        text = f"{number[id(cell)]}{mark}"
        return f"({text})" if cell.gap else text

    head = ["q \\ p"] + [_short(c) for c in table.columns]
    grid = [head]
    for row in table.rows:
        line = [_short(row, 14)]
        for col in table.columns:
            line.append(" ".join(entry(c) for c in table.cells[(row, col)]) or "·")
        grid.append(line)
    widths = [max(len(r[k]) for r in grid) for k in range(len(head))]
    lines = ["I-Con periodic table: rows = learned q(j|i), columns = supervisory p(j|i)", ""]
    for k, r in enumerate(grid):
        lines.append(" | ".join(text.ljust(w) for text, w in zip(r, widths, strict=True)))
        if k == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines.append("")
    lines.append("(n) = named gap (a predicted method); * = not runnable yet; · = empty cell")
    lines.append("")

    def shown(cell: Cell) -> str:
        return f"{cell.method} (gap)" if cell.gap else cell.method

    name_w = min(40, max(len(shown(c)) for c in every)) if every else 10
    pq_w = max((len(_short(c.p_family)) + len(_short(c.q_family)) + 3 for c in every), default=9)
    for cell in every:
        num = f"{number[id(cell)]:>2}."
        name = shown(cell)
        pq = f"{_short(cell.p_family)} × {_short(cell.q_family)}"
        cite = f" [{cell.citation}]" if cell.citation else ""
        if states:
            st = states[id(cell)]
            run = st.detail if st.runnable else f"not runnable yet: {st.detail}"
        else:
            run = f"recipes/{cell.recipe}" if cell.recipe else (cell.note or "")
        lines.append(f"{num} {name:<{name_w}} {pq:<{pq_w}} {run}{cite}")
    known = sum(1 for c in every if not c.gap)
    gaps = sum(1 for c in every if c.gap)
    runnable = sum(1 for s in states.values() if s.runnable)
    summary = f"{known} methods and {gaps} named gaps"
    if states:
        summary += f"; {runnable} of {len(every)} runnable with the installed plugins"
    lines.append("")
    lines.append(summary)
    return "\n".join(lines)


def cell_summary(table: Table) -> list[dict[str, Any]]:
    """Cells as plain dicts (for benchmarks and JSON output)."""
    return [attrs.asdict(c) for c in table.methods()]
