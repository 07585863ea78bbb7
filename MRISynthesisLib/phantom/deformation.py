"""Case geometry: a random affine, a smooth warp and the tumour's mass effect, all pulled back to the
template, which is then sampled at every voxel of the case."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import ndimage

from .fields import smooth_field
from .grid import FULL_GRID, GRID_TO_TEMPLATE_MM, PhantomGrid
from .physics import sample_uniform
from .template import CHANNELS, load_template, template_channels

__all__ = [
    "sample_deformation",
    "pullback_affine",
    "grid_points_mm",
    "index_box",
    "template_coordinates",
    "sample_channels",
]


def sample_deformation(rng: np.random.Generator) -> dict:
    """Random rotation (deg), per-axis scale, shift (mm) and smooth-warp amplitude (mm)."""
    angles = np.clip(rng.normal(0.0, 3.0, 3), -6.0, 6.0)
    scale = rng.uniform(0.92, 1.03) * rng.uniform(0.97, 1.03, 3)
    shift = rng.uniform([-3.0, -3.0, -2.0], [3.0, 3.0, 2.0])
    return {"rotation_deg": [float(a) for a in angles], "scale": [float(s) for s in scale],
            "shift_mm": [float(s) for s in shift], "warp_mm": sample_uniform(rng, (0.8, 2.0)),
            "warp_step_mm": 40.0}


def pullback_affine(deformation: dict) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) taking grid LPS mm to template LPS mm, before the smooth warp."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", deformation["rotation_deg"], degrees=True).as_matrix()
    matrix = rotation @ np.diag(1.0 / np.asarray(deformation["scale"]))
    centre = FULL_GRID.centre()
    offset = centre + GRID_TO_TEMPLATE_MM + np.asarray(deformation["shift_mm"]) - matrix @ centre
    return matrix, offset


def grid_points_mm(grid: PhantomGrid, crop: tuple[slice, slice, slice]) -> list[np.ndarray]:
    """LPS x, y and z (mm) of every voxel of the crop, three (z, y, x) float32 arrays."""
    matrix = grid.index_to_physical()
    index = [np.arange(crop[2].start, crop[2].stop, dtype=np.float32)[None, None, :],
             np.arange(crop[1].start, crop[1].stop, dtype=np.float32)[None, :, None],
             np.arange(crop[0].start, crop[0].stop, dtype=np.float32)[:, None, None]]
    return [np.float32(matrix[a, 3]) + np.float32(matrix[a, 0]) * index[0]
            + np.float32(matrix[a, 1]) * index[1] + np.float32(matrix[a, 2]) * index[2]
            for a in range(3)]


def index_box(centre_mm, half_mm: float, grid: PhantomGrid,
               crop: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    """(z, y, x) slices, relative to ``crop``, of the voxels within ``half_mm`` of a point (a cube)."""
    centre = (np.linalg.inv(grid.index_to_physical()) @ np.append(np.asarray(centre_mm, float), 1.0))[:3]
    half = half_mm / np.asarray(grid.spacing)
    box = []
    for axis, crop_slice in zip((2, 1, 0), crop):
        lo = int(max(math.floor(centre[axis] - half[axis]), crop_slice.start)) - crop_slice.start
        hi = int(min(math.ceil(centre[axis] + half[axis]) + 1, crop_slice.stop)) - crop_slice.start
        box.append(slice(max(lo, 0), max(hi, 0)))
    return tuple(box)


def _mass_effect(points: list[np.ndarray], tumour: Optional[dict], grid: PhantomGrid,
                 crop: tuple[slice, slice, slice]) -> list[np.ndarray]:
    """Grid positions moved towards the tumour centre, so anatomy is pushed outward.

    Pull-back displacement ``k (p - c) exp(-|p - c|^2 / 2 s^2)`` with k < 1 is smooth and
    keeps the mapping one-to-one.
    """
    if tumour is None or tumour["mass_effect"] <= 0.0:
        return points
    centre, sigma = tumour["centre_mm"], tumour["mass_sigma_mm"]
    # Beyond 4 sigma the displacement is below 0.1 % of the distance: leave those points.
    box = index_box(centre, 4.0 * sigma, grid, crop)
    delta = [p[box] - np.float32(c) for p, c in zip(points, centre)]
    r2 = delta[0] ** 2 + delta[1] ** 2 + delta[2] ** 2
    gain = np.float32(tumour["mass_effect"]) * np.exp(r2 * np.float32(-0.5 / sigma ** 2))
    for p, d in zip(points, delta):
        p[box] -= gain * d
    return points


def template_coordinates(rng: np.random.Generator, grid: PhantomGrid, crop: tuple[slice, slice, slice],
                          deformation: dict, tumour: Optional[dict]) -> np.ndarray:
    """Template voxel coordinates (3, z, y, x) for every crop voxel of this case.

    A ``deformation`` with ``fine_warp_mm`` (randomised cases) adds a second smooth warp,
    drawn after the first, so classic cases draw exactly what they always drew.
    """
    template = load_template()
    shape = tuple(s.stop - s.start for s in crop)
    points = _mass_effect(grid_points_mm(grid, crop), tumour, grid, crop)
    matrix, offset = pullback_affine(deformation)
    to_index = template.lps_to_index
    combined = to_index[:3, :3] @ matrix
    combined_offset = to_index[:3, :3] @ offset + to_index[:3, 3]
    spacing_zyx = tuple(reversed(grid.spacing))
    amplitude, step = np.float32(deformation["warp_mm"]), deformation["warp_step_mm"]
    warp = [amplitude * smooth_field(rng, shape, step, spacing_zyx) for _ in range(3)]
    if "fine_warp_mm" in deformation:  # randomised cases: a second, shorter-range warp
        fine, fine_step = np.float32(deformation["fine_warp_mm"]), deformation["fine_warp_step_mm"]
        warp = [w + fine * smooth_field(rng, shape, fine_step, spacing_zyx) for w in warp]
    coords = np.empty((3,) + shape, dtype=np.float32)
    for i in range(3):
        acc = np.full(shape, combined_offset[i], dtype=np.float32)
        for b in range(3):
            if combined[i, b] != 0.0:
                acc += np.float32(combined[i, b]) * points[b]
            if to_index[i, b] != 0.0:
                acc += np.float32(to_index[i, b]) * warp[b]
        coords[i] = acc
    return coords


def sample_channels(coords: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Template channels interpolated (linear) at ``coords``; zero away from the brain.

    Only voxels that land within 3 mm of the template brain are interpolated: less than
    half of the crop, and the rest would be masked out anyway.
    """
    channels = template_channels(spacing)
    near = ndimage.map_coordinates(load_template().near_brain, coords, order=0, mode="constant",
                                   cval=0, prefilter=False).astype(bool)
    points = coords[:, near]
    sampled = {}
    for name in CHANNELS:
        full = np.zeros(near.shape, dtype=np.float32)
        full[near] = ndimage.map_coordinates(channels[name], points, order=1, mode="constant",
                                             cval=0.0, output=np.float32, prefilter=False)
        sampled[name] = full
    return sampled
