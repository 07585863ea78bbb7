"""Smooth random fields: zero-mean, unit-variance noise that varies over a chosen length, the raw
material of the warp, the bias field, the veins and dura and the tumour shapes."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["smooth_field"]


def _bspline_weights(n_out: int, step: float) -> np.ndarray:
    """(n_out, n_ctrl) cubic B-spline weights, knots every ``step`` samples, unit-norm rows.

    Unit-norm rows make a field built from unit-variance control values unit-variance
    at every sample, whatever its position between knots.
    """
    step = max(float(step), 1.0)
    u = np.arange(n_out, dtype=np.float64) / step + 1.0
    n_ctrl = int(math.ceil((n_out - 1) / step)) + 4
    t = np.abs(u[:, None] - np.arange(n_ctrl, dtype=np.float64)[None, :])
    w = np.where(t < 1.0, 2.0 / 3.0 - t ** 2 + 0.5 * t ** 3, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))
    w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int],
                  step_mm: float, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Zero-mean, unit-variance random field of ``shape`` (z, y, x), smooth over ``step_mm``.

    Random control values on a coarse grid are upsampled with separable cubic B-splines:
    three small matrix products instead of a large Gaussian filter.
    """
    wz, wy, wx = (_bspline_weights(n, step_mm / s) for n, s in zip(shape, spacing_zyx))
    coarse = rng.standard_normal((wz.shape[1], wy.shape[1], wx.shape[1])).astype(np.float32)
    field_ = coarse @ wx.T  # (cz, cy, nx)
    field_ = wy @ field_  # (cz, ny, nx)
    return (wz @ field_.reshape(wz.shape[1], -1)).reshape(shape)
