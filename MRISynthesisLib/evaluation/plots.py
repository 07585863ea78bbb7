"""The evaluation's box plots: SSIM (the protocol's main SSIM, tumour, healthy) per target and Dice per region,
one box per stage with the data points on top. Figures use matplotlib's object API with the Agg
canvas, so no global backend is touched."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Sequence as TypingSequence

import numpy as np

from .rows import (PAPER_NAMES, PAPER_ORDER, PAPER_REGIONS, STAGE_NAMES, finite_values, has_segmentation,
                   reported_stages)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["STAGE_COLOURS", "save_boxplots"]

#: Box colour of each stage.
STAGE_COLOURS: Dict[str, str] = {"stage1": "#7f9fc6", "final": "#d9822b", "acquired": "#6a9f58"}


def _boxes(axes, groups: list, stages: TypingSequence, rows: list, value_of) -> None:
    """Grouped box plots (one box per stage within each group) with the data points on top."""
    width = 0.8 / len(stages)
    rng = np.random.default_rng(0)  # fixed jitter, so figures are reproducible
    for offset, stage in enumerate(stages):
        data, positions = [], []
        for index, group in enumerate(groups):
            values = finite_values(value_of(r, group) for r in rows if r["stage"] == stage)
            if values.size:
                data.append(values)
                positions.append(index + (offset - (len(stages) - 1) / 2) * width)
        if not data:
            continue
        parts = axes.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True,
                             showfliers=False, medianprops={"color": "black"})
        for box in parts["boxes"]:
            box.set_facecolor(STAGE_COLOURS[stage])
            box.set_alpha(0.85)
        for position, values in zip(positions, data):
            jitter = rng.uniform(-width * 0.2, width * 0.2, values.size)
            axes.plot(position + jitter, values, "o", color="black", markersize=3, alpha=0.6)
        axes.plot([], [], "s", color=STAGE_COLOURS[stage], markersize=9, label=STAGE_NAMES[stage])
    axes.set_xticks(range(len(groups)))
    axes.grid(axis="y", alpha=0.3)


def _new_figure(width: float, height: float) -> "Figure":
    """A ``width`` x ``height`` inch figure at 100 dpi on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _figure_legend(figure, entries: int) -> None:
    """One legend for the whole figure, under the axes, so it never hides data."""
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=entries, fontsize=9, frameon=False)
    figure.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))


def save_boxplots(rows: list, folder: Path, refiner: bool = True) -> list:
    """``ssim_boxplot.png`` (SSIM whole/tumour/healthy per target) and, with Dice rows,
    ``dice_boxplot.png`` (Dice per region); returns the paths written.

    The first SSIM panel is the rows' protocol's main SSIM: over the brain (``ssim``, brain protocol) or
    over the whole volume (``ssim_whole``, brasyn protocol).
    """
    from ..core.result_files import png_metadata
    from ..metrics.protocols import main_ssim_key
    from .tables import rows_protocol

    folder = Path(folder)
    stages = reported_stages(refiner)
    figure = _new_figure(13.5, 4.2)
    targets = [s for s in PAPER_ORDER if any(r["target"] == s.value for r in rows)]
    protocol = rows_protocol(rows)
    main_title = "SSIM whole volume (BraSyn)" if protocol == "brasyn" else "SSIM whole brain"
    titles = {main_ssim_key(protocol): main_title, "ssim_tumour": "SSIM tumour region",
              "ssim_healthy": "SSIM healthy region"}
    for index, key in enumerate(titles):
        axes = figure.add_subplot(1, 3, index + 1)
        _boxes(axes, [s.value for s in targets], stages, rows,
               lambda row, group, key=key: row.get(key) if row["target"] == group else None)
        axes.set_xticklabels([PAPER_NAMES[s] for s in targets])
        axes.set_title(titles[key])
        axes.set_xlabel("synthesised target")
        if index == 0:
            axes.set_ylabel("SSIM")
    figure.suptitle("Synthesis quality before and after refinement", fontsize=12)
    _figure_legend(figure, len(stages))
    paths = [folder / "ssim_boxplot.png"]
    figure.savefig(paths[0], metadata=png_metadata())
    if has_segmentation(rows):
        figure = _new_figure(7.5, 4.2)
        axes = figure.add_subplot(1, 1, 1)
        _boxes(axes, list(PAPER_REGIONS), stages + ("acquired",), rows,
               lambda row, group: row.get(f"dice_{group}"))
        axes.set_xticklabels(list(PAPER_REGIONS))
        axes.set_ylabel("Dice")
        axes.set_xlabel("tumour region")
        axes.set_ylim(-0.02, 1.02)
        axes.set_title("Segmenter on the completed set (all targets, all cases)")
        _figure_legend(figure, len(stages) + 1)
        paths.append(folder / "dice_boxplot.png")
        figure.savefig(paths[1], metadata=png_metadata())
    return paths
