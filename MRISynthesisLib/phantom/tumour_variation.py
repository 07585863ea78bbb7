"""Randomised tumours: wider sizes and shapes, and sites beyond deep white matter (near the cortex and
next to the ventricles), in the parameter layout of :func:`.tumour.sample_tumour`.

Classic tumours sit 18 mm or more deep in white matter and have a narrow range of sizes. Real
gliomas also reach the cortex, abut the ventricles, range from small enhancing nodules to large
necrotic masses with wide oedema, push their surroundings aside to various degrees and often
hold blood products in their necrotic core (``haemorrhage``: its share of the core's patches).
"""
from __future__ import annotations

import functools

import numpy as np

from .anatomy_variation import variation_maps
from .deformation import pullback_affine
from .physics import sample_uniform
from .template import load_template

__all__ = ["SITE_KINDS", "RANDOM_TUMOUR_RANGES", "HAEMORRHAGE_PROBABILITY", "random_tumour_sites", "sample_random_tumour"]

#: Where a randomised tumour centre goes, and how often.
SITE_KINDS: dict[str, float] = {"deep": 0.45, "cortical": 0.3, "periventricular": 0.25}

#: Ranges of the randomised tumour parameters (radii in mm, ratios, shape noise, mass effect).
RANDOM_TUMOUR_RANGES: dict[str, tuple[float, float]] = {
    "radius_enhancing_mm": (7.0, 28.0),
    "core_ratio": (0.35, 0.85),
    "oedema_ratio": (1.15, 2.6),
    "axes": (0.7, 1.4),
    "irregularity": (0.1, 0.35),
    "oedema_irregularity": (0.12, 0.3),
    "white_matter_preference": (0.3, 0.8),
    "mass_effect": (0.0, 0.5),
    "mass_sigma_ratio": (1.1, 1.6),
}

#: Share of tumours with blood products (methaemoglobin, short T1) in part of the necrotic core:
#: common in glioblastoma and, with vessels, what makes native T1 bright in places.
HAEMORRHAGE_PROBABILITY = 0.35


@functools.lru_cache(maxsize=1)
def random_tumour_sites() -> dict[str, np.ndarray]:
    """Template voxel indices of each :data:`SITE_KINDS` (supratentorial brain tissue, off the midline)."""
    template = load_template()
    maps = variation_maps()
    gm, wm = template.channels["gm"], template.channels["wm"]
    axes = [template.index_to_lps[a, a] * np.arange(n) + template.index_to_lps[a, 3]
            for a, n in enumerate(gm.shape)]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij", sparse=True)  # LPS mm (x: +left, y: +posterior)
    supratentorial = (zz > -5.0) | ((zz > -30.0) & (yy < 15.0))
    tissue = ((gm + wm) > 0.7) & (np.abs(xx) > 8.0) & supratentorial
    depth, vdist = maps.depth, maps.ventricle_distance
    return {
        "deep": np.argwhere(tissue & (wm > 0.6) & (depth > 18.0)),
        "cortical": np.argwhere(tissue & (depth > 7.0) & (depth < 14.0)),
        "periventricular": np.argwhere(tissue & (vdist > 3.0) & (vdist < 9.0) & (depth > 15.0)),
    }


def sample_random_tumour(rng: np.random.Generator, deformation: dict) -> dict:
    """A randomised tumour for a case with ``deformation``: site kind, centre, sizes, shape, mass effect."""
    template = load_template()
    kinds = list(SITE_KINDS)
    kind = kinds[int(rng.choice(len(kinds), p=list(SITE_KINDS.values())))]
    sites = random_tumour_sites()[kind]
    site = sites[int(rng.integers(len(sites)))]
    site_mm = (template.index_to_lps @ np.append(site.astype(float), 1.0))[:3]
    matrix, offset = pullback_affine(deformation)
    centre = np.linalg.solve(matrix, site_mm - offset)
    r = RANDOM_TUMOUR_RANGES
    enhancing = sample_uniform(rng, r["radius_enhancing_mm"])
    core = max(enhancing * sample_uniform(rng, r["core_ratio"]), 3.0)
    enhancing = max(enhancing, core + 2.5)  # a rim of at least 2.5 mm
    oedema = min(enhancing * sample_uniform(rng, r["oedema_ratio"]), 45.0)
    core_offset = rng.normal(0.0, 1.0, 3)
    core_offset *= sample_uniform(rng, (0.0, 0.3)) * enhancing / max(np.linalg.norm(core_offset), 1e-6)
    return {
        "site": kind,
        "hemisphere": "left" if site_mm[0] > 0 else "right",  # LPS: +x is the patient's left
        "centre_mm": [float(c) for c in centre],
        "radius_enhancing_mm": enhancing,
        "radius_core_mm": core,
        "radius_oedema_mm": oedema,
        "core_offset_mm": [float(c) for c in core_offset],
        "axes": [float(a) for a in rng.uniform(*r["axes"], 3)],
        "orientation_deg": [float(a) for a in rng.uniform(-180.0, 180.0, 3)],
        "irregularity": sample_uniform(rng, r["irregularity"]),
        "oedema_irregularity": sample_uniform(rng, r["oedema_irregularity"]),
        "white_matter_preference": sample_uniform(rng, r["white_matter_preference"]),
        "mass_effect": sample_uniform(rng, r["mass_effect"]),
        "mass_sigma_mm": enhancing * sample_uniform(rng, r["mass_sigma_ratio"]),
        "haemorrhage": sample_uniform(rng, (0.3, 0.9)) if rng.uniform() < HAEMORRHAGE_PROBABILITY else 0.0,
    }
