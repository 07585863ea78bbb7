"""The model grid's in-plane resampling: a coarse case goes to a finer model grid and back.

Real images through SimpleITK files: a 2.5 mm case with sharp tissue edges on a 1.5 mm model grid.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MRISynthesisLib.core import preprocessing
from MRISynthesisLib.core.preprocessing import ModelGrid

COARSE_MM, MODEL_MM = 2.5, 1.5


def _coarse_case(tmp_path, pixel=sitk.sitkFloat32) -> sitk.Image:
    """A 2.5 mm head with a bright ring, a dark core and fine stripes on a zero background, read back from disk."""
    z, y, x = np.mgrid[0:6, 0:64, 0:64]
    radius = np.hypot(y - 31.5, x - 31.5)
    array = np.where(radius < 26, 400.0, 0.0) + np.where((radius > 10) & (radius < 14), 600.0, 0.0)
    array[:, 20:44, 20:44] += np.where((x[:, 20:44, 20:44] // 2) % 2 == 0, 150.0, 0.0)  # 5 mm stripes
    array[radius < 6] = 50.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((COARSE_MM, COARSE_MM, 4.0))
    image.SetOrigin((-80.0, -80.0, 0.0))
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(sitk.Cast(image, pixel), str(path))
    return sitk.ReadImage(str(path))


def _round_trip(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The model-grid array and the image brought back to the case grid (float32)."""
    grid = ModelGrid.plan(image, slice_shape=(112, 112), axial_spacing=MODEL_MM)
    assert grid.resampled is not None and grid.model_spacing[:2] == pytest.approx((MODEL_MM, MODEL_MM))
    model = grid.to_model(image)
    back = grid.from_model(model)
    assert back.GetSize() == image.GetSize() and back.GetSpacing() == image.GetSpacing()
    return model, sitk.GetArrayFromImage(back)


def test_a_coarse_case_comes_back_sharper_than_with_linear_interpolation(tmp_path, monkeypatch):
    image = _coarse_case(tmp_path)
    original = sitk.GetArrayFromImage(image)
    _, cubic = _round_trip(image)
    monkeypatch.setattr(preprocessing, "IMAGE_INTERPOLATOR", sitk.sitkLinear)
    _, linear = _round_trip(image)
    cubic_error, linear_error = np.abs(cubic - original).mean(), np.abs(linear - original).mean()
    assert cubic_error < 0.75 * linear_error, (cubic_error, linear_error)
    # the stripes keep more of their contrast (linear interpolation there and back averages them away)
    stripes = (slice(None), slice(22, 42), slice(22, 42))
    assert cubic[stripes].std() > linear[stripes].std()
    assert np.abs(cubic[stripes] - original[stripes]).mean() < np.abs(linear[stripes] - original[stripes]).mean()


def test_resampling_invents_no_intensity_outside_the_source_range(tmp_path):
    for pixel in (sitk.sitkFloat32, sitk.sitkUInt16):  # an unsigned scan must not wrap below zero either
        image = _coarse_case(tmp_path, pixel)
        brightest = float(sitk.GetArrayViewFromImage(image).max())
        model, back = _round_trip(image)
        assert model.dtype == np.float32
        assert model.min() >= 0.0 and model.max() <= brightest
        assert back.min() >= 0.0 and back.max() <= model.max() + 1e-3
        assert model.max() > 0.9 * brightest  # the brightest structure is still there


def test_probability_maps_stay_probabilities_and_labels_stay_labels(tmp_path, monkeypatch):
    image = _coarse_case(tmp_path)
    grid = ModelGrid.plan(image, slice_shape=(112, 112), axial_spacing=MODEL_MM)
    shape = grid.to_model(image).shape
    probability = np.zeros(shape, np.float32)
    probability[:, 40:70, 40:70] = 1.0  # a hard-edged map: the spline would overshoot above 1 without the clip
    back = sitk.GetArrayFromImage(grid.from_model(probability))
    assert back.min() >= 0.0 and back.max() <= 1.0 and back.max() == pytest.approx(1.0)
    label = np.zeros(shape, np.float32)
    label[:, 40:70, 40:70], label[:, 50:60, 50:60] = 2.0, 3.0
    labels_back = sitk.GetArrayFromImage(grid.from_model(label, nearest=True))
    assert set(np.unique(labels_back)) == {0.0, 2.0, 3.0}
    # a smooth map needs no clipping: inside, the spline agrees with linear interpolation
    smooth = ndimage.gaussian_filter(probability, (0, 3, 3))
    cubic = sitk.GetArrayFromImage(grid.from_model(smooth))
    monkeypatch.setattr(preprocessing, "IMAGE_INTERPOLATOR", sitk.sitkLinear)
    linear = sitk.GetArrayFromImage(grid.from_model(smooth))
    assert np.abs(cubic - linear).max() < 0.05 * smooth.max()
    assert cubic.max() > 0.5 * smooth.max()  # and the map is there, not clipped away
