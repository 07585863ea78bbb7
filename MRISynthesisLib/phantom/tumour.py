"""Random tumours: where they sit, their sizes and shapes (irregular necrotic core, enhancing rim,
oedema that follows white matter and stops at the falx) and their BraTS labels.

Labels follow BraTS 2023: 1 necrotic core, 2 oedema (SNFH), 3 enhancing tumour.
"""
from __future__ import annotations

import numpy as np

from .deformation import grid_points_mm, index_box, pullback_affine
from .fields import smooth_field
from .grid import PhantomGrid
from .physics import sample_uniform
from .template import load_template

__all__ = [
    "LABELS",
    "sample_tumour",
    "tumour_box",
    "midline_distance_mm",
    "tumour_memberships",
    "tumour_labels",
]


#: BraTS 2023 label values.
LABELS: dict[str, int] = {"necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}


def sample_tumour(rng: np.random.Generator, deformation: dict) -> dict:
    """Random tumour: centre in deep white matter of one hemisphere, sizes, shape, mass effect.

    Sizes are radii (mm) of the enhancing tumour, of the necrotic core inside it and of the
    oedema around it; the shapes are made irregular later by smooth noise.
    """
    template = load_template()
    side = int(rng.choice([-1, 1]))
    sites = template.tumour_sites[template.tumour_site_side == side]
    site = sites[int(rng.integers(len(sites)))]
    site_mm = (template.index_to_lps @ np.append(site.astype(float), 1.0))[:3]
    matrix, offset = pullback_affine(deformation)
    centre = np.linalg.solve(matrix, site_mm - offset)  # ignores the small smooth warp
    enhancing = sample_uniform(rng, (9.0, 22.0))
    core = enhancing * sample_uniform(rng, (0.55, 0.8))
    oedema = min(enhancing * sample_uniform(rng, (1.35, 2.0)), 40.0)
    core_offset = rng.normal(0.0, 1.0, 3)
    core_offset *= sample_uniform(rng, (0.0, 0.25)) * enhancing / max(np.linalg.norm(core_offset), 1e-6)
    return {
        "hemisphere": "left" if side > 0 else "right",
        "centre_mm": [float(c) for c in centre],
        "radius_enhancing_mm": enhancing,
        "radius_core_mm": core,
        "radius_oedema_mm": oedema,
        "core_offset_mm": [float(c) for c in core_offset],
        "axes": [float(a) for a in rng.uniform(0.8, 1.25, 3)],
        "orientation_deg": [float(a) for a in rng.uniform(-180.0, 180.0, 3)],
        "irregularity": sample_uniform(rng, (0.12, 0.25)),
        "oedema_irregularity": sample_uniform(rng, (0.15, 0.25)),
        "white_matter_preference": sample_uniform(rng, (0.4, 0.7)),
        "mass_effect": sample_uniform(rng, (0.1, 0.4)),
        "mass_sigma_mm": enhancing * 1.3,
    }


def tumour_box(tumour: dict, grid: PhantomGrid, crop: tuple[slice, slice, slice]) -> tuple[slice, ...]:
    """(z, y, x) slices, relative to the crop, of a box holding every possible tumour voxel."""
    half_mm = 1.6 * tumour["radius_oedema_mm"] * max(tumour["axes"]) + 4.0
    return index_box(tumour["centre_mm"], half_mm, grid, crop)


def midline_distance_mm(coords: np.ndarray, hemisphere: str) -> np.ndarray:
    """Signed distance (mm) of template coordinates from the midline, positive on ``hemisphere``."""
    row = load_template().index_to_lps[0]
    lps_x = row[0] * coords[0] + row[1] * coords[1] + row[2] * coords[2] + np.float32(row[3])
    return lps_x if hemisphere == "left" else -lps_x  # LPS: +x is the patient's left


def _ramp(distance: np.ndarray, radius_mm: float, width_mm: float) -> np.ndarray:
    """Soft membership of ``distance < 1`` (distance in radii), ``width_mm`` wide at the border."""
    return np.clip(0.5 + (1.0 - distance) * np.float32(radius_mm / width_mm), 0.0, 1.0)


def tumour_memberships(rng: np.random.Generator, tumour: dict, grid: PhantomGrid,
                        crop: tuple[slice, slice, slice], box: tuple[slice, ...],
                        white: np.ndarray, brain: np.ndarray, hemisphere_mm: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """Nested soft memberships (core within core+enhancing within whole tumour) in ``box``.

    Each border is an ellipsoid distance perturbed by its own smooth noise: the core is
    irregular, the rim varies in thickness, and the oedema reaches further along white
    matter (``white`` is the white-matter share of tissue) than into the cortex. The falx
    stops it: ``hemisphere_mm`` is the signed distance (template mm) into the tumour's side.
    """
    from scipy.spatial.transform import Rotation

    shape = tuple(s.stop - s.start for s in box)
    spacing_zyx = tuple(reversed(grid.spacing))
    sub = tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(crop, box))
    delta = [p - np.float32(c) for p, c in zip(grid_points_mm(grid, sub), tumour["centre_mm"])]
    rotation = Rotation.from_euler("zyx", tumour["orientation_deg"], degrees=True).as_matrix()
    local = [sum(np.float32(rotation[b, a]) * delta[b] for b in range(3)) / np.float32(tumour["axes"][a])
             for a in range(3)]
    rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
    shifted = [loc - np.float32(o) for loc, o in zip(local, tumour["core_offset_mm"])]
    rho_core = np.sqrt(shifted[0] ** 2 + shifted[1] ** 2 + shifted[2] ** 2)

    def noise(step_mm: float) -> np.ndarray:
        return np.clip(smooth_field(rng, shape, step_mm, spacing_zyx), -2.0, 2.0)

    irregular = np.float32(tumour["irregularity"])
    voxel = float(min(grid.spacing))
    r_core, r_enh, r_all = (tumour["radius_core_mm"], tumour["radius_enhancing_mm"],
                            tumour["radius_oedema_mm"])
    d_core = rho_core / np.float32(r_core) + irregular * noise(5.0)
    d_enh = rho / np.float32(r_enh) + irregular * noise(6.0)
    spread = (np.float32(tumour["oedema_irregularity"]) * noise(10.0)
              - np.float32(tumour["white_matter_preference"]) * (white - 0.5))
    d_all = rho / np.float32(r_all) + np.maximum(spread, -0.6)  # stays inside the box
    inside = brain * np.clip(hemisphere_mm / 2.0 + 1.0, 0.0, 1.0)
    core = _ramp(d_core, r_core, voxel) * inside
    core_enh = np.maximum(_ramp(d_enh, r_enh, voxel) * inside, core)
    whole = np.maximum(_ramp(d_all, r_all, 3.0 * voxel) * inside, core_enh)
    # Oedema is strongest next to the tumour and in white matter, faint at its edge and in cortex.
    strength = np.clip(1.3 - 0.7 * d_all, 0.45, 1.0) * (0.6 + 0.4 * white)
    return {"core": core, "core_enhancing": core_enh, "whole": whole,
            "oedema_strength": strength, "heterogeneity": noise(4.0)}


def tumour_labels(members: dict[str, np.ndarray], csf_before: np.ndarray) -> np.ndarray:
    """BraTS labels in the tumour box: 1 where core >= 0.5, 3 enhancing, 2 oedema outside CSF."""
    labels = np.zeros(members["whole"].shape, dtype=np.uint8)
    labels[(members["whole"] >= 0.5) & (csf_before < 0.7)] = LABELS["oedema"]
    labels[members["core_enhancing"] >= 0.5] = LABELS["enhancing_tumour"]
    labels[members["core"] >= 0.5] = LABELS["necrotic_core"]
    return labels
