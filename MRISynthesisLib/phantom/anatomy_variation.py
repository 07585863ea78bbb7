"""Per-case anatomical variety for randomised cases: stronger deformations, atrophy (ventricle
enlargement, cortical thinning) and sulci that cut the blurred template cortex at 1 mm scale.

The ICBM152 template is an average of many brains: its sulci are smeared into a grey band and
its ventricles are those of young adults. Each randomised case therefore (1) warps the template
more strongly and at two scales, (2) turns tissue next to the ventricles into CSF (enlargement
ex vacuo) and thins the cortex (more CSF partial volume in the cortical ribbon), and (3) cuts
random sulci into the cortex: thin CSF sheets lined with grey matter, perpendicular to the brain
surface and reaching a random depth into it, made from a random field evaluated at each voxel's
nearest point on the brain surface. All of it edits the sampled template channels (tissue
fractions and template intensity) before compartments are built, so tissues, labels and images
stay one consistent anatomy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fields import smooth_field
from .physics import sample_uniform
from .template import load_template

__all__ = [
    "VariationMaps",
    "variation_maps",
    "sample_random_deformation",
    "sample_anatomy_variation",
    "sample_variation_maps",
    "vary_anatomy",
]

#: Gradient magnitude of a unit :func:`.fields.smooth_field` is about this over its step
#: (measured: median 1.76-1.81, mean 1.84-1.89 for steps of 10-20 mm), so ``|f| * step / 1.85``
#: approximates the distance (mm) to the field's zero level set.
FIELD_GRADIENT = 1.85

#: Coarse lattice (mm) of the per-case sulcal field defined over the template box.
SULCAL_LATTICE_MM = 2.0


@dataclass(frozen=True)
class VariationMaps:
    """Template-space maps (template voxel axes, 1 mm) derived once for anatomical variation."""

    depth: np.ndarray  # mm from the outside of the brain mask
    ventricle_distance: np.ndarray  # mm from the deep (ventricular) CSF, 0 inside it
    surface: np.ndarray  # (3, ...) template voxel index of the nearest brain-surface point


@functools.lru_cache(maxsize=1)
def variation_maps() -> VariationMaps:
    """Depth, ventricle distance and surface projection of the template (once per process, ~3 s)."""
    template = load_template()
    mask = template.channels["mask"] > 0.5
    depth = ndimage.distance_transform_edt(mask).astype(np.float32)
    csf = template.channels["mask"] - template.channels["gm"] - template.channels["wm"]
    deep_csf = (csf > 0.5) & (depth > 12.0)
    labels, count = ndimage.label(deep_csf)
    if count > 1:  # the lateral ventricles and the third ventricle are the large components
        sizes = np.bincount(labels.ravel())[1:]
        deep_csf = np.isin(labels, np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1)
    ventricle_distance = ndimage.distance_transform_edt(~deep_csf).astype(np.float32)
    gradient = np.stack(np.gradient(ndimage.gaussian_filter(depth, 1.5)))
    norm = np.maximum(np.sqrt((gradient ** 2).sum(axis=0)), 1e-3)
    index = np.indices(depth.shape, dtype=np.float32)
    surface = (index - depth * gradient / norm).astype(np.float32)  # depth grows inward
    return VariationMaps(depth=depth, ventricle_distance=ventricle_distance, surface=surface)


def sample_random_deformation(rng: np.random.Generator) -> dict:
    """Affine and two-scale smooth warp, stronger than the classic one but keeping the brain on the grid.

    Keys match :func:`.deformation.sample_deformation`; ``fine_warp_mm``/``fine_warp_step_mm``
    add a second, shorter-range warp (gyral-scale shape differences).
    """
    angles = np.clip(rng.normal(0.0, 4.0, 3), -8.0, 8.0)
    scale = rng.uniform(0.88, 1.02) * rng.uniform(0.95, 1.04, 3)
    shift = rng.uniform([-4.0, -4.0, -2.0], [4.0, 4.0, 2.0])
    return {"rotation_deg": [float(a) for a in angles], "scale": [float(s) for s in scale],
            "shift_mm": [float(s) for s in shift], "warp_mm": sample_uniform(rng, (1.5, 3.5)),
            "warp_step_mm": sample_uniform(rng, (30.0, 50.0)),
            "fine_warp_mm": sample_uniform(rng, (0.5, 1.5)),
            "fine_warp_step_mm": sample_uniform(rng, (12.0, 20.0))}


def sample_anatomy_variation(rng: np.random.Generator) -> dict:
    """Atrophy (0 young to 1 severe; beta(1.2, 4), mean 0.23), ventricle enlargement (up to 6 mm),
    cortical thinning (up to a third of the cortical grey matter near the surface) and sulci."""
    atrophy = float(rng.beta(1.2, 4.0))
    return {
        "atrophy": atrophy,
        "ventricle_enlargement_mm": atrophy * 5.0 + sample_uniform(rng, (0.0, 1.0)),
        "cortical_thinning": atrophy * 0.25 + sample_uniform(rng, (0.0, 0.08)),
        "sulcal_step_mm": sample_uniform(rng, (10.0, 16.0)),
        "sulcal_width_mm": sample_uniform(rng, (0.5, 1.0)) + atrophy * 1.0,
        "sulcal_depth_mm": sample_uniform(rng, (8.0, 18.0)),
        "grey_lining_mm": sample_uniform(rng, (2.0, 3.0)),
    }


def sample_variation_maps(coords: np.ndarray, brain: np.ndarray) -> dict[str, np.ndarray]:
    """Depth, ventricle distance and surface point (template index) at the brain voxels of a case.

    ``coords`` are the case's template coordinates (3, z, y, x); the maps are 1D arrays over
    ``brain`` (boolean, same shape).
    """
    maps = variation_maps()
    points = coords[:, brain]
    sample = functools.partial(ndimage.map_coordinates, coordinates=points, mode="nearest",
                               output=np.float32, prefilter=False)
    # The surface point only positions a field that varies over 9 mm or more: the nearest
    # template voxel (0.5 mm off at most) is close enough and three times faster.
    return {"depth": sample(maps.depth, order=1), "ventricle_distance": sample(maps.ventricle_distance, order=1),
            "surface": np.stack([sample(maps.surface[a], order=0) for a in range(3)])}


def _to_csf(channels: dict[str, np.ndarray], brain: np.ndarray, fraction: np.ndarray) -> None:
    """Turn ``fraction`` of the tissue of each brain voxel into CSF (grey and white alike).

    The template intensity moves towards CSF's by the same fraction, which keeps the tissue's
    own (CSF-free) intensity and so its grey/white coordinate.
    """
    csf_intensity = np.float32(load_template().intensity["csf"])
    keep = 1.0 - fraction
    channels["gm"][brain] *= keep
    channels["wm"][brain] *= keep
    t1 = channels["t1"][brain]
    channels["t1"][brain] = t1 + fraction * (csf_intensity - t1)


def _to_grey(channels: dict[str, np.ndarray], brain: np.ndarray, fraction: np.ndarray) -> None:
    """Turn ``fraction`` of the white matter of each brain voxel into grey matter (sulcal lining)."""
    intensity = load_template().intensity
    moved = channels["wm"][brain] * fraction
    channels["wm"][brain] -= moved
    channels["gm"][brain] += moved
    channels["t1"][brain] -= moved * np.float32(intensity["wm"] - intensity["gm"])


def _sulcal_distance(rng: np.random.Generator, surface: np.ndarray, step_mm: float) -> np.ndarray:
    """Distance (mm) to random sheets perpendicular to the brain surface, at each brain voxel.

    The random field lives on a coarse lattice over the template box; evaluating it at each
    voxel's nearest surface point makes it constant along the surface normal, so its zero
    set is a set of sheets that run straight into the brain, as sulci do.
    """
    shape_t = load_template().channels["mask"].shape
    lattice = tuple(int(np.ceil(n / SULCAL_LATTICE_MM)) + 1 for n in shape_t)
    field_ = smooth_field(rng, lattice, step_mm, (SULCAL_LATTICE_MM,) * 3)
    values = ndimage.map_coordinates(field_, surface / np.float32(SULCAL_LATTICE_MM), order=1,
                                     mode="nearest", output=np.float32, prefilter=False)
    return np.abs(values) * np.float32(step_mm / FIELD_GRADIENT)


def vary_anatomy(rng: np.random.Generator, channels: dict[str, np.ndarray], brain: np.ndarray,
                 maps: dict[str, np.ndarray], variation: dict, voxel_mm: float) -> None:
    """Enlarge the ventricles, thin the cortex and cut sulci into ``channels`` (edited in place).

    ``brain`` is the case's brain mask, ``maps`` the output of :func:`sample_variation_maps`,
    ``voxel_mm`` the grid spacing: structures thinner than a voxel become partial volume.
    """
    depth, vdist = maps["depth"], maps["ventricle_distance"]
    h = np.float32(voxel_mm)
    # Ventricles: tissue within the enlargement distance of the ventricular CSF becomes CSF.
    grow = np.float32(variation["ventricle_enlargement_mm"])
    ventricles = np.clip((grow - vdist) / h + 0.5, 0.0, 1.0) * np.clip((depth - 4.0) / 2.0, 0.0, 1.0)
    _to_csf(channels, brain, ventricles.astype(np.float32))
    # Cortical thinning: a share of the grey matter near the surface gives way to CSF.
    gm, wm = channels["gm"][brain], channels["wm"][brain]
    cortex = np.clip((14.0 - depth) / 4.0, 0.0, 1.0) * gm / np.maximum(gm + wm, 1e-3)
    _to_csf(channels, brain, (np.float32(variation["cortical_thinning"]) * cortex).astype(np.float32))
    # Sulci: CSF sheets of the drawn width, lined with grey matter, down to the drawn depth.
    distance = _sulcal_distance(rng, maps["surface"], variation["sulcal_step_mm"])
    reach = np.clip((np.float32(variation["sulcal_depth_mm"]) - depth) / 3.0, 0.0, 1.0)
    width = np.float32(variation["sulcal_width_mm"])
    core = np.clip((width / 2.0 + h / 2.0 - distance) / h, 0.0, 1.0) * min(1.0, float(width / h))
    _to_csf(channels, brain, (core * reach).astype(np.float32))
    lining = np.clip((width / 2.0 + np.float32(variation["grey_lining_mm"]) - distance) / h + 0.5, 0.0, 1.0)
    _to_grey(channels, brain, (lining * reach).astype(np.float32))
