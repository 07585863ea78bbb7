"""Tests of MRISynthesisLib.metrics: SSIM against scikit-image, error metrics and Dice/HD95 by hand."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from MRISynthesisLib import metrics
from MRISynthesisLib.metrics import MetricsError


# --------------------------------------------------------------------------- fixtures


def _brain_like_pair(shape=(40, 48, 44), seed=0):
    """An MRI-like volume (textured ellipsoid on a zero background), a degraded copy, masks."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = [(s - 1) / 2 for s in shape]
    radii = [0.42 * s for s in shape]
    brain = sum(((c - m) / r) ** 2 for c, m, r in zip((z, y, x), centre, radii)) < 1
    tumour = ((z - centre[0] - 4) ** 2 + (y - centre[1]) ** 2 + (x - centre[2] + 5) ** 2) < 6**2
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    reference = np.where(brain, 600 + 180 * texture / texture.std(), 0.0)
    reference[tumour] += 250
    blurred = ndimage.gaussian_filter(reference, 0.8)
    test = np.where(brain, 0.97 * blurred + 20 + rng.normal(scale=25, size=shape), 0.0)
    return reference, test, brain, tumour & brain


@pytest.fixture(scope="module")
def brain_pair():
    return _brain_like_pair()


def _skimage_ssim(reference, test, window="gaussian", full=False):
    """scikit-image SSIM with Wang et al.'s settings (population covariance)."""
    data_range = float(reference.max() - reference.min())
    if window == "gaussian":
        options = dict(gaussian_weights=True, sigma=1.5)
    else:
        options = dict(win_size=7)
    return structural_similarity(
        reference, test, data_range=data_range, use_sample_covariance=False, full=full, **options
    )


# --------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("window", ["gaussian", "uniform"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ssim_equals_skimage(brain_pair, window, dtype):
    reference, test, _, _ = brain_pair
    reference, test = reference.astype(dtype), test.astype(dtype)
    expected = _skimage_ssim(reference, test, window)
    assert 0.3 < expected < 0.99  # the pair is neither identical nor unrelated
    assert metrics.ssim(reference, test, window=window) == pytest.approx(expected, abs=2e-6)


def test_ssim_equals_skimage_on_smoothed_noise():
    rng = np.random.default_rng(3)
    reference = ndimage.gaussian_filter(rng.normal(size=(30, 34, 28)), 2.0) * 40 + 100
    test = reference + rng.normal(scale=1.5, size=reference.shape)
    for window in ("gaussian", "uniform"):
        expected = _skimage_ssim(reference, test, window)
        assert metrics.ssim(reference, test, window=window) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("window", ["gaussian", "uniform"])
def test_ssim_map_equals_skimage_full_map(brain_pair, window):
    reference, test, _, _ = brain_pair
    _, expected_map = _skimage_ssim(reference, test, window, full=True)
    result = metrics.ssim_map(reference, test, window=window)
    assert result.dtype == np.float32
    assert result.shape == reference.shape
    np.testing.assert_allclose(result, expected_map, atol=1e-4)


def test_masked_ssim_is_mean_of_skimage_map_over_mask(brain_pair):
    reference, test, brain, tumour = brain_pair
    _, expected_map = _skimage_ssim(reference, test, "gaussian", full=True)
    for mask in (brain, tumour, brain & ~tumour):
        assert metrics.ssim(reference, test, mask=mask) == pytest.approx(expected_map[mask].mean(), abs=2e-6)


def test_gaussian_window_is_eleven_voxels():
    # A single bright voxel spreads exactly 5 voxels each way under an 11-tap window.
    reference = np.zeros((21, 21, 21))
    test = reference.copy()
    test[10, 10, 10] = 1.0
    changed = metrics.ssim_map(reference, test, data_range=1.0) < 1
    extent = np.flatnonzero(changed.any(axis=(1, 2)))
    assert (extent.min(), extent.max()) == (5, 15)


def test_identical_images_are_perfect(brain_pair):
    reference, _, brain, _ = brain_pair
    assert metrics.ssim(reference, reference) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(reference, reference, mask=brain, window="uniform") == pytest.approx(1.0, abs=1e-6)
    assert metrics.psnr(reference, reference) == math.inf
    assert metrics.nmse(reference, reference) == 0.0
    assert metrics.mae(reference, reference) == 0.0
    assert metrics.mse(reference, reference, mask=brain) == 0.0


def test_ssim_default_data_range_is_reference_range(brain_pair):
    reference, test, _, _ = brain_pair
    span = float(reference.max() - reference.min())
    assert metrics.ssim(reference, test) == pytest.approx(metrics.ssim(reference, test, data_range=span), abs=1e-7)
    assert metrics.ssim(reference, test, data_range=4 * span) > metrics.ssim(reference, test) + 0.01
    # Scaling both images scales the default range too, so SSIM does not change.
    assert metrics.ssim(3 * reference, 3 * test) == pytest.approx(metrics.ssim(reference, test), abs=1e-6)


def test_ssim_rejects_bad_input(brain_pair):
    reference, test, brain, _ = brain_pair
    with pytest.raises(MetricsError, match="different shapes"):
        metrics.ssim(reference, test[:-1])
    with pytest.raises(MetricsError, match="window"):
        metrics.ssim(reference, test, window="box")
    with pytest.raises(MetricsError, match="smaller than the 11-voxel"):
        metrics.ssim(reference[:8], test[:8])
    with pytest.raises(MetricsError, match="mask: the mask is empty"):
        metrics.ssim(reference, test, mask=np.zeros_like(brain))
    with pytest.raises(MetricsError, match="mask: shape"):
        metrics.ssim(reference, test, mask=brain[:-1])
    with pytest.raises(MetricsError, match="constant"):
        metrics.ssim(np.ones((12, 12, 12)), np.zeros((12, 12, 12)))
    with pytest.raises(MetricsError, match="NaN"):
        metrics.ssim(np.full((12, 12, 12), np.nan), np.zeros((12, 12, 12)), data_range=1.0)


# --------------------------------------------------------------------------- error metrics

TINY_REFERENCE = np.array([[0.0, 1.0], [2.0, 3.0]])
TINY_TEST = np.array([[0.0, 2.0], [2.0, 1.0]])  # differences 0, -1, 0, 2
TINY_MASK = np.array([[True, True], [False, True]])  # differences 0, -1, 2


def test_error_metrics_by_hand():
    assert metrics.mse(TINY_REFERENCE, TINY_TEST) == pytest.approx(5 / 4)
    assert metrics.mae(TINY_REFERENCE, TINY_TEST) == pytest.approx(3 / 4)
    assert metrics.nmse(TINY_REFERENCE, TINY_TEST) == pytest.approx(5 / 14)
    # Default peak: reference range 3 - 0.
    assert metrics.psnr(TINY_REFERENCE, TINY_TEST) == pytest.approx(10 * math.log10(9 / 1.25))
    assert metrics.psnr(TINY_REFERENCE, TINY_TEST, data_range=1.0) == pytest.approx(10 * math.log10(1 / 1.25))


def test_error_metrics_by_hand_with_mask():
    assert metrics.mse(TINY_REFERENCE, TINY_TEST, TINY_MASK) == pytest.approx(5 / 3)
    assert metrics.mae(TINY_REFERENCE, TINY_TEST, TINY_MASK) == pytest.approx(1.0)
    assert metrics.nmse(TINY_REFERENCE, TINY_TEST, TINY_MASK) == pytest.approx(5 / 10)
    # The peak stays the range of the whole reference (3), not of the masked voxels.
    assert metrics.psnr(TINY_REFERENCE, TINY_TEST, TINY_MASK) == pytest.approx(10 * math.log10(9 / (5 / 3)))
    # Integer masks read as "non-zero is inside".
    assert metrics.mae(TINY_REFERENCE, TINY_TEST, TINY_MASK.astype(np.uint8)) == pytest.approx(1.0)


def test_nmse_of_zero_reference_is_an_error():
    with pytest.raises(MetricsError, match="NMSE"):
        metrics.nmse(np.zeros((2, 2)), np.ones((2, 2)))


def test_masks_restrict_computation(brain_pair):
    reference, test, _, _ = brain_pair
    mask = np.zeros(reference.shape, dtype=bool)
    mask[5:15, 10:30, 8:25] = True
    before = _masked_scores(reference, test, mask)

    changed_outside = test.copy()
    changed_outside[26:, :, :] = 0.0  # over 5 voxels (the SSIM window radius) from the mask
    assert _masked_scores(reference, changed_outside, mask) == before

    changed_inside = test.copy()
    changed_inside[8:12, 15:20, 10:14] += 300.0
    after = _masked_scores(reference, changed_inside, mask)
    assert all(after[name] != before[name] for name in before)


def _masked_scores(reference, test, mask):
    return {
        "ssim": metrics.ssim(reference, test, mask=mask),
        "ssim_uniform": metrics.ssim(reference, test, mask=mask, window="uniform"),
        "psnr": metrics.psnr(reference, test, mask=mask),
        "nmse": metrics.nmse(reference, test, mask=mask),
        "mae": metrics.mae(reference, test, mask=mask),
        "mse": metrics.mse(reference, test, mask=mask),
    }


# --------------------------------------------------------------------------- normalisation


def test_normalise_for_metrics_range_and_background():
    brain = np.zeros((10, 10, 10), dtype=bool)
    brain[:, :, :5] = True  # 500 brain voxels
    volume = np.full(brain.shape, -50.0)  # background, below every brain value
    volume[brain] = np.arange(500.0)  # a ramp 0..499
    normalised = metrics.normalise_for_metrics(volume, brain)

    assert normalised.dtype == np.float32
    assert np.all(normalised[~brain] == 0)
    assert normalised[brain].min() == 0.0 and normalised[brain].max() == 1.0
    # Linear interpolation of the 0.5th/99.5th percentiles of 0..499: 2.495 and 496.505.
    low, high = 0.005 * 499, 0.995 * 499
    ramp = np.arange(500.0)
    expected = np.clip((ramp - low) / (high - low), 0, 1)
    np.testing.assert_allclose(normalised[brain], expected, atol=1e-6)
    assert np.sum(normalised[brain] == 1.0) == 3  # 497, 498, 499 are clipped


def test_normalise_for_metrics_ignores_scale_and_offset(brain_pair):
    reference, _, brain, _ = brain_pair
    direct = metrics.normalise_for_metrics(reference, brain)
    rescaled = metrics.normalise_for_metrics(2.5 * reference - 300, brain)
    np.testing.assert_allclose(rescaled, direct, atol=1e-5)


def test_normalise_for_metrics_constant_and_bad_input():
    brain = np.ones((4, 4, 4), dtype=bool)
    assert np.all(metrics.normalise_for_metrics(np.full((4, 4, 4), 7.0), brain) == 0)
    with pytest.raises(MetricsError, match="brain_mask: the mask is empty"):
        metrics.normalise_for_metrics(np.ones((4, 4, 4)), np.zeros((4, 4, 4), dtype=bool))
    with pytest.raises(MetricsError, match="percentiles"):
        metrics.normalise_for_metrics(np.ones((4, 4, 4)), brain, percentiles=(99, 1))


# --------------------------------------------------------------------------- image_metrics


def test_image_metrics_keys_and_consistency(brain_pair):
    reference, test, brain, tumour = brain_pair
    scores = metrics.image_metrics(reference, test, brain, tumour)
    assert set(scores) == {"ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume"}
    assert all(isinstance(value, float) for value in scores.values())

    reference_01 = metrics.normalise_for_metrics(reference, brain)
    test_01 = metrics.normalise_for_metrics(test, brain)
    assert scores["ssim"] == pytest.approx(metrics.ssim(reference_01, test_01, mask=brain, data_range=1.0))
    assert scores["ssim_tumour"] == pytest.approx(metrics.ssim(reference_01, test_01, mask=tumour, data_range=1.0))
    assert scores["ssim_healthy"] == pytest.approx(
        metrics.ssim(reference_01, test_01, mask=brain & ~tumour, data_range=1.0)
    )
    assert scores["psnr"] == pytest.approx(metrics.psnr(reference_01, test_01, mask=brain, data_range=1.0))
    assert scores["nmse"] == pytest.approx(metrics.nmse(reference_01, test_01, mask=brain))
    assert scores["mae"] == pytest.approx(metrics.mae(reference_01, test_01, mask=brain))
    assert scores["ssim_volume"] == pytest.approx(metrics.volume_ssim(reference, test))
    brain_only = metrics.image_metrics(reference, test, brain, tumour, whole_volume=False)
    assert brain_only == {k: v for k, v in scores.items() if k != "ssim_volume"}


def test_whole_volume_scaling_uses_every_voxel_and_keeps_the_floor_at_zero(brain_pair):
    reference, _, brain, _ = brain_pair
    scaled = metrics.normalise_whole_volume(reference)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    assert np.all(scaled[~brain] == 0.0)  # background: the 0.5th percentile of a mostly empty volume
    high = np.percentile(reference, 99.5)  # over every voxel, not only the brain
    inside = reference < high
    np.testing.assert_allclose(scaled[inside], (reference[inside] / high).astype(np.float32), rtol=1e-5)
    shifted = metrics.normalise_whole_volume(reference - 100.0)  # negative low percentile: floor stays at 0
    assert shifted.min() == 0.0 and np.all(shifted[reference <= 100.0] == 0.0)
    assert not metrics.normalise_whole_volume(np.full((8, 8, 8), 5.0)).any()


def test_volume_ssim_is_skimage_ssim_of_the_whole_volume_and_more_lenient_than_brain_ssim(brain_pair):
    reference, test, brain, tumour = brain_pair
    expected = _skimage_ssim(metrics.normalise_whole_volume(reference), metrics.normalise_whole_volume(test))
    assert metrics.volume_ssim(reference, test) == pytest.approx(expected, abs=1e-6)
    # the background (most of the volume) scores 1, so the whole-volume number is higher
    assert metrics.volume_ssim(reference, test) > metrics.image_metrics(reference, test, brain, tumour)["ssim"] + 0.02
    assert metrics.volume_ssim(reference, 2.0 * reference) == pytest.approx(1.0, abs=1e-6)


def test_image_metrics_ignores_global_intensity_scale(brain_pair):
    reference, _, brain, tumour = brain_pair
    scores = metrics.image_metrics(reference, 1.7 * reference + 40 * brain, brain, tumour)
    for name in ("ssim", "ssim_tumour", "ssim_healthy"):
        assert scores[name] == pytest.approx(1.0, abs=1e-5)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-6)


def test_image_metrics_separates_tumour_and_healthy_errors(brain_pair):
    reference, _, brain, tumour = brain_pair
    rng = np.random.default_rng(7)
    test = reference.copy()
    test[tumour] += rng.normal(scale=150, size=int(tumour.sum()))
    scores = metrics.image_metrics(reference, test, brain, tumour)
    assert scores["ssim_tumour"] < 0.8
    assert scores["ssim_healthy"] > 0.95
    assert scores["ssim_tumour"] < scores["ssim"] < scores["ssim_healthy"]


def test_image_metrics_tumour_region_missing_or_empty(brain_pair):
    reference, test, brain, _ = brain_pair
    for tumour in (None, np.zeros_like(brain)):
        scores = metrics.image_metrics(reference, test, brain, tumour)
        assert math.isnan(scores["ssim_tumour"])
        assert scores["ssim_healthy"] == pytest.approx(scores["ssim"])
    covering = metrics.image_metrics(reference, test, brain, brain)
    assert math.isnan(covering["ssim_healthy"])
    assert covering["ssim_tumour"] == pytest.approx(covering["ssim"])


def test_region_psnr_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 100, (12, 14, 16)).astype(np.float32)
    test = reference + rng.normal(0, 5, reference.shape).astype(np.float32)
    brain = np.zeros(reference.shape, bool)
    brain[2:10, 2:12, 2:14] = True
    tumour = np.zeros_like(brain)
    tumour[4:7, 4:8, 4:9] = True

    def unit(volume):
        low, high = np.percentile(volume[brain], [0.5, 99.5])
        out = np.zeros_like(volume, dtype=np.float64)
        out[brain] = (np.clip(volume[brain], low, high) - low) / (high - low)
        return out

    a, b = unit(reference), unit(test)
    values = metrics.region_psnr(reference, test, brain, tumour)
    for key, region in (("psnr_tumour", tumour), ("psnr_healthy", brain & ~tumour)):
        mse = np.mean((a[region] - b[region]) ** 2)
        assert values[key] == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-5)
    assert math.isnan(metrics.region_psnr(reference, test, brain, None)["psnr_tumour"])


# --------------------------------------------------------------------------- segmentation


def test_brats_regions_by_hand():
    label = np.array([[0, 1, 2], [3, 2, 0]], dtype=np.uint8)
    regions = metrics.brats_regions(label)
    assert set(regions) == {"WT", "TC", "ET"}
    np.testing.assert_array_equal(regions["WT"], [[False, True, True], [True, True, False]])
    np.testing.assert_array_equal(regions["TC"], [[False, True, False], [True, False, False]])
    np.testing.assert_array_equal(regions["ET"], [[False, False, False], [True, False, False]])
    assert all(region.dtype == bool for region in regions.values())
    float_regions = metrics.brats_regions(label.astype(np.float32))  # as read from a float NIfTI
    np.testing.assert_array_equal(float_regions["TC"], regions["TC"])


def test_brats_regions_refuse_brats2021_labels():
    with pytest.raises(MetricsError, match="BraTS 2021"):
        metrics.brats_regions(np.array([0, 1, 2, 4]))
    with pytest.raises(MetricsError, match=r"\[7\]"):
        metrics.brats_regions(np.array([0, 7]))


def _cube(shape, start, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return mask


def test_dice_of_cubes_with_known_overlap():
    shape = (30, 30, 30)
    a = _cube(shape, (5, 5, 5), (10, 10, 10))
    b = _cube(shape, (10, 5, 5), (10, 10, 10))  # half of a: 500 shared voxels of 1000 each
    assert metrics.dice(a, b) == pytest.approx(0.5, rel=1e-6)
    inner = _cube(shape, (5, 5, 5), (10, 10, 5))  # inside a, 500 voxels: 2*500/1500
    assert metrics.dice(inner, a) == pytest.approx(2 / 3, rel=1e-6)
    assert metrics.dice(a, a) == pytest.approx(1.0)
    assert metrics.dice(a, _cube(shape, (20, 20, 20), (5, 5, 5))) == 0.0


def test_hd95_single_voxels_anisotropic():
    shape = (20, 20, 20)
    spacing = (2.5, 1.0, 0.5)  # z, y, x as in a SimpleITK array
    a = _cube(shape, (5, 6, 7), (1, 1, 1))
    b = _cube(shape, (8, 10, 9), (1, 1, 1))
    expected = math.sqrt((3 * 2.5) ** 2 + (4 * 1.0) ** 2 + (2 * 0.5) ** 2)
    assert metrics.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-6)


def test_hd95_parallel_plates_follow_spacing_axis():
    # One-voxel plates: every voxel is surface, each one's nearest partner is straight across.
    shape = (20, 20, 20)
    spacing = (2.5, 1.0, 0.5)
    along_z = metrics.hd95(_cube(shape, (4, 3, 2), (1, 12, 15)), _cube(shape, (7, 3, 2), (1, 12, 15)), spacing)
    along_x = metrics.hd95(_cube(shape, (3, 2, 4), (12, 15, 1)), _cube(shape, (3, 2, 11), (12, 15, 1)), spacing)
    assert along_z == pytest.approx(3 * 2.5)
    assert along_x == pytest.approx(7 * 0.5)


def test_hd95_shifted_cube_anisotropic():
    # A 6-voxel cube shifted 2 voxels along z, with z spacing 0.5 mm and in-plane 3 mm.
    # Surface voxels of the shifted cube: its top face (36) and the inner bottom face (16) lie
    # 2 * 0.5 = 1 mm from the other cube's top/bottom face, everything else is closer
    # (sideways neighbours are >= 3 mm away). 52 of 152 surface voxels at 1 mm > 5 %, so HD95 = 1 mm.
    shape = (20, 16, 16)
    cube = _cube(shape, (5, 5, 5), (6, 6, 6))
    shifted = _cube(shape, (7, 5, 5), (6, 6, 6))
    assert metrics.hd95(shifted, cube, (0.5, 3.0, 3.0)) == pytest.approx(1.0)
    assert metrics.hd95(cube, shifted, (0.5, 3.0, 3.0)) == pytest.approx(1.0)
    assert metrics.dice(shifted, cube) == pytest.approx(2 / 3, rel=1e-6)


def test_empty_mask_conventions():
    shape = (12, 12, 12)
    empty = np.zeros(shape, dtype=bool)
    cube = _cube(shape, (3, 3, 3), (4, 4, 4))
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.hd95(empty, empty, (1, 1, 1)) == 0.0
    for pred, truth in ((empty, cube), (cube, empty)):
        assert metrics.dice(pred, truth) == 0.0
        assert metrics.hd95(pred, truth, (1, 1, 1)) == metrics.BRATS_HD95_PENALTY
    assert metrics.BRATS_HD95_PENALTY == pytest.approx(math.sqrt(240**2 + 240**2 + 155**2), abs=1e-4)


def test_hd95_rejects_bad_spacing_and_shapes():
    cube = _cube((8, 8, 8), (2, 2, 2), (3, 3, 3))
    with pytest.raises(MetricsError, match="spacing"):
        metrics.hd95(cube, cube, (1.0, 1.0))
    with pytest.raises(MetricsError, match="spacing"):
        metrics.hd95(cube, cube, (1.0, 0.0, 1.0))
    with pytest.raises(MetricsError, match="pred_mask: shape"):
        metrics.dice(cube[:-1], cube)


def test_segmentation_metrics_by_hand():
    shape = (30, 30, 30)
    truth = np.zeros(shape, dtype=np.uint8)
    truth[_cube(shape, (10, 10, 10), (10, 10, 10))] = 2  # oedema, 1000 voxels
    truth[_cube(shape, (12, 12, 12), (6, 6, 6))] = 1  # necrotic core, 216 voxels
    truth[_cube(shape, (14, 14, 14), (2, 2, 2))] = 3  # enhancing, 8 voxels
    pred = truth.copy()
    pred[pred == 3] = 1  # enhancing tumour missed, called necrotic core instead
    pred[_cube(shape, (20, 10, 10), (2, 10, 10))] = 2  # whole tumour 2 slices too thick (+200)

    scores = metrics.segmentation_metrics(pred, truth, (1.0, 1.0, 1.0))
    assert set(scores) == {"dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_TC", "hd95_ET"}
    assert scores["dice_WT"] == pytest.approx(2 * 1000 / 2200, rel=1e-6)
    assert scores["dice_TC"] == pytest.approx(1.0)
    assert scores["dice_ET"] == 0.0
    assert scores["hd95_TC"] == pytest.approx(0.0)
    assert scores["hd95_ET"] == metrics.BRATS_HD95_PENALTY
    assert 0.0 < scores["hd95_WT"] <= 2.0

    no_enhancing = np.where(truth == 3, 1, truth)
    both_empty = metrics.segmentation_metrics(no_enhancing, no_enhancing, (1.0, 1.0, 1.0))
    assert both_empty["dice_ET"] == 1.0 and both_empty["hd95_ET"] == 0.0


def test_metric_keys_are_the_name_table(brain_pair):
    """image_metrics and segmentation_metrics name their results as metrics.names does, in its order."""
    reference, test, brain, tumour = brain_pair
    assert tuple(metrics.image_metrics(reference, test, brain, tumour)) == metrics.IMAGE_METRICS
    label = np.zeros(reference.shape, dtype=np.uint8)
    label[tumour] = 3
    assert tuple(metrics.segmentation_metrics(label, label, (1.0, 1.0, 1.0))) == metrics.SEGMENTATION_METRICS
    assert set(metrics.METRIC_TITLES) <= set(metrics.IMAGE_METRICS + metrics.BRASYN_METRICS
                                             + metrics.SEGMENTATION_METRICS)
    assert set(metrics.IMAGE_METRICS + metrics.BRASYN_METRICS) <= set(metrics.METRIC_TITLES)  # all titled


def test_import_does_not_load_torch():
    code = "import sys, MRISynthesisLib.metrics; print('torch' in sys.modules or 'monai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_brats_size_volume():
    reference, test, brain, tumour = _brain_like_pair(shape=(155, 240, 240), seed=1)
    reference = reference.astype(np.float32)
    test = test.astype(np.float32)
    expected = _skimage_ssim(reference, test, "gaussian")
    assert metrics.ssim(reference, test) == pytest.approx(expected, abs=2e-6)
    scores = metrics.image_metrics(reference, test, brain, tumour)
    assert 0.0 < scores["ssim_tumour"] < 1.0 and 0.0 < scores["ssim_healthy"] < 1.0


# --------------------------------------------------------------------------- enhancement contrast


def test_enhancement_contrast_by_hand_and_without_enhancement():
    image = np.ones((4, 4, 4), dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    brain = np.ones(image.shape, dtype=bool)
    label[0, 0, :2] = 3
    image[0, 0, :2] = [2.0, 4.0]  # mean 3 over the enhancing tumour, healthy median 1
    label[1, 1, 1] = 2
    image[1, 1, 1] = 100.0  # oedema is neither enhancing nor healthy
    assert metrics.enhancement_contrast(image, label, brain) == pytest.approx(3.0)
    assert metrics.enhancement_contrast(image * 7.5, label, brain) == pytest.approx(3.0)
    assert math.isnan(metrics.enhancement_contrast(image, np.where(label == 3, 1, label), brain))
    with pytest.raises(MetricsError, match="label: values \\[4\\] are not BraTS 2023 labels.*map it to 3"):
        metrics.enhancement_contrast(image, np.where(label == 3, 4, label), brain)
    with pytest.raises(MetricsError, match="label: shape \\(4, 4, 3\\) does not match the image shape"):
        metrics.enhancement_contrast(image, label[..., :3], brain)


def test_enhancement_contrast_tells_an_acquired_t1c_from_sequences_without_enhancement():
    import SimpleITK as sitk

    from MRISynthesisLib.phantom import generate_case
    from MRISynthesisLib.core.preprocessing import brain_mask
    from MRISynthesisLib.sequences import Sequence

    case = generate_case(5000, small=True)
    arrays = {s: sitk.GetArrayFromImage(image) for s, image in case.images.items()}
    label = sitk.GetArrayFromImage(case.label)
    brain = brain_mask(list(arrays.values()))
    t1c = metrics.enhancement_contrast(arrays[Sequence.T1C], label, brain)
    t1n = metrics.enhancement_contrast(arrays[Sequence.T1N], label, brain)
    assert t1c > 1.8 and 0.7 < t1n < 1.2
    flattened = arrays[Sequence.T1C].copy()
    flattened[label == 3] = np.median(flattened[brain & (label == 0)])
    assert metrics.enhancement_contrast(flattened, label, brain) == pytest.approx(1.0)
