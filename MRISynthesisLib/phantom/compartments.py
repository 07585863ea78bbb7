"""Partial-volume compartments of a case: tissue, CSF and vessel fractions and the grey/white
coordinate from the sampled template, and the tumour put in among them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .fields import smooth_field
from .grid import PhantomGrid
from .template import load_template
from .tumour import LABELS, tumour_labels, tumour_memberships

__all__ = ["Compartments", "healthy_compartments", "insert_tumour"]


@dataclass
class Compartments:
    """Volume fractions and tissue maps of the crop of one case, (z, y, x) float32 arrays."""

    brain: np.ndarray  # bool
    tissue: np.ndarray  # grey + white matter (with oedema) fraction
    csf: np.ndarray
    vessel: np.ndarray  # blood, choroid plexus, falx, dura
    white: np.ndarray  # white-matter share of tissue, 0 = grey, 1 = white, texture included
    gm: np.ndarray  # healthy grey matter fraction (reported)
    wm: np.ndarray  # healthy white matter fraction (reported)
    oedema: Optional[np.ndarray] = None  # in the tumour box: oedema weight of tissue
    core: Optional[np.ndarray] = None  # in the tumour box: fractions of necrosis and enhancing tumour
    enhancing: Optional[np.ndarray] = None
    heterogeneity: Optional[np.ndarray] = None
    box: Optional[tuple[slice, ...]] = None


def healthy_compartments(rng: np.random.Generator, channels: dict[str, np.ndarray],
                          grid: PhantomGrid) -> Compartments:
    """Tissue, CSF and vessel fractions plus the grey/white coordinate from template channels.

    The grey/white coordinate averages the probability-map ratio with the position of the
    template intensity (CSF partial volume removed) between pure grey and pure white
    matter: the intensity carries the fine anatomy the blurred probability maps lose.
    """
    intensity = load_template().intensity
    brain = channels["mask"] >= 0.5
    gm, wm = channels["gm"], channels["wm"]
    tissue = np.clip(gm + wm, 0.0, 1.0) * brain
    csf = (1.0 - tissue) * brain
    share = wm / np.maximum(gm + wm, 1e-3)
    pure = (channels["t1"] - csf * np.float32(intensity["csf"])) / np.maximum(tissue, 0.2)
    by_intensity = (pure - np.float32(intensity["gm"])) / np.float32(intensity["wm"] - intensity["gm"])
    white = np.clip(0.5 * share + 0.5 * by_intensity, 0.0, 1.0).astype(np.float32)

    spacing_zyx = tuple(reversed(grid.spacing))
    veins = np.exp(-((smooth_field(rng, brain.shape, 12.0, spacing_zyx) / 0.12) ** 2))
    dura = np.clip((0.95 - channels["mask"]) / 0.3, 0.0, 1.0) * (
        smooth_field(rng, brain.shape, 15.0, spacing_zyx) > 0.3)
    vessel = np.clip(channels["vessel_static"] + 0.7 * veins * channels["superficial_csf"] + 0.5 * dura,
                     0.0, 1.0)
    vessel = np.minimum(vessel * brain, csf)
    return Compartments(brain=brain, tissue=tissue, csf=csf - vessel, vessel=vessel, white=white,
                         gm=gm * brain, wm=wm * brain)


def _add_tumour(comp: Compartments, members: dict[str, np.ndarray], box: tuple[slice, ...]) -> None:
    """Put the tumour into the compartments: it displaces tissue, CSF and vessels, effaces sulci."""
    whole, core_enh, core = members["whole"], members["core_enhancing"], members["core"]
    csf = comp.csf[box]
    efface = 0.8 * whole * np.clip((0.85 - csf) / 0.3, 0.0, 1.0)  # sulci yes, ventricles no
    tissue = comp.tissue[box] + csf * efface
    csf = csf * (1.0 - efface)
    keep = 1.0 - core_enh
    comp.tissue[box] = tissue * keep
    comp.csf[box] = csf * keep
    comp.vessel[box] = comp.vessel[box] * keep
    comp.oedema = whole * members["oedema_strength"]
    comp.core = core
    comp.enhancing = core_enh - core
    comp.heterogeneity = members["heterogeneity"]
    comp.box = box


def insert_tumour(rng: np.random.Generator, comp: Compartments, tumour: dict, grid: PhantomGrid,
                   crop: tuple[slice, slice, slice], box: tuple[slice, ...],
                   hemisphere: np.ndarray) -> np.ndarray:
    """Shape the tumour, put it into ``comp`` and return its labels in ``box``.

    Adds the label volumes (ml) to ``tumour`` as ``volume_ml``.
    """
    members = tumour_memberships(rng, tumour, grid, crop, box, comp.white[box], comp.brain[box],
                                  hemisphere)
    csf_before = comp.csf[box] + comp.vessel[box]
    _add_tumour(comp, members, box)
    labels = tumour_labels(members, csf_before)
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    tumour["volume_ml"] = {name: float(np.count_nonzero(labels == value) * voxel_ml)
                           for name, value in LABELS.items()}
    return labels
