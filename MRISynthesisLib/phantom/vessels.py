"""Vessels and flow for randomised cases: arteries and veins as random tubes in the CSF spaces, stronger
sinus, choroid-plexus and dura enhancement, and the CSF inflow artefact of FLAIR.

Real skull-stripped scans keep their vessels: the arteries of the cisterns and fissures, the
cortical veins on the surface and the sinuses in the falx. They are bright on T1c (blood
carries the most gadolinium), often bright on gradient-echo T1 (inflow of unsaturated blood),
dark on spin-echo T2 and FLAIR (flow voids, :data:`.randomisation.VESSEL_FACTOR_RANGES`), and
they, not the tissue, set each volume's maximum. Tubes are where two independent random
fields are both near zero: the intersection of two random sheets is a random curve.
"""
from __future__ import annotations

import numpy as np

from .compartments import Compartments
from .fields import smooth_field
from .grid import PhantomGrid
from .physics import sample_uniform

__all__ = ["sample_vessel_parameters", "tube_fraction", "add_vessels", "flair_inflow_weight"]

#: Gradient of a unit smooth field times its step (see :mod:`.anatomy_variation`).
_FIELD_GRADIENT = 1.85


def sample_vessel_parameters(rng: np.random.Generator) -> dict:
    """Sizes and spacing of the arteries and veins, sinus/dura strength and the FLAIR inflow artefact."""
    return {
        "artery_radius_mm": sample_uniform(rng, (0.8, 2.0)),
        "artery_step_mm": sample_uniform(rng, (25.0, 40.0)),
        "vein_radius_mm": sample_uniform(rng, (0.4, 1.0)),
        "vein_step_mm": sample_uniform(rng, (12.0, 20.0)),
        "static_gain": sample_uniform(rng, (1.0, 1.7)),
        "flair_inflow": sample_uniform(rng, (0.2, 0.7)) if rng.uniform() < 0.7 else 0.0,
        "flair_inflow_extent": sample_uniform(rng, (0.8, 1.6)),
    }


def tube_fraction(rng: np.random.Generator, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
                  radius_mm: float, step_mm: float) -> np.ndarray:
    """Volume fraction of random tubes of ``radius_mm`` whose paths bend over about ``step_mm``.

    Thin tubes become partial volume: the fraction at the axis is about the tube's share of a
    voxel's cross-section.
    """
    h = float(np.mean(spacing_zyx))
    scale = np.float32(step_mm / _FIELD_GRADIENT)
    a = smooth_field(rng, shape, step_mm, spacing_zyx) * scale
    b = smooth_field(rng, shape, step_mm, spacing_zyx) * scale
    distance = np.sqrt(a * a + b * b)
    cross_section = min(1.0, float(np.pi * radius_mm ** 2 / h ** 2))
    return (np.clip((radius_mm + h / 2.0 - distance) / h, 0.0, 1.0) * np.float32(cross_section)).astype(np.float32)


def add_vessels(rng: np.random.Generator, comp: Compartments, channels: dict[str, np.ndarray],
                vessels: dict, grid: PhantomGrid) -> np.ndarray:
    """Add arteries (deep and superficial CSF spaces) and veins (superficial CSF) to ``comp``, in place.

    Tubes displace CSF only; the template's fixed enhancing structures (falx and sinus,
    choroid plexus) and the dura grow by ``static_gain``. Returns the arterial share of
    ``comp.vessel`` (fast flow: its own flow factor per sequence).
    """
    spacing_zyx = tuple(reversed(grid.spacing))
    shape = comp.brain.shape
    arteries = tube_fraction(rng, shape, spacing_zyx, vessels["artery_radius_mm"], vessels["artery_step_mm"])
    veins = tube_fraction(rng, shape, spacing_zyx, vessels["vein_radius_mm"], vessels["vein_step_mm"])
    superficial = np.clip(channels["superficial_csf"] * 2.0, 0.0, 1.0)
    wanted = comp.vessel * np.float32(vessels["static_gain"]) + arteries + veins * superficial
    room = comp.csf + comp.vessel
    vessel = np.minimum(wanted * comp.brain, room)
    comp.csf = (room - vessel).astype(np.float32)
    comp.vessel = vessel.astype(np.float32)
    return (vessel * arteries / np.maximum(wanted, 1e-6)).astype(np.float32)


def flair_inflow_weight(rng: np.random.Generator, comp: Compartments, ventricle_distance: np.ndarray,
                        vessels: dict, grid: PhantomGrid) -> np.ndarray:
    """Share of each voxel's CSF that flows in un-inverted on FLAIR (bright), in and near the ventricles.

    CSF that moves into the slice between inversion and readout was never inverted and keeps
    its full signal: the bright ventricular and cisternal flow artefact of 2D FLAIR. Patches
    are where a smooth random field is high; ``ventricle_distance`` (mm, over ``comp.brain``)
    confines them to within a few mm of the ventricles.
    """
    weight = np.zeros(comp.brain.shape, dtype=np.float32)
    if vessels["flair_inflow"] <= 0.0:
        return weight
    spacing_zyx = tuple(reversed(grid.spacing))
    blobs = smooth_field(rng, comp.brain.shape, 12.0, spacing_zyx)[comp.brain]
    near = np.clip((3.0 - ventricle_distance) / 2.0, 0.0, 1.0)
    threshold = np.float32(2.2 - 0.5 * vessels["flair_inflow_extent"])
    patches = np.clip((blobs - threshold) / 0.3, 0.0, 1.0)
    weight[comp.brain] = np.float32(vessels["flair_inflow"]) * near * patches
    return weight
