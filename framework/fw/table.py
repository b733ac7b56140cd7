"""The periodic table of representation learning (seed 000, Fig. 8.1; spec icon.md §3).

Columns are supervisory p families, rows learned q families. Plugins declare the methods they
reproduce — and the named gaps of spec §3.2 — with the ``fw_table_cells`` hook, a list of
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

import argparse
import copy
import os
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from fw import api
from fw.errors import FwError
from fw.registry import Registry

CATEGORIES: dict[str, str] = {  # legend colours of seed 000 Fig. 8.1 / seed 002
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

#: Parameters a generic recipe gives a distribution that cannot run on its defaults.
DEFAULT_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("gaussian", "p"): {"perplexity": 30},
    ("gaussian", "q"): {"sigma": 0.7071067811865476},  # SNE's q: exp(-||z_i - z_j||²)
    ("data_label", "p"): {"num_classes": 10},
    ("prototype_softmax", "q"): {"num_classes": 10, "dim": 16},
    ("triplet", "q"): {"positives": "labels"},
}

#: p families whose points are views of a sample: the generic recipe needs a view learner.
VIEW_FAMILIES = ("Uniform over Positive Pairs",)
#: p families that need data with two modalities (their recipes are written by hand).
MODAL_FAMILIES = ("Cross-Modal Pairs",)
#: q families whose loss is unbounded below for an unconstrained mapper (the σ→∞ limit is
#: cohesion − 2·Var): their generic recipe projects orthonormally instead, when available.
BOUNDED_MAPPER = {"Gaussian σ→∞": {"name": "orthonormal_projection", "dim": 2}}


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

    def methods(self) -> list[Cell]:
        """Every declared cell, known methods first, then gaps; in table order within each."""
        order = {(r, c): k for k, (r, c) in enumerate(self.cells)}
        every = [c for cs in self.cells.values() for c in cs]
        return sorted(every, key=lambda c: (c.gap, order[(c.q_family, c.p_family)]))


def _families(registry: Registry) -> tuple[list[str], list[str]]:
    columns, rows = list(api.P_FAMILIES), list(api.Q_FAMILIES)
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
    for plugin, declared in registry.hook_results("fw_table_cells"):
        for cell in declared or []:
            if not isinstance(cell, Cell):
                raise FwError(
                    f"plugin '{plugin}' returned {cell!r} from fw_table_cells; return a list of "
                    "fw.table.Cell"
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
    return Table(columns, rows, cells)


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


def _component(name: str, role: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{name, **params}``; a distribution given no params gets its `DEFAULT_PARAMS`."""
    return {"name": name, **(params or DEFAULT_PARAMS.get((name, role), {}))}


def generic_recipe(
    p_name: str,
    q_name: str,
    registry: Registry,
    dataset: str = "digits",
    p_params: Mapping[str, Any] | None = None,
    q_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A runnable recipe for any (p, q) pair.

    The generic ``icon`` learner with an MLP mapper (10 cluster logits for a cluster q, else a
    2-D embedding; an orthonormal linear projection for the σ→∞ q, see `BOUNDED_MAPPER`),
    except for p families whose points are views of a sample (positive pairs): those need the
    view learner ``contrastive`` when a plugin provides it. Cross-modal p needs two modalities
    and has no generic recipe.
    """
    p_factory = registry.get("distribution", p_name).factory
    q_factory = registry.get("distribution", q_name).factory
    p_family = getattr(p_factory, "family", "")
    clusters = getattr(q_factory, "family", "") == api.CLUSTER_FAMILY
    p_spec = _component(p_name, "p", p_params)
    q_spec = _component(q_name, "q", q_params)
    dim = 10 if clusters else 2
    if p_family in MODAL_FAMILIES:
        raise FwError(
            f"p '{p_name}' ({p_family}) pairs points of two modalities, which the generic recipe "
            "does not make; start from recipes/clip_digits.yaml (the digits' top and bottom "
            "halves as two modalities) and set its learner.q"
        )
    if p_family in VIEW_FAMILIES:
        if "contrastive" not in registry.names("learner"):
            raise FwError(
                f"p '{p_name}' ({p_family}) pairs views of a sample, which the generic 'icon' "
                "learner does not make; install a plugin with a view learner ('contrastive')"
            )
        learner: dict[str, Any] = {
            "name": "contrastive",
            "p": p_spec,
            "q": q_spec,
            "backbone": {"name": "mlp", "dim": 64, "hidden": [256]},
            "head": {"name": "mlp", "dim": dim, "hidden": [128]},
            "views": 2,
            "augment": "digits",
            "batch_size": 128,
            "optimizer": {"name": "adam", "lr": 1e-3},
        }
    else:
        mapper: dict[str, Any] = {"name": "mlp", "dim": dim, "hidden": [256]}
        lr = 1e-3
        bounded = BOUNDED_MAPPER.get(getattr(q_factory, "family", ""))
        if bounded is not None and bounded["name"] in registry.names("featurizer"):
            mapper, lr = dict(bounded), 0.05
        learner = {
            "name": "icon",
            "p": p_spec,
            "q": q_spec,
            "mapper": mapper,
            "batch_size": 256,
            "optimizer": {"name": "adam", "lr": lr},
        }
    return {
        "description": f"generic I-Con cell: p={p_name}, q={q_name} (generated by `fw table`)",
        "seed": 0,
        "data": {"name": dataset},
        "learner": learner,
        "trainer": {"max_steps": 500, "log_every": 50},
    }


def cell_recipe_dict(cell: Cell, registry: Registry) -> dict[str, Any]:
    """The raw recipe mapping of a cell (its file, or the generic one); raises if none."""
    if cell.recipe:
        path = recipes_dir() / cell.recipe
        if not path.is_file():
            raise FwError(f"'{cell.method}' names recipe {path}, which does not exist (yet)")
        from fw.recipe import _load_with_extends

        raw, _ = _load_with_extends(path)
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
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None)


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
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None)
    cell = find_cell(build_table(registry), cell_or_pair)
    if cell.recipe:
        path = recipes_dir() / cell.recipe
        if not path.is_file():
            raise FwError(f"'{cell.method}' names recipe {path}, which does not exist (yet)")
        return path.read_text()
    raw = cell_recipe_dict(cell, registry)
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None)


def smoke_recipe(
    raw: Mapping[str, Any],
    steps: int | None = 20,
    limit: int | None = 512,
    dataset: str = "digits",
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
    trainer["log_every"] = max(1, int(trainer.get("max_steps", 1000)))
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


def render_png(
    table: Table,
    path: Path,
    values: Mapping[str, float] | None = None,
    value_label: str = "",
    registry: Registry | None = None,
    title: str | None = None,
) -> Path:
    """Draw the table as a coloured grid.

    Without ``values`` cells are coloured by category (gaps grey, names in italics; a † marks
    methods that are not runnable yet when a registry is given). With ``values`` (method name
    -> number, e.g. accuracy per cell) each method shows its number and the cell is coloured by
    the best value in it (a heatmap; cells without a value stay white).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch, Rectangle

    from fw.plots import pyplot, save_figure

    plt = pyplot()
    n_rows, n_cols = len(table.rows), len(table.columns)
    cell_w, cell_h = 1.75, 1.25
    fig_w, fig_h = cell_w * n_cols + 2.3, cell_h * n_rows + 2.6
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=120)
    cmap = colormaps["viridis"]
    norm = Normalize(vmin=0.0, vmax=1.0)
    runnable = {}
    if registry is not None:
        runnable = {id(c): status(c, registry).runnable for c in table.methods()}
    for r, row in enumerate(table.rows):
        for c, col in enumerate(table.columns):
            cells = table.cells[(row, col)]
            y0 = n_rows - 1 - r
            ax.add_patch(
                Rectangle((c, y0), 1, 1, facecolor="white", edgecolor="#444444", linewidth=0.7)
            )
            slot = 1.0 / max(len(cells), 1)
            for k, x in enumerate(cells):  # one horizontal band per method, top to bottom
                top = y0 + 1 - k * slot
                score = values.get(x.method) if values is not None else None
                if values is not None:
                    colour = cmap(norm(score)) if score is not None else "white"
                else:
                    colour = CATEGORIES["Gap"] if x.gap else CATEGORIES.get(x.category, "white")
                ax.add_patch(
                    Rectangle(
                        (c, top - slot),
                        1,
                        slot,
                        facecolor=colour,
                        edgecolor="#888888",
                        linewidth=0.3,
                    )
                )
                label = "\n".join(textwrap.wrap(x.method, 18)) or x.method
                if values is not None:
                    label += f"\n{score:.2f}" if score is not None else "\n–"
                elif runnable and not runnable.get(id(x), True):
                    label += " †"
                dark = score is not None and norm(score) < 0.55
                ax.text(
                    c + 0.5,
                    top - slot * 0.42,
                    label,
                    ha="center",
                    va="center",
                    fontsize=7.5 if len(cells) < 3 else 6.5,
                    style="italic" if x.gap else "normal",
                    color="white" if dark else "black",
                    linespacing=1.05,
                )
                if x.citation and values is None:
                    cite = textwrap.shorten(x.citation, 30, placeholder="…")
                    ax.text(
                        c + 0.5,
                        top - slot * 0.42 - 0.045 * (label.count("\n") + 1) - 0.05,
                        cite,
                        ha="center",
                        va="center",
                        fontsize=5.5,
                        color="#333333",
                    )
    ax.set_xlim(0, n_cols)
    ax.set_ylim(0, n_rows)
    ax.set_xticks([c + 0.5 for c in range(n_cols)])
    ax.set_xticklabels(["\n".join(textwrap.wrap(col, 14)) for col in table.columns], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([n_rows - 0.5 - r for r in range(n_rows)])
    ax.set_yticklabels(["\n".join(textwrap.wrap(row, 12)) for row in table.rows], fontsize=8)
    ax.set_xlabel("supervisory p(j|i)", fontsize=9)
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("learned q(j|i)", fontsize=9)
    for side in ax.spines.values():
        side.set_visible(False)
    if values is None:
        handles = [
            Patch(facecolor=v, edgecolor="#444444", label=k if k != "Gap" else "Gap (italics)")
            for k, v in CATEGORIES.items()
        ]
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.02),
            ncol=3,
            fontsize=8,
            frameon=False,
        )
        if runnable:
            fig.text(0.99, 0.01, "† not runnable yet", ha="right", fontsize=7)
    else:
        bar = fig.colorbar(
            ScalarMappable(norm=norm, cmap=cmap),
            ax=ax,
            orientation="horizontal",
            fraction=0.04,
            pad=0.03,
        )
        bar.set_label(value_label or "value", fontsize=8)
    default = "The I-Con periodic table (registered methods and named gaps)"
    ax.set_title(title or default, fontsize=11, pad=34)
    return save_figure(fig, Path(path))


def main(args: argparse.Namespace, registry: Registry) -> int:
    """`fw table`: print (and optionally draw) the table, or write a cell's recipe."""
    if getattr(args, "scale", None) and not args.recipe:
        raise FwError("--scale needs --recipe CELL (the cell whose recipe it scales)")
    if args.recipe:
        scale = getattr(args, "scale", None)
        text = (
            scaled_recipe(args.recipe, scale, registry)
            if scale
            else cell_recipe(args.recipe, registry)
        )
        if args.out:
            Path(args.out).write_text(text)
            print(f"wrote {args.out}")
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return 0
    table = build_table(registry)
    print(render_text(table, registry))
    if args.png:
        print(f"wrote {render_png(table, Path(args.png), registry=registry)}")
    return 0


def cell_summary(table: Table) -> list[dict[str, Any]]:
    """Cells as plain dicts (for benchmarks and JSON output)."""
    return [attrs.asdict(c) for c in table.methods()]
