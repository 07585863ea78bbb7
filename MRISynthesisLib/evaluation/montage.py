"""A one-picture summary of a synthesis: inputs, synthetic, ground truth and the maps, in 3 views.

Rows are axial, coronal and sagittal slices through the tumour centre (radiological
convention: the patient's right on the image's left) and an axial close-up, 80 mm square around
the tumour centre, in which cortical folding, vessels and enhancement are visible at the
montage's size (the whole-brain panels show about 1.3 pixels per mm); columns are the acquired inputs,
the synthetic volume, the hidden ground truth when there is one, the refinement map
(final - stage 1, diverging colours with symmetric limits), the tumour-region map over
the synthetic and, when the synthesis made one, the uncertainty map (viridis, from 0). Each grey-scale image is windowed to its own brain 0.5-99.5 percentiles.
Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global backend, so the
same code runs in the CLI, tests and inside 3D Slicer.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..core.io import resample_to, same_grid
from ..core.result_files import png_metadata
from ..sequences import SEQUENCES, parse_sequence

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["save_montage", "montage_size", "tumour_centre"]

#: Size of one image panel and of the bands around the grid, in inches (at DPI pixels per inch).
PANEL_WIDTH = 2.2
PANEL_HEIGHT = 2.3
LABEL_WIDTH = 0.45
TITLE_HEIGHT = 0.85
COLORBAR_HEIGHT = 0.75
DPI = 100
VIEWS = ("Axial", "Coronal", "Sagittal", "Axial\nclose-up")
#: Side of the close-up square, in mm.
CLOSE_UP_MM = 80.0
BRAIN_MARGIN_VOXELS = 4


def montage_size(columns: int) -> tuple:
    """(width, height) in pixels of a montage with ``columns`` image columns."""
    width = LABEL_WIDTH + PANEL_WIDTH * columns
    height = TITLE_HEIGHT + PANEL_HEIGHT * len(VIEWS) + COLORBAR_HEIGHT
    return int(round(width * DPI)), int(round(height * DPI))


def _lps_array(image: sitk.Image, reference: sitk.Image, nearest: bool = False) -> np.ndarray:
    """``image`` on ``reference``'s grid, reoriented to LPS, as a float32 [z, y, x] array."""
    if not same_grid(image, reference):
        image = resample_to(image, reference, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")).astype(np.float32, copy=False)


def tumour_centre(mask: Optional[np.ndarray], brain: np.ndarray) -> tuple:
    """Voxel (z, y, x) at the centre of mass of ``mask``, or of ``brain`` when the mask is empty."""
    from scipy import ndimage

    region = mask if mask is not None and mask.any() else brain
    if not region.any():
        return tuple(s // 2 for s in brain.shape)
    return tuple(int(round(c)) for c in ndimage.center_of_mass(region))


def _box(brain: np.ndarray) -> tuple:
    """Bounding box (slices) of the brain plus a margin, so panels show brain, not background."""
    if not brain.any():
        return tuple(slice(0, s) for s in brain.shape)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hits[0]) - BRAIN_MARGIN_VOXELS, 0),
                         min(int(hits[-1]) + BRAIN_MARGIN_VOXELS + 1, brain.shape[axis])))
    return tuple(box)


def _close_up(volume: np.ndarray, centre: tuple, spacing: tuple) -> np.ndarray:
    """The axial slice through ``centre`` cut to a :data:`CLOSE_UP_MM` square around it (inside the volume)."""
    z, y, x = centre
    bounds = []
    for position, size, step in ((y, volume.shape[1], spacing[1]), (x, volume.shape[2], spacing[2])):
        side = min(int(round(CLOSE_UP_MM / step)), size)
        start = min(max(position - side // 2, 0), size - side)
        bounds.append(slice(start, start + side))
    return volume[z][tuple(bounds)]


def _views(volume: np.ndarray, centre: tuple, box: tuple, spacing: tuple) -> list:
    """Axial, coronal, sagittal 2D slices and the axial close-up (LPS arrays; superior up, anterior up in
    axial)."""
    z, y, x = centre
    cropped = volume[box]
    zc, yc, xc = z - box[0].start, y - box[1].start, x - box[2].start
    return [cropped[zc], np.flipud(cropped[:, yc, :]), np.flipud(cropped[:, :, xc]),
            _close_up(volume, centre, spacing)]


def _aspects(spacing_zyx: tuple) -> list:
    """imshow aspect (row spacing / column spacing) of each view."""
    sz, sy, sx = spacing_zyx
    return [sy / sx, sz / sx, sz / sy, sy / sx]


def _window(volume: np.ndarray, brain: np.ndarray) -> tuple:
    values = volume[brain] if brain.any() else volume.ravel()
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _panel(axes, image: np.ndarray, aspect: float, **kwargs) -> object:
    shown = axes.imshow(image, aspect=aspect, interpolation="bilinear", **kwargs)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    return shown


def _columns(inputs: Mapping, target, ground_truth) -> list:
    """(title, role) of every column, in order."""
    name = target.sequence.short_name
    columns = [(f"{s.short_name} (input)", ("input", s)) for s in SEQUENCES if s in inputs]
    columns.append((f"{name} synthetic", ("synthetic", None)))
    if ground_truth is not None:
        columns.append((f"{name} acquired (hidden)", ("truth", None)))
    if target.refinement_map is not None:
        columns.append(("Refinement\n(final - stage 1)", ("refinement", None)))
    if target.tumour_map is not None:
        columns.append(("Tumour-region map\non synthetic", ("tumour", None)))
    if getattr(target, "uncertainty_map", None) is not None:
        columns.append(("Uncertainty\n(samples, position,\ncontrast, rarity)", ("uncertainty", None)))
    return columns


def save_montage(path: str | Path, inputs: Mapping, target, ground_truth: Optional[sitk.Image] = None,
                 label: Optional[sitk.Image] = None, title: str = "") -> Path:
    """Write the montage PNG of one synthesised ``target`` (a :class:`pipeline.TargetResult`).

    ``inputs``: ``{sequence: image}`` the target was synthesised from. ``ground_truth``: the
    acquired target, if known. ``label``: BraTS label map; its tumour centre places the slices
    (else the tumour-region mask, else the brain centre). Size: :func:`montage_size`.
    """
    reference = target.synthetic
    inputs = {parse_sequence(k): v for k, v in inputs.items()}
    synthetic = _lps_array(reference, reference)
    arrays = {("input", s): _lps_array(img, reference) for s, img in inputs.items()}
    brain = synthetic > 0
    for array in arrays.values():
        brain |= array > 0
    mask = None
    if label is not None:
        mask = _lps_array(label, reference, nearest=True) > 0
    elif target.tumour_mask is not None:
        mask = _lps_array(target.tumour_mask, reference, nearest=True) > 0
    centre = tumour_centre(mask, brain)
    box = _box(brain)
    spacing = tuple(sitk.DICOMOrient(reference, "LPS").GetSpacing()[::-1])
    arrays[("synthetic", None)] = synthetic
    if ground_truth is not None:
        arrays[("truth", None)] = _lps_array(ground_truth, reference)
    if target.refinement_map is not None:
        arrays[("refinement", None)] = _lps_array(target.refinement_map, reference)
    region = None
    if target.tumour_map is not None:
        arrays[("tumour", None)] = _lps_array(target.tumour_map, reference)
        if target.tumour_mask is not None:
            region = _lps_array(target.tumour_mask, reference, nearest=True) > 0

    if getattr(target, "uncertainty_map", None) is not None:
        arrays[("uncertainty", None)] = _lps_array(target.uncertainty_map, reference)
    columns = _columns(inputs, target, ground_truth)
    figure = _draw(columns, arrays, brain, region, centre, box, spacing, title)
    path = Path(path)
    figure.savefig(path, dpi=DPI, facecolor=figure.get_facecolor(), metadata=png_metadata())
    return path


def _draw(columns: list, arrays: dict, brain: np.ndarray, region: Optional[np.ndarray], centre: tuple,
          box: tuple, spacing: tuple, title: str) -> "Figure":
    """Lay out the figure: title band, 3 x len(columns) panels, colour-bar band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width_px, height_px = montage_size(len(columns))
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="black")
    FigureCanvasAgg(figure)
    height = height_px / DPI
    width = width_px / DPI
    grid = figure.add_gridspec(
        len(VIEWS), len(columns), left=LABEL_WIDTH / width, right=0.995,
        top=1.0 - TITLE_HEIGHT / height, bottom=COLORBAR_HEIGHT / height, wspace=0.03, hspace=0.05)
    aspects = _aspects(spacing)
    views = {key: _views(array, centre, box, spacing) for key, array in arrays.items()}
    brain_views = _views(brain, centre, box, spacing)
    region_views = _views(region, centre, box, spacing) if region is not None else None
    windows = {key: _window(array, brain) for key, array in arrays.items()
               if key[0] in ("input", "synthetic", "truth")}
    limit = _symmetric_limit(arrays.get(("refinement", None)), brain)
    tumour_top = _tumour_limit(arrays.get(("tumour", None)), region)
    spread_top = _spread_limit(arrays.get(("uncertainty", None)), brain)
    mappables = {}
    for row, view in enumerate(VIEWS):
        for col, (heading, key) in enumerate(columns):
            axes = figure.add_subplot(grid[row, col])
            axes.set_facecolor("black")
            if key[0] in ("input", "synthetic", "truth"):
                low, high = windows[key]
                _panel(axes, views[key][row], aspects[row], cmap="gray", vmin=low, vmax=high)
            elif key[0] == "refinement":
                shown = np.ma.masked_where(~brain_views[row], views[key][row])
                mappables[key] = _panel(axes, shown, aspects[row], cmap=_diverging_colormap(), vmin=-limit,
                                        vmax=limit)
                axes.contour(brain_views[row].astype(float), levels=[0.5], colors="#808080", linewidths=0.6)
            elif key[0] == "uncertainty":
                shown = np.ma.masked_where(~brain_views[row], views[key][row])
                mappables[key] = _panel(axes, shown, aspects[row], cmap="viridis", vmin=0.0, vmax=spread_top)
            else:
                low, high = windows[("synthetic", None)]
                _panel(axes, views[("synthetic", None)][row], aspects[row], cmap="gray", vmin=low, vmax=high)
                inside = region_views[row] if region_views is not None else views[key][row] > 0
                # only changes above 5 % of the colour range are painted, so the synthetic stays visible
                overlay = np.ma.masked_where(~inside | (views[key][row] < 0.05 * tumour_top), views[key][row])
                mappables[key] = _panel(axes, overlay, aspects[row], cmap="inferno", vmin=0.0, vmax=tumour_top,
                                        alpha=0.85)
                if inside.any():
                    axes.contour(inside.astype(float), levels=[0.5], colors="#00e5ff", linewidths=0.7)
            if row == 0:
                axes.set_title(heading, color="white", fontsize=10, pad=4)
            if col == 0:
                axes.set_ylabel(view, color="white", fontsize=11 if "\n" not in view else 9)
                if row != 2:  # the sagittal view has no left-right
                    axes.text(0.02, 0.5, "R", color="#ffd54f", fontsize=8, transform=axes.transAxes,
                              ha="left", va="center")
    _colorbars(figure, columns, mappables, grid)
    figure.text(0.5, 1.0 - 0.22 / height, title, color="white", fontsize=12, ha="center", va="top")
    figure.text(LABEL_WIDTH / width, 0.3 / height, "SYNTHETIC images: not acquired data, not for diagnosis.",
                color="#ffb74d", fontsize=9, ha="left", va="center")
    return figure


def _symmetric_limit(change: Optional[np.ndarray], brain: np.ndarray) -> float:
    """Colour limit of the refinement map: 99.5th percentile of |change| in the brain (> 0)."""
    if change is None or not brain.any():
        return 1.0
    value = float(np.percentile(np.abs(change[brain]), 99.5))
    return value if value > 0 else 1.0


def _spread_limit(spread: Optional[np.ndarray], brain: np.ndarray) -> float:
    """Colour limit of the uncertainty map: its 99.5th percentile in the brain (> 0)."""
    if spread is None or not brain.any():
        return 1.0
    value = float(np.percentile(spread[brain], 99.5))
    return value if value > 0 else 1.0


def _tumour_limit(tumour_map: Optional[np.ndarray], region: Optional[np.ndarray]) -> float:
    if tumour_map is None:
        return 1.0
    values = tumour_map[region] if region is not None and region.any() else tumour_map[tumour_map > 0]
    top = float(np.percentile(values, 99.0)) if values.size else 0.0
    return top if top > 0 else 1.0


def _diverging_colormap() -> str:
    """A diverging map with a dark centre (no change blends with the black figure) where available."""
    import matplotlib

    return "berlin" if "berlin" in matplotlib.colormaps else "RdBu_r"


def _colorbars(figure, columns: list, mappables: dict, grid) -> None:
    """Horizontal colour bars under the refinement and tumour-map columns, three plain ticks each."""
    labels = {"refinement": "change (synthetic units)", "tumour": "|change| in tumour region",
              "uncertainty": "SD (synthetic units)"}
    height = figure.get_figheight()
    for col, (_, key) in enumerate(columns):
        if key not in mappables:
            continue
        cell = grid[len(VIEWS) - 1, col].get_position(figure)
        bar_axes = figure.add_axes([cell.x0 + 0.1 * cell.width, 0.42 / height, 0.8 * cell.width, 0.1 / height])
        bar = figure.colorbar(mappables[key], cax=bar_axes, orientation="horizontal")
        low, high = mappables[key].get_clim()
        bar.set_ticks([low, (low + high) / 2, high])
        bar.set_ticklabels([f"{v:.3g}" for v in (low, (low + high) / 2, high)])
        bar.ax.tick_params(colors="white", labelsize=7, length=2)
        bar.outline.set_edgecolor("white")
        bar.set_label(labels[key[0]], color="white", fontsize=8, labelpad=1)
