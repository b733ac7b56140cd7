"""The periodic table drawn as a coloured grid (categories, or a value per method)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from fw.lib.plots import pyplot, save_figure
from fw.registry import Registry
from fw_table.table import CATEGORIES, Table, status


def periodic_table(
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
