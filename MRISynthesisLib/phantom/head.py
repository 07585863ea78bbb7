"""The head around a phantom brain: CSF, skull, muscle, scalp fat and skin outside the brain mask, a skull
base and a neck below it, so that clinical-like series show an un-skull-stripped head.

Everything is derived from the case's brain mask. The *envelope* is the brain, the space below it
down to its lowest slice (skull base) and, further down, a neck column that narrows within 30 mm
to an ellipse around a spinal cord (the lowest brain slice continued downwards). Around the
envelope lie shells at increasing distance: CSF, inner table, diploe (fatty marrow), outer table,
muscle (galea; temporalis at the temples), subcutaneous fat and skin; in the skull base CSF and skull follow the
brain from below and deep tissue (bone, marrow, muscle) fills the rest. Layer thicknesses vary
smoothly over the head (random fields, 40 mm); in the neck the CSF and bone shells turn into
muscle. Below the skull base the head coil's sensitivity falls off. Distances are computed on a
grid of about 2 mm (a 1 mm distance transform of the whole head takes seconds) and interpolated.

Intensities come from the same signal equations and per-case protocols as the brain
(:mod:`.physics`), with the tissue parameters of :data:`HEAD_TISSUE_RANGES`, and the same scanner
gain, so the head and the brain of one series are on one intensity scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..sequences import SEQUENCES, Sequence
from .fields import smooth_field
from .grid import PhantomGrid
from .physics import protocol_signal, relaxation_rates, sample_uniform, with_gadolinium

__all__ = ["HEAD_TISSUE_RANGES", "LAYER_RANGES", "HEAD_MARGINS_MM", "HeadModel", "build_head",
           "series_gain"]

#: T1/T2 (ms) and proton density of the tissues around the brain at 3 T, sampled per case.
#: Subcutaneous fat: T1 about 370-380 ms (Gold et al. 2004; de Bazelaire et al. 2004); its
#: apparent T2 is taken long (100-135 ms) because J-coupling makes fat bright on turbo spin
#: echo. Skeletal muscle: T1 about 1400 ms, T2 32-50 ms (Gold 2004; Stanisz et al. 2005).
#: Skin (dermis): intermediate T1, short T2 (collagen); approximate. Cortical bone holds little
#: water with a T2* below 1 ms, so it is dark at every echo time used here. What this gives,
#: as in routine scans without fat suppression: scalp fat and diploe bright on T1, fat bright
#: on T2 and FLAIR (FLAIR's long TI leaves fat fully recovered), muscle and skin darker than
#: white matter, bone black everywhere, the CSF shell bright on T2 and nulled on FLAIR.
HEAD_TISSUE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "fat": {"T1": (360.0, 400.0), "T2": (100.0, 135.0), "PD": (0.90, 1.0)},
    "muscle": {"T1": (1350.0, 1450.0), "T2": (32.0, 50.0), "PD": (0.70, 0.76)},
    "skin": {"T1": (900.0, 1200.0), "T2": (35.0, 55.0), "PD": (0.60, 0.70)},
    "bone": {"T1": (200.0, 300.0), "T2": (0.3, 0.6), "PD": (0.15, 0.20)},
}
#: Gadolinium (mM) reaching each tissue after a standard dose (extracellular space share).
HEAD_GADOLINIUM_RANGES: dict[str, tuple[float, float]] = {
    "fat": (0.01, 0.03), "muscle": (0.08, 0.15), "skin": (0.15, 0.3), "bone": (0.0, 0.0),
}
#: Mean thicknesses (mm) of the shells per case, the temporalis at its thickest, the share of
#: fatty marrow in the diploe and the size of the neck relative to :data:`_NECK_RADII_MM`.
#: Adult calvarium 5-8 mm, scalp 5-8 mm of skin, fat and galea.
LAYER_RANGES: dict[str, tuple[float, float]] = {
    "csf": (1.5, 3.0), "skull": (5.0, 8.0), "galea": (0.5, 1.2), "fat": (3.0, 6.0),
    "skin": (1.5, 2.5), "temporalis": (4.0, 8.0), "marrow_fraction": (0.4, 0.7), "neck_scale": (0.9, 1.1),
}
#: How far the head grid reaches beyond the brain grid (mm): (below, above) in z, each side in y and x.
HEAD_MARGINS_MM = {"below": 64.0, "above": 32.0, "y": 16.0, "x": 12.0}
#: Order of the tissue fractions of non-brain voxels.
_TISSUES = ("csf", "bone", "marrow", "muscle", "fat", "skin")
#: The head's envelope in the neck (muscle, the shells around it): ellipse radii (x, y) in mm,
#: centre this far anterior of the cord.
_NECK_RADII_MM = (42.0, 38.0)
_NECK_ANTERIOR_MM = 12.0
_CORD_RADIUS_MM = 8.0
#: What fills the skull base beyond its inner layers (face, petrous bone, muscle), by volume.
_DEEP_TISSUE = {"bone": 0.3, "marrow": 0.3, "muscle": 0.4}


@dataclass
class HeadModel:
    """The non-brain part of a head on the *head grid* (the brain grid extended by :data:`HEAD_MARGINS_MM`).

    ``index`` are flat head-grid indices of every non-brain head voxel, ``signals`` their
    noise-free intensity per sequence (scanner gain applied), ``cord`` and ``cord_source``
    flat indices of the spinal cord and of the lowest brain slice it copies, ``falloff`` the
    coil sensitivity per head-grid slice (z).
    """

    grid: PhantomGrid
    brain_offset: tuple[int, int, int]  # (z, y, x) head-grid index of brain-grid voxel 0
    index: np.ndarray
    signals: dict[Sequence, np.ndarray]
    cord: np.ndarray
    cord_source: np.ndarray
    falloff: np.ndarray
    parameters: dict

    def image(self, seq: Sequence, brain_signal: sitk.Image) -> sitk.Image:
        """Noise-free head of one sequence: ``brain_signal`` (zero outside the brain) plus the head around it."""
        shape = self.grid.shape
        volume = np.zeros(shape, dtype=np.float32)
        brain = sitk.GetArrayFromImage(brain_signal).astype(np.float32, copy=False)
        z, y, x = self.brain_offset
        volume[z:z + brain.shape[0], y:y + brain.shape[1], x:x + brain.shape[2]] = brain
        flat = volume.reshape(-1)
        flat[self.index] = self.signals[seq]
        flat[self.cord] = flat[self.cord_source]
        volume *= self.falloff[:, None, None]
        return self.grid.apply_to(sitk.GetImageFromArray(volume))


def series_gain(params: dict, seq: Sequence, wm_level: float) -> float:
    """Scanner gain that puts white matter at ``wm_level``, as :mod:`.acquisition` scales the brain."""
    pd, r1, r2 = relaxation_rates(params["tissues"]["wm"])
    if seq == Sequence.T1C:
        r1, r2 = with_gadolinium(r1, r2, params["gadolinium"]["wm"], params["gadolinium"])
    return float(wm_level / protocol_signal(params["protocols"][seq.value], pd, r1, r2))


def _sample_head(rng: np.random.Generator) -> dict:
    """Per-case tissue parameters, gadolinium and layer thicknesses of the head (JSON-serialisable)."""
    return {
        "tissues": {name: {key: sample_uniform(rng, bounds) for key, bounds in ranges.items()}
                    for name, ranges in HEAD_TISSUE_RANGES.items()},
        "gadolinium": {name: sample_uniform(rng, bounds) for name, bounds in HEAD_GADOLINIUM_RANGES.items()},
        "layers_mm": {name: sample_uniform(rng, bounds) for name, bounds in LAYER_RANGES.items()},
    }


def _tissue_signals(head: dict, params: dict, seq: Sequence) -> dict[str, float]:
    """Gained signal of each head tissue for one sequence (marrow: fat and bone by volume)."""
    protocol = params["protocols"][seq.value]
    gain = series_gain(params, seq, params["acquisition"][seq.value]["wm_level"])
    out = {}
    for name, tissue in list(head["tissues"].items()) + [("csf", params["tissues"]["csf"])]:
        pd, r1, r2 = relaxation_rates(tissue)
        if seq == Sequence.T1C and name in head["gadolinium"]:
            r1, r2 = with_gadolinium(r1, r2, head["gadolinium"][name], params["gadolinium"])
        out[name] = gain * float(protocol_signal(protocol, pd, r1, r2))
    marrow = head["layers_mm"]["marrow_fraction"]
    out["marrow"] = marrow * out["fat"] + (1.0 - marrow) * out["bone"]
    return out


def _head_grid(brain_grid: PhantomGrid) -> tuple[PhantomGrid, tuple[int, int, int]]:
    """The brain grid extended by :data:`HEAD_MARGINS_MM` (whole voxels) and the brain's (z, y, x) offset."""
    if not np.allclose(brain_grid.direction, np.eye(3).ravel()):
        raise ValueError("phantom head: the brain grid must have an identity direction")
    sx, sy, sz = brain_grid.spacing
    lo = (math.ceil(HEAD_MARGINS_MM["x"] / sx), math.ceil(HEAD_MARGINS_MM["y"] / sy),
          math.ceil(HEAD_MARGINS_MM["below"] / sz))
    hi = (lo[0], lo[1], math.ceil(HEAD_MARGINS_MM["above"] / sz))
    size = tuple(int(n + a + b) for n, a, b in zip(brain_grid.size, lo, hi))
    origin = tuple(float(o - a * s) for o, a, s in zip(brain_grid.origin, lo, brain_grid.spacing))
    return PhantomGrid(size=size, spacing=brain_grid.spacing, origin=origin), (lo[2], lo[1], lo[0])


def _axes_mm(grid: PhantomGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS z, y and x (mm) of the head-grid voxel centres along each axis (identity direction)."""
    return tuple(grid.origin[a] + grid.spacing[a] * np.arange(grid.size[a]) for a in (2, 1, 0))


def _envelope(brain: np.ndarray, grid: PhantomGrid, neck_scale: float) -> tuple[np.ndarray, ...]:
    """Skull base, neck column and cord (bool arrays) below the brain, and the lowest brain slice."""
    z_mm, y_mm, x_mm = _axes_mm(grid)
    has_brain = np.flatnonzero(brain.any(axis=(1, 2)))
    if has_brain.size == 0:
        raise ValueError("phantom head: the brain mask is empty")
    z_low = int(has_brain[0])
    above = np.flip(np.logical_or.accumulate(np.flip(brain, axis=0), axis=0), axis=0)
    base = above & ~brain
    base[:z_low] = False
    bottom = brain[z_low]
    cy, cx = (float(np.mean(c)) for c in np.nonzero(bottom))
    cord_y = y_mm[0] + cy * grid.spacing[1]
    cord_x = x_mm[0] + cx * grid.spacing[0]
    yy, xx = y_mm[:, None], x_mm[None, :]
    cord_disc = bottom & ((yy - cord_y) ** 2 + (xx - cord_x) ** 2 <= _CORD_RADIUS_MM ** 2)
    footprint = above[z_low]
    rx, ry = (neck_scale * r for r in _NECK_RADII_MM)
    ellipse = ((xx - cord_x) / rx) ** 2 + ((yy - cord_y + _NECK_ANTERIOR_MM) / ry) ** 2
    column = np.zeros_like(brain)
    cord = np.zeros_like(brain)
    for z in range(z_low):
        depth = z_mm[z_low] - z_mm[z]
        grow = 1.0 + 1.5 * max(0.0, 1.0 - depth / 30.0)  # about the full footprint at the skull base
        column[z] = (footprint & (ellipse <= grow ** 2)) | cord_disc
        cord[z] = cord_disc
    return base, column, cord, z_low


def _coarse(mask: np.ndarray, factor: int) -> np.ndarray:
    """Every ``factor``-th voxel along each axis (distances need no finer grid)."""
    return mask[::factor, ::factor, ::factor]


def _at(coarse: np.ndarray, points: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation of a coarse array at fine (z, y, x) index ``points`` (3, n)."""
    return ndimage.map_coordinates(coarse, points / np.float32(factor), order=1, mode="nearest",
                                   output=np.float32, prefilter=False)


def _distance(mask: np.ndarray, factor: int, spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) to ``mask`` on the coarse grid (every ``factor``-th voxel)."""
    return ndimage.distance_transform_edt(~_coarse(mask, factor), sampling=spacing).astype(np.float32)


def _shell_fractions(rng: np.random.Generator, envelope: np.ndarray, base: np.ndarray, grid: PhantomGrid,
                     z_low: int, brain: np.ndarray, layers: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Flat indices of the voxels around the envelope and in the skull base, and their tissue fractions.

    Around the envelope the shells run from CSF to skin (partial volume at every boundary).
    In the skull base (below the brain, inside the envelope) CSF and skull follow the brain
    from below, and deep tissue (bone, marrow, muscle) fills the rest.
    """
    spacing_zyx = tuple(reversed(grid.spacing))
    factor = max(1, int(round(2.0 / min(grid.spacing))))
    coarse_spacing = tuple(s * factor for s in spacing_zyx)
    outer = _distance(envelope, factor, coarse_spacing)
    near = outer <= 36.0 + 2.0 * max(coarse_spacing)  # beyond every shell but in rare corners
    for axis in range(3):
        near = np.repeat(near, factor, axis=axis)
    near = near[: envelope.shape[0], : envelope.shape[1], : envelope.shape[2]] & ~envelope
    shell = np.flatnonzero(near)
    del near
    index = np.concatenate([shell, np.flatnonzero(base)])
    points = np.stack(np.unravel_index(index, envelope.shape)).astype(np.float32)
    in_base = np.arange(index.size) >= shell.size
    d = np.empty(index.size, dtype=np.float32)
    d[~in_base] = _at(outer, points[:, ~in_base], factor)
    d[in_base] = _at(_distance(brain, factor, coarse_spacing), points[:, in_base], factor)
    half = np.float32(0.5 * min(grid.spacing))
    d = np.maximum(d - half, half)
    fields = {name: smooth_field(rng, envelope.shape, 40.0, spacing_zyx).reshape(-1)[index]
              for name in ("csf", "skull", "fat", "skin")}
    z_mm, y_mm, x_mm = _axes_mm(grid)
    z = z_mm[0] + points[0] * np.float32(spacing_zyx[0])
    y = y_mm[0] + points[1] * np.float32(spacing_zyx[1])
    x = x_mm[0] + points[2] * np.float32(spacing_zyx[2])
    neck = np.clip((z_mm[z_low] - z) / 12.0, 0.0, 1.0)  # below the skull base

    inside = np.nonzero(brain)
    centre = [float(np.mean(axis_mm[i])) for axis_mm, i in zip((z_mm, y_mm, x_mm), inside)]
    half_width = 0.5 * float(np.ptp(x_mm[inside[2]]))
    height = float(np.ptp(z_mm[inside[0]]))
    lateral = np.clip((np.abs(x - centre[2]) - 0.55 * half_width) / (0.3 * half_width), 0.0, 1.0)
    temporal = lateral * np.exp(-((z - (z_mm[z_low] + 0.45 * height)) / 25.0) ** 2) \
        * np.exp(-((y - centre[1] + 10.0) / 45.0) ** 2)

    def vary(name: str, swing: float) -> np.ndarray:
        return np.float32(layers[name]) * np.clip(1.0 + np.float32(swing) * fields[name], 0.4, 1.6)

    csf, skull, fat, skin = vary("csf", 0.3), vary("skull", 0.2), vary("fat", 0.35), vary("skin", 0.2)
    table = np.minimum(np.float32(1.5), skull / np.float32(3.0))
    muscle = np.float32(layers["galea"]) + np.float32(layers["temporalis"]) * temporal
    widths = (csf, table, skull - 2.0 * table, table, muscle, fat, skin)
    width = np.float32(np.mean(grid.spacing))
    fractions = {name: np.zeros(index.size, dtype=np.float32) for name in _TISSUES}
    start = np.zeros(index.size, dtype=np.float32)
    step_start = np.clip(d / width + 0.5, 0.0, 1.0)  # share of the voxel beyond the layer's start
    for name, thickness in zip(("csf", "bone", "marrow", "bone", "muscle", "fat", "skin"), widths):
        start = start + thickness
        step_end = np.clip((d - start) / width + 0.5, 0.0, 1.0)
        fractions[name] += step_start - step_end
        step_start = step_end
    rest = 1.0 - (fractions["csf"] + fractions["bone"] + fractions["marrow"])[in_base]
    for name in ("muscle", "fat", "skin"):
        fractions[name][in_base] = 0.0
    for name, share in _DEEP_TISSUE.items():
        fractions[name][in_base] += np.float32(share) * rest
    for name in ("csf", "bone", "marrow"):  # in the neck these shells are muscle
        fractions["muscle"] += neck * fractions[name]
        fractions[name] *= 1.0 - neck
    return index, fractions


def build_head(rng: np.random.Generator, brain_mask: sitk.Image, params: dict) -> HeadModel:
    """The head around one case's brain, with noise-free signals for all four sequences.

    ``brain_mask`` is the case's brain mask on its BraTS grid (identity direction), ``params``
    the case parameters (tissues, protocols, gadolinium, scanner gain). Every random draw
    comes from ``rng``.
    """
    head = _sample_head(rng)
    brain_grid = PhantomGrid(size=brain_mask.GetSize(), spacing=brain_mask.GetSpacing(),
                             origin=brain_mask.GetOrigin(), direction=brain_mask.GetDirection())
    grid, offset = _head_grid(brain_grid)
    brain = np.zeros(grid.shape, dtype=bool)
    mask = sitk.GetArrayFromImage(brain_mask) > 0
    brain[offset[0]:offset[0] + mask.shape[0], offset[1]:offset[1] + mask.shape[1],
          offset[2]:offset[2] + mask.shape[2]] = mask
    base, column, cord, z_low = _envelope(brain, grid, head["layers_mm"]["neck_scale"])
    envelope = brain | base | column
    shell, fractions = _shell_fractions(rng, envelope, base, grid, z_low, brain, head["layers_mm"])
    deep = np.flatnonzero(column & ~cord & ~brain)  # the neck: muscle
    index = np.concatenate([shell, deep])
    for name in _TISSUES:
        fractions[name] = np.concatenate([fractions[name], np.full(deep.size, name == "muscle", np.float32)])
    signals = {}
    for seq in SEQUENCES:
        values = _tissue_signals(head, params, seq)
        signal = np.zeros(index.size, dtype=np.float32)
        for name in _TISSUES:
            signal += np.float32(values[name]) * fractions[name]
        signals[seq] = signal

    cord_index = np.flatnonzero(cord)
    zz, yy, xx = np.unravel_index(cord_index, grid.shape)
    cord_source = np.ravel_multi_index((np.full_like(zz, z_low), yy, xx), grid.shape)
    z_mm = _axes_mm(grid)[0]
    falloff = np.exp(-(np.maximum(z_mm[z_low] - 25.0 - z_mm, 0.0) / 25.0) ** 2).astype(np.float32)
    head["grid"] = {"size": list(grid.size), "spacing": list(grid.spacing), "origin": list(grid.origin)}
    shell_voxels = float(sum(np.sum(fractions[name], dtype=np.float64) for name in _TISSUES))
    head["head_volume_ml"] = (shell_voxels + cord_index.size + np.count_nonzero(brain)) \
        * float(np.prod(grid.spacing)) / 1000.0
    return HeadModel(grid=grid, brain_offset=offset, index=index, signals=signals, cord=cord_index,
                     cord_source=cord_source, falloff=falloff, parameters=head)
