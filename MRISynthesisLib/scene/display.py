"""How results look: grey window/level from the brain voxels, this tool's colour tables for the maps, and a
result shown in every slice view (synthetic volume behind, its preferred map in front)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

import slicer.util

from ..sequences import Sequence
from .nodes import ATTRIBUTE_PREFIX

if TYPE_CHECKING:  # annotations only: results imports this module
    from .results import ResultNodes, TargetNodes

__all__ = [
    "SYNTHETIC_WINDOW_PERCENTILES",
    "MAP_RANGE_PERCENTILE",
    "OVERLAY_OPACITY",
    "OVERLAY_DEAD_ZONE",
    "DIVERGING_COLOR_NAME",
    "MAGNITUDE_COLOR_NAME",
    "UNCERTAINTY_COLOR_NAME",
    "brain_window",
    "map_range",
    "diverging_colours",
    "magnitude_colours",
    "uncertainty_colours",
    "diverging_color_node",
    "magnitude_color_node",
    "uncertainty_color_node",
    "set_volume_display",
    "set_map_display",
    "set_result_display",
    "slice_composite_nodes",
    "show_in_slice_views",
    "show_result",
]

#: Percentiles of the brain region that set the synthetic volume's window/level.
SYNTHETIC_WINDOW_PERCENTILES = (1.0, 99.5)
#: Percentile of |map| (non-zero voxels) that sets the colour range of a map.
MAP_RANGE_PERCENTILE = 99.0
#: Opacity of the map shown as foreground over the synthetic volume.
OVERLAY_OPACITY = 0.4
#: Map values within this fraction of the colour range around zero are transparent.
OVERLAY_DEAD_ZONE = 0.05

#: Names of the colour tables this tool adds to a scene (created once per scene).
DIVERGING_COLOR_NAME = "MRISynthesis diverging"
MAGNITUDE_COLOR_NAME = "MRISynthesis magnitude"
UNCERTAINTY_COLOR_NAME = "MRISynthesis uncertainty"

#: Anchors of the uncertainty colour table: viridis sampled at 0, 0.1, ..., 1 (perceptually uniform and
#: sequential, readable with colour-vision deficiencies, and unlike the red-yellow maps of the refinement).
UNCERTAINTY_ANCHORS = (
    (0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553),
    (0.164, 0.471, 0.558), (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441),
    (0.478, 0.821, 0.318), (0.741, 0.873, 0.150), (0.993, 0.906, 0.144),
)


def brain_window(image: sitk.Image, percentiles: tuple[float, float] = SYNTHETIC_WINDOW_PERCENTILES
                 ) -> tuple[float, float]:
    """(low, high) display range: percentiles of the non-zero (brain) voxels, all voxels if none."""
    array = sitk.GetArrayViewFromImage(image)
    values = array[array != 0]
    if values.size == 0:
        values = array.ravel()
    low, high = np.percentile(values, percentiles)
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def map_range(image: sitk.Image, percentile: float = MAP_RANGE_PERCENTILE) -> float:
    """Positive colour-range limit of a map: a high percentile of |non-zero voxels| (1 if all zero)."""
    array = np.abs(sitk.GetArrayViewFromImage(image))
    values = array[array > 0]
    if values.size == 0:
        return 1.0
    limit = float(np.percentile(values, percentile))
    return limit if limit > 0 else float(values.max())


# --------------------------------------------------------------------------- colour tables


def _color_table(scene: Any, name: str, colours: np.ndarray) -> Any:
    """The scene's colour table called ``name`` (made by this tool), created once from RGBA rows."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.GetAttribute(f"{ATTRIBUTE_PREFIX}.ColorTable") == name:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(colours))
    table.SetAttribute(f"{ATTRIBUTE_PREFIX}.ColorTable", name)
    for index, (red, green, blue, alpha) in enumerate(colours):
        table.SetColor(index, f"{index}", float(red), float(green), float(blue), float(alpha))
    return table


def diverging_colours(count: int = 255, dead_zone: float = OVERLAY_DEAD_ZONE) -> np.ndarray:
    """RGBA rows: blue to cyan (negative), transparent near zero, red to yellow (positive).

    Slicer's slice views treat a colour's alpha as on/off (any alpha > 0 is opaque), so the
    values within ``dead_zone`` of the range around zero get alpha 0 and show the volume below;
    strength is shown by the hue instead. An odd ``count`` puts one entry exactly at zero.
    """
    t = np.linspace(-1.0, 1.0, count)
    strength = np.abs(t)
    negative = np.column_stack([np.zeros_like(t), strength, np.ones_like(t)])
    positive = np.column_stack([np.ones_like(t), strength, np.zeros_like(t)])
    rgb = np.where(t[:, None] < 0, negative, positive)
    alpha = (strength > dead_zone).astype(float)
    return np.column_stack([rgb, alpha])


def magnitude_colours(count: int = 256, dead_zone: float = OVERLAY_DEAD_ZONE) -> np.ndarray:
    """RGBA rows for non-negative maps: transparent near zero, then red - yellow - white."""
    t = np.linspace(0.0, 1.0, count)
    rgb = np.column_stack([np.ones_like(t), np.clip(2.0 * t, 0, 1), np.clip(2.0 * t - 1.0, 0, 1)])
    alpha = (t > dead_zone).astype(float)
    return np.column_stack([rgb, alpha])


def uncertainty_colours(count: int = 256, dead_zone: float = OVERLAY_DEAD_ZONE) -> np.ndarray:
    """RGBA rows for the uncertainty map: transparent near zero, then :data:`UNCERTAINTY_ANCHORS` (viridis)."""
    t = np.linspace(0.0, 1.0, count)
    anchors = np.asarray(UNCERTAINTY_ANCHORS)
    positions = np.linspace(0.0, 1.0, len(anchors))
    rgb = np.column_stack([np.interp(t, positions, anchors[:, channel]) for channel in range(3)])
    alpha = (t > dead_zone).astype(float)
    return np.column_stack([rgb, alpha])


def uncertainty_color_node(scene: Any) -> Any:
    """The scene's colour table for uncertainty maps (:func:`uncertainty_colours`), created on first use."""
    return _color_table(scene, UNCERTAINTY_COLOR_NAME, uncertainty_colours())


def diverging_color_node(scene: Any) -> Any:
    """The scene's colour table for signed maps (:func:`diverging_colours`), created on first use."""
    return _color_table(scene, DIVERGING_COLOR_NAME, diverging_colours())


def magnitude_color_node(scene: Any) -> Any:
    """The scene's colour table for non-negative maps (:func:`magnitude_colours`), created on first use."""
    return _color_table(scene, MAGNITUDE_COLOR_NAME, magnitude_colours())


# --------------------------------------------------------------------------- display nodes


def _display_node(node: Any) -> Any:
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    return display


def set_volume_display(node: Any, image: sitk.Image) -> None:
    """Grey scale with window/level from the brain-region percentiles of ``image``."""
    display = _display_node(node)
    low, high = brain_window(image)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)


def set_map_display(scene: Any, node: Any, image: sitk.Image, signed: bool, colour: Any = None) -> None:
    """Colour a map: diverging and symmetric about 0 when ``signed``, else magnitude from 0 (``colour``: another
    colour table for it)."""
    display = _display_node(node)
    limit = map_range(image)
    if colour is None:
        colour = diverging_color_node(scene) if signed else magnitude_color_node(scene)
    display.SetAndObserveColorNodeID(colour.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-limit if signed else 0.0, limit)


def set_result_display(scene: Any, nodes: TargetNodes, target: Any) -> None:
    """Display settings of one target's nodes (volumes grey, maps coloured)."""
    set_volume_display(nodes.synthetic, target.synthetic)
    if nodes.stage1 is not None:
        set_volume_display(nodes.stage1, target.stage1)
    if nodes.refinement_map is not None:
        set_map_display(scene, nodes.refinement_map, target.refinement_map, signed=True)
    if nodes.tumour_map is not None:
        set_map_display(scene, nodes.tumour_map, target.tumour_map, signed=False)
    if nodes.error_map is not None:
        set_map_display(scene, nodes.error_map, target.error_map, signed=False)
    if getattr(nodes, "uncertainty_map", None) is not None:
        set_map_display(scene, nodes.uncertainty_map, target.uncertainty_map, signed=False,
                        colour=uncertainty_color_node(scene))


# --------------------------------------------------------------------------- slice views


def slice_composite_nodes(scene: Any) -> list:
    """The scene's slice composite nodes (one per slice view; none in a bare headless scene)."""
    collection = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def show_in_slice_views(scene: Any, background: Any, foreground: Any = None,
                        opacity: float = OVERLAY_OPACITY) -> None:
    """Background volume, optional foreground map at ``opacity``, in every slice view of ``scene``, views linked.

    Not ``slicer.util.setSliceViewerLayers``: that one sets the views of ``slicer.mrmlScene``
    only (this function takes any scene, headless ones too), keeps the current foreground when
    given None, and does not link the views.
    """
    for composite in slice_composite_nodes(scene):
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity if foreground is not None else 0.0)
        composite.SetLinkedControl(True)
    _fit_slice_views()


def _fit_slice_views() -> None:
    """Fit the slice views to the shown volumes; only the Slicer application has views (headless: nothing)."""
    if getattr(slicer, "app", None) is None or getattr(slicer.app, "layoutManager", lambda: None)() is None:
        return
    slicer.util.resetSliceViews()


def show_result(scene: Any, nodes: ResultNodes, sequence: Sequence | None = None) -> TargetNodes:
    """Show one target (default: T1c if made, else the first) as background with its preferred map on top."""
    if sequence is None:
        sequence = Sequence.T1C if Sequence.T1C in nodes.targets else next(iter(nodes.targets))
    chosen = nodes.targets[sequence]
    overlay = chosen.maps()[0] if chosen.maps() else None
    show_in_slice_views(scene, chosen.synthetic, overlay)
    return chosen
