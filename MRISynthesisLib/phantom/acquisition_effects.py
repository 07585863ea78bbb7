"""Acquisition effects of randomised cases: bias fields shared in part by the sequences of one case (one
coil), thick slices resampled to the case grid, Gibbs ringing of a truncated k-space, mild motion
and Rician noise at the acquired resolution.

The chain follows the scanner and the BraTS preprocessing: the object (noise-free signal times
the coil's receive field) is seen through the slice profile and sampled at the acquired slice
positions; each slice is encoded in a k-space that stops at the acquired in-plane resolution
(ringing) and in which the head may move between phase-encoding lines (ghosting, blur);
complex Gaussian noise is added and the magnitude taken (Rician); finally the volume is
interpolated back to the case grid and skull-stripped (zero outside the brain).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from .fields import smooth_field
from .physics import sample_uniform

__all__ = [
    "SLICE_AXES",
    "sample_coil",
    "bias_fields",
    "thick_slices",
    "from_thick_slices",
    "kspace_effects",
    "rician",
    "acquire_volume",
]

#: Array axis (z, y, x) across which the slices of each orientation are stacked.
SLICE_AXES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


def sample_coil(rng: np.random.Generator) -> dict:
    """One case's coil: how much of the bias field its sequences share, the field's length scale,
    and the brightening towards the brain surface of a receive array."""
    return {"shared_fraction": sample_uniform(rng, (0.5, 0.95)),
            "step_mm": sample_uniform(rng, (70.0, 140.0)),
            "surface_gain": sample_uniform(rng, (0.0, 0.35))}


def bias_fields(rng: np.random.Generator, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
                coil: dict, stds: dict, surface: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Multiplicative bias field of each sequence (keys of ``stds``), partly shared.

    Log field of sequence s: ``std_s (sqrt(w) shared + sqrt(1 - w) own_s)`` with ``w`` the coil's
    shared fraction, so two sequences' log fields correlate with coefficient ``w``, plus the
    same ``surface_gain * surface`` for all (``surface``: 0 deep, 1 at the brain surface).
    """
    w = float(coil["shared_fraction"])
    shared = smooth_field(rng, shape, coil["step_mm"], spacing_zyx)
    profile = np.float32(coil["surface_gain"]) * surface if surface is not None else np.float32(0.0)
    fields = {}
    for key, std in stds.items():
        own = smooth_field(rng, shape, coil["step_mm"], spacing_zyx)
        log_field = np.float32(std) * (np.float32(np.sqrt(w)) * shared + np.float32(np.sqrt(1.0 - w)) * own)
        fields[key] = np.exp(log_field + profile).astype(np.float32)
    return fields


def _slice_positions(n: int, spacing_mm: float, thickness_mm: float, gap_mm: float) -> np.ndarray:
    """Voxel positions (along one axis of ``n`` voxels) of the acquired slice centres."""
    step = (thickness_mm + gap_mm) / spacing_mm
    count = max(int(np.floor((n - 1) / step)) + 1, 2)
    start = ((n - 1) - step * (count - 1)) / 2.0
    return (start + step * np.arange(count)).astype(np.float64)


def thick_slices(volume: np.ndarray, axis: int, spacing_mm: float, thickness_mm: float,
                 gap_mm: float) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The slices a 2D acquisition of ``thickness_mm`` (plus ``gap_mm``) sees, and their positions.

    The slice profile is a Gaussian of full width at half maximum ``thickness_mm``. Slices no
    thicker than 1.2 voxels leave the volume as it is (positions ``None``).
    """
    if thickness_mm + gap_mm <= 1.2 * spacing_mm:
        return volume, None
    sigma = thickness_mm / 2.355 / spacing_mm
    blurred = ndimage.gaussian_filter1d(volume, sigma, axis=axis, mode="constant")
    positions = _slice_positions(volume.shape[axis], spacing_mm, thickness_mm, gap_mm)
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, volume.shape[axis] - 1)
    frac = (positions - lower).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = -1
    frac = frac.reshape(shape)
    return (np.take(blurred, lower, axis=axis) * (1.0 - frac) + np.take(blurred, upper, axis=axis) * frac), positions


def from_thick_slices(slices: np.ndarray, positions: Optional[np.ndarray], axis: int, n: int) -> np.ndarray:
    """Linear interpolation of acquired slices back to the ``n`` voxels of the grid (BraTS resampling)."""
    if positions is None:
        return slices
    grid = np.clip(np.arange(n, dtype=np.float64), positions[0], positions[-1])
    upper = np.clip(np.searchsorted(positions, grid, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    frac = ((grid - positions[lower]) / (positions[upper] - positions[lower])).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(slices, lower, axis=axis) * (1.0 - frac) + np.take(slices, upper, axis=axis) * frac


def kspace_effects(rng: np.random.Generator, volume: np.ndarray, slice_axis: int,
                   spacing_mm: tuple[float, float, float], inplane_mm: float, apodisation: float,
                   motion_mm: float, motion_steps: int) -> np.ndarray:
    """Complex image after in-plane k-space truncation (Gibbs ringing) and motion between lines.

    ``spacing_mm`` is the grid spacing along (z, y, x). k-space beyond ``1 / (2 inplane_mm)``
    is cut (nothing is cut when the grid is coarser than the acquisition), softened at its
    edge by a Hann taper of relative width ``apodisation``. With ``motion_mm`` > 0 the head
    moves ``motion_steps`` times during the scan: after each move the remaining phase-encode
    lines see the object shifted by a random in-plane step, ``motion_mm`` in size overall.
    """
    axes = tuple(a for a in range(3) if a != slice_axis)
    cut = [min(1.0, spacing_mm[a] / inplane_mm) for a in axes]
    if min(cut) >= 1.0 and motion_mm <= 0.0:
        return volume.astype(np.complex64)
    kspace = np.fft.fftn(volume, axes=axes)
    freqs = [np.fft.fftfreq(volume.shape[a]) * 2.0 for a in axes]  # -1 .. 1: Nyquist of the grid
    for a, f, c in zip(axes, freqs, cut):
        if c < 1.0:
            edge = max(apodisation * c, 1e-3)
            taper = np.clip((c - np.abs(f)) / edge, 0.0, 1.0)
            window = (0.5 - 0.5 * np.cos(np.pi * taper)).astype(np.float32)
            shape = [1, 1, 1]
            shape[a] = -1
            kspace *= window.reshape(shape)
    if motion_mm > 0.0:
        phase_axis, read_axis = axes
        n_lines = volume.shape[phase_axis]
        order = np.argsort(np.abs(freqs[0]), kind="stable")  # centre-out: late moves hit the edges
        times = np.empty(n_lines)
        times[order] = np.arange(n_lines) / n_lines
        moves = np.sort(rng.uniform(0.2, 1.0, motion_steps))
        steps = rng.normal(0.0, 1.0, (motion_steps, 2))
        steps *= (motion_mm / motion_steps) / np.maximum(np.sqrt((steps ** 2).sum(axis=1, keepdims=True)), 1e-6)
        shift = np.cumsum(steps, axis=0)  # mm along (phase, read) after each move
        displacement = np.zeros((n_lines, 2))
        for when, where in zip(moves, shift):
            displacement[times >= when] = where
        cycles = [freqs[0] / 2.0 / spacing_mm[phase_axis], freqs[1] / 2.0 / spacing_mm[read_axis]]
        phase = (displacement[:, 0:1] * cycles[0][:, None] + displacement[:, 1:2] * cycles[1][None, :])
        ramp = np.exp(-2j * np.pi * phase).astype(np.complex64)
        shape = [1, 1, 1]
        shape[phase_axis], shape[read_axis] = n_lines, volume.shape[read_axis]
        kspace *= ramp.reshape(shape)
    return np.fft.ifftn(kspace, axes=axes).astype(np.complex64)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude after adding complex Gaussian noise of ``sigma`` per channel (Rician for real input)."""
    sigma32 = np.float32(sigma)
    real = image.real + sigma32 * rng.standard_normal(image.shape, dtype=np.float32)
    imag = image.imag + sigma32 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def acquire_volume(rng: np.random.Generator, signal: np.ndarray, bias: np.ndarray, brain: np.ndarray,
                   acquisition: dict, spacing_zyx: tuple[float, float, float], sigma: float) -> np.ndarray:
    """One sequence through the whole chain (see the module docstring); zero outside ``brain``.

    ``signal`` is noise-free, ``bias`` the multiplicative field, ``sigma`` the noise level per
    acquired voxel in the units of ``signal``.
    """
    axis = SLICE_AXES[acquisition["slice_axis"]]
    slices, positions = thick_slices(signal * bias, axis, spacing_zyx[axis], acquisition["slice_thickness_mm"],
                                     acquisition["slice_gap_mm"])
    encoded = kspace_effects(rng, slices, axis, spacing_zyx, acquisition["inplane_mm"],
                             acquisition["apodisation"], acquisition["motion_mm"], acquisition["motion_steps"])
    magnitude = rician(rng, encoded, sigma)
    image = from_thick_slices(magnitude, positions, axis, signal.shape[axis])
    return (image * brain).astype(np.float32)
