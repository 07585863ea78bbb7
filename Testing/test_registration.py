"""Preparing a clinical study: rigid co-registration of series (Mattes MI) and N4 bias-field correction.

Moved series are made from small phantom cases (2.5 mm): a known rigid motion (3-4 degrees about
an axis off the head's centre, 4-5 mm) resampled onto another grid (axial 2.25 x 2.25 x 5 mm, or
a sagittal-oblique 2.5 mm grid) with a little noise. The registration must find that motion to
under 1 mm mean target registration error over the brain's voxels, flag unrelated images and
implausible motion instead of raising, and keep SimpleITK's transform convention. N4 must flatten
a known smooth multiplicative field and leave an image without one nearly as it was.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from MRISynthesisLib.clinical.bias_field import BiasFieldError, correct_bias_field
from MRISynthesisLib.clinical.registration import (
    MAX_TRANSLATION_MM,
    RegistrationError,
    mask_points,
    register_rigid,
    target_registration_error,
)
from MRISynthesisLib.phantom import generate_case
from MRISynthesisLib.sequences import Sequence

#: Mean / largest target registration error (mm) accepted over the brain for a moved series.
MEAN_TRE_MM = 1.0
MAX_TRE_MM = 2.0
#: Two head motions between series: (degrees, rotation axis, translation mm, rotation centre offset mm).
MOTIONS = {
    "tilt": (4.0, (1.0, 0.3, 0.2), (3.0, -2.0, 2.5), (20.0, 10.0, -15.0)),
    "turn": (-3.5, (0.2, 0.4, 1.0), (-2.0, 4.0, -3.0), (-25.0, 15.0, 10.0)),
}


@pytest.fixture(scope="module")
def case():
    return generate_case(0, small=True)


@pytest.fixture(scope="module")
def brain_points(case):
    return mask_points(case.tissues["brain"], max_points=20_000)


def head_motion(case, motion: str) -> sitk.Euler3DTransform:
    """The true transform from brain (fixed) points to the moved series' points."""
    degrees, axis, translation, offset = MOTIONS[motion]
    centre = mask_points(case.tissues["brain"], 5_000).mean(axis=0) + np.asarray(offset)
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(v) for v in centre))
    rotation = Rotation.from_rotvec(np.asarray(axis) / np.linalg.norm(axis) * math.radians(degrees))
    transform.SetMatrix(tuple(rotation.as_matrix().ravel()))
    transform.SetTranslation(translation)
    return transform


def series_grid(case, kind: str) -> sitk.Image:
    """An empty series grid around the head: thick axial slices, or an oblique sagittal volume."""
    centre = mask_points(case.tissues["brain"], 5_000).mean(axis=0) + np.array([2.0, -3.0, 4.0])
    if kind == "axial":
        spacing, extent, direction = (2.25, 2.25, 5.0), (240.0, 240.0, 150.0), np.eye(3)
    else:  # columns: x index runs anterior-posterior, y index head-feet, z index left-right; tilted 8 deg
        spacing, extent = (2.5, 2.5, 2.5), (200.0, 240.0, 160.0)
        direction = Rotation.from_euler("x", 8, degrees=True).as_matrix() @ np.array(
            [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    size = [int(round(e / s)) for e, s in zip(extent, spacing)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(tuple(direction.ravel()))
    half = (np.asarray(size) - 1.0) / 2.0 * np.asarray(spacing)
    grid.SetOrigin(tuple(float(v) for v in centre - direction @ half))
    return grid


def moved_series(image: sitk.Image, motion: sitk.Transform, grid: sitk.Image, seed: int = 0) -> sitk.Image:
    """``image`` as the moved head appears on ``grid``, with 2 % noise (magnitude stays >= 0)."""
    series = sitk.Resample(image, grid, motion.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(series)
    level = float(np.median(array[array > 0]))
    noisy = np.abs(array + np.random.default_rng(seed).normal(0.0, 0.02 * level, array.shape))
    result = sitk.GetImageFromArray(noisy.astype(np.float32))
    result.CopyInformation(series)
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.count_nonzero(a & b)) / float(np.count_nonzero(a) + np.count_nonzero(b))


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("motion", sorted(MOTIONS))
@pytest.mark.parametrize("kind", ["axial", "sagittal"])
@pytest.mark.parametrize("sequence", [Sequence.T2W, Sequence.T2F], ids=str)
def test_moved_t2_and_flair_register_to_the_t1(case, brain_points, motion, kind, sequence):
    truth = head_motion(case, motion)
    series = moved_series(case.images[sequence], truth, series_grid(case, kind))
    result = register_rigid(case.images[Sequence.T1N], series, name=sequence.value)
    error = target_registration_error(result.transform, truth, brain_points)
    assert error.mean_mm < MEAN_TRE_MM and error.max_mm < MAX_TRE_MM, (error, result.describe())
    assert result.trusted and result.warning == "" and result.coverage > 0.95, result.describe()
    assert result.metric < result.initial_metric  # the similarity improved from the start
    assert result.iterations > 0 and result.seconds > 0
    assert abs(result.rotation_degrees - abs(MOTIONS[motion][0])) < 0.5
    assert "\n" not in result.describe() and result.describe().startswith(f"{sequence.value}: ")


def test_brain_masks_restrict_the_similarity_and_still_find_the_motion(case, brain_points):
    truth = head_motion(case, "tilt")
    grid = series_grid(case, "axial")
    series = moved_series(case.images[Sequence.T2F], truth, grid)
    moving_brain = sitk.Resample(case.tissues["brain"], grid, truth.GetInverse(), sitk.sitkNearestNeighbor, 0)
    result = register_rigid(case.images[Sequence.T1N], series, fixed_mask=case.tissues["brain"],
                            moving_mask=moving_brain, name="t2f")
    error = target_registration_error(result.transform, truth, brain_points)
    assert result.trusted and error.mean_mm < MEAN_TRE_MM and error.max_mm < MAX_TRE_MM, (error, result.describe())


def test_the_transform_maps_fixed_points_to_moving_points(case):
    """SimpleITK's convention: Resample(moving, fixed, transform) lays the moving brain on the fixed one."""
    truth = head_motion(case, "turn")
    series = moved_series(case.images[Sequence.T2W], truth, series_grid(case, "sagittal"))
    result = register_rigid(case.images[Sequence.T1N], series, name="t2w")
    on_fixed = sitk.Resample(series, case.images[Sequence.T1N], result.transform, sitk.sitkLinear, 0.0)
    fixed_brain = sitk.GetArrayViewFromImage(case.tissues["brain"]) > 0
    threshold = 0.25 * float(np.median(sitk.GetArrayViewFromImage(case.images[Sequence.T2W])[fixed_brain]))
    moved_back = sitk.GetArrayViewFromImage(on_fixed) > threshold
    assert dice(fixed_brain, moved_back) > 0.95
    # the inverse (moving to fixed points) lays it twice as far off as no transform at all
    inverse = sitk.Resample(series, case.images[Sequence.T1N], result.transform.GetInverse(), sitk.sitkLinear, 0.0)
    untouched = sitk.Resample(series, case.images[Sequence.T1N], sitk.Transform(), sitk.sitkLinear, 0.0)
    assert dice(fixed_brain, sitk.GetArrayViewFromImage(inverse) > threshold) < \
        dice(fixed_brain, sitk.GetArrayViewFromImage(untouched) > threshold) < dice(fixed_brain, moved_back)


def test_an_aligned_series_stays_where_it_is(case, brain_points):
    result = register_rigid(case.images[Sequence.T1N], case.images[Sequence.T2W], name="t2w")
    error = target_registration_error(result.transform, sitk.Transform(), brain_points)
    assert error.max_mm < 0.2, (error, result.describe())
    assert result.trusted and result.translation_mm < 0.2 and result.rotation_degrees < 0.2


def test_a_volume_of_noise_is_not_trusted(case):
    grid = series_grid(case, "axial")
    noise = np.random.default_rng(3).uniform(0.0, 1000.0, sitk.GetArrayViewFromImage(grid).shape)
    series = sitk.GetImageFromArray(noise.astype(np.float32))
    series.CopyInformation(grid)
    result = register_rigid(case.images[Sequence.T1N], series, name="t2f")
    assert not result.trusted
    assert result.warning.startswith("t2f: ") and "similarity" in result.warning and "\n" not in result.warning
    assert "NOT TRUSTED" in result.describe() and "\n" not in result.describe()


def test_a_head_60_mm_away_is_found_but_flagged_as_implausible(case, brain_points):
    shifted = sitk.Image(case.images[Sequence.T2W])
    shifted.SetOrigin(tuple(np.asarray(shifted.GetOrigin()) + np.array([60.0, 0.0, 0.0])))
    result = register_rigid(case.images[Sequence.T1N], shifted, name="t2w")
    assert not result.trusted and "implausible motion" in result.warning and "\n" not in result.warning
    assert result.translation_mm > MAX_TRANSLATION_MM
    truth = sitk.TranslationTransform(3, (60.0, 0.0, 0.0))
    assert target_registration_error(result.transform, truth, brain_points).mean_mm < MEAN_TRE_MM


def test_a_series_covering_a_sliver_of_the_head_is_not_trusted(case):
    """Mutual information over a 2 cm cube is high by chance; the coverage check catches it."""
    cube = sitk.RegionOfInterest(case.images[Sequence.T2W], [8, 8, 8], [44, 44, 28])
    result = register_rigid(case.images[Sequence.T1N], cube, name="t2w")
    assert not result.trusted and result.coverage < 0.05 and "covers only" in result.warning


def test_what_cannot_be_registered_is_refused_in_one_line(case):
    t1 = case.images[Sequence.T1N]
    empty = sitk.Image(t1.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(t1)
    no_voxels = sitk.Image(t1.GetSize(), sitk.sitkUInt8)
    no_voxels.CopyInformation(t1)
    cases = [
        (dict(fixed=t1, moving=empty), "moving image: the image is empty"),
        (dict(fixed=empty, moving=t1), "fixed image: the image is empty"),
        (dict(fixed=t1, moving=sitk.Image([64, 64], sitk.sitkFloat32) + 1.0), "expected a scalar 3-D volume"),
        (dict(fixed=t1, moving=sitk.Image([64, 64, 2], sitk.sitkFloat32) + 1.0), "too thin"),
        (dict(fixed=t1, moving=t1, fixed_mask=no_voxels), "fixed mask: the mask has no voxels"),
        (dict(fixed=t1, moving=t1, moving_mask=no_voxels), "moving mask: the mask has no voxels"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(RegistrationError) as raised:
            register_rigid(kwargs.pop("fixed"), kwargs.pop("moving"), name="t2w", **kwargs)
        message = str(raised.value)
        assert expected in message and message.startswith("t2w registration: ") and "\n" not in message


def test_target_registration_error_and_mask_points_are_physical():
    mask = sitk.Image([5, 6, 7], sitk.sitkUInt8)
    mask.SetSpacing((0.5, 2.0, 3.0))
    mask.SetOrigin((10.0, -20.0, 30.0))
    mask.SetDirection(tuple(Rotation.from_euler("z", 30, degrees=True).as_matrix().ravel()))
    mask[2, 3, 4] = 1
    mask[0, 0, 0] = 1
    points = mask_points(mask)
    expected = sorted([mask.TransformIndexToPhysicalPoint((2, 3, 4)), mask.TransformIndexToPhysicalPoint((0, 0, 0))])
    assert np.allclose(sorted(map(tuple, points)), expected)
    assert len(mask_points(sitk.Image([40, 40, 40], sitk.sitkUInt8) + 1, max_points=100)) == 100
    shift = sitk.TranslationTransform(3, (3.0, 4.0, 0.0))
    error = target_registration_error(shift, sitk.Transform(), points)
    assert error.mean_mm == pytest.approx(5.0) and error.max_mm == pytest.approx(5.0)
    turn = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, math.pi / 2)  # 90 deg about z through the origin
    far = target_registration_error(turn, sitk.Transform(), [[10.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    assert far.max_mm == pytest.approx(10.0 * math.sqrt(2.0)) and far.mean_mm == pytest.approx(5.0 * math.sqrt(2.0))


# --------------------------------------------------------------------------- bias field


@pytest.fixture(scope="module")
def clean_case():
    return generate_case(3, small=True, bias=False)


def smooth_field(case) -> np.ndarray:
    """A multiplicative field from about 0.74 to 1.14 over the brain (linear ramps and a quadratic)."""
    brain = sitk.GetArrayViewFromImage(case.tissues["brain"]) > 0
    axes = np.meshgrid(*[np.arange(n, dtype=float) for n in brain.shape], indexing="ij")
    z, y, x = [(a - a[brain].mean()) / (a[brain].max() - a[brain].min()) * 2.0 for a in axes]
    return 1.0 + 0.12 * x - 0.08 * y + 0.1 * z - 0.1 * x ** 2


def spread(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


@pytest.mark.parametrize("sequence", [Sequence.T1N, Sequence.T2W], ids=str)
def test_n4_flattens_a_known_smooth_field(clean_case, sequence):
    clean_image = clean_case.images[sequence]
    clean = sitk.GetArrayFromImage(clean_image)
    brain = sitk.GetArrayViewFromImage(clean_case.tissues["brain"]) > 0
    field = smooth_field(clean_case)
    biased = sitk.GetImageFromArray((clean * field).astype(np.float32))
    biased.CopyInformation(clean_image)
    result = correct_bias_field(biased)  # 2.5 mm voxels shrunk twice: the fit sees 5 mm voxels
    corrected = sitk.GetArrayFromImage(result.corrected)
    before = spread(field[brain])
    after = spread(corrected[brain] / clean[brain])
    assert after < 0.5 * before, (before, after)
    estimated = sitk.GetArrayFromImage(result.field)[brain]
    assert np.corrcoef(estimated, field[brain])[0, 1] > 0.8
    assert result.corrected.GetPixelID() == sitk.sitkFloat32 and result.field.GetPixelID() == sitk.sitkFloat32
    for image in (result.corrected, result.field):
        assert image.GetSize() == biased.GetSize() and image.GetOrigin() == biased.GetOrigin()
        assert image.GetSpacing() == biased.GetSpacing() and image.GetDirection() == biased.GetDirection()
    assert result.seconds > 0


def test_n4_leaves_an_image_without_bias_nearly_as_it_was(clean_case):
    clean_image = clean_case.images[Sequence.T2F]
    brain = sitk.GetArrayViewFromImage(clean_case.tissues["brain"]) > 0
    result = correct_bias_field(clean_image, clean_case.tissues["brain"])
    ratio = sitk.GetArrayFromImage(result.corrected)[brain] / sitk.GetArrayFromImage(clean_image)[brain]
    assert abs(float(np.median(ratio)) - 1.0) < 0.03 and spread(ratio) < 0.03
    assert np.percentile(np.abs(ratio - 1.0), 95) < 0.06


def test_n4_on_thick_slices_keeps_the_grid_and_refuses_what_cannot_run(clean_case):
    axial = sitk.Resample(clean_case.images[Sequence.T1N], series_grid(clean_case, "axial"))
    result = correct_bias_field(axial, iterations=(20, 20))
    assert result.corrected.GetSize() == axial.GetSize() and result.field.GetSpacing() == axial.GetSpacing()
    field = sitk.GetArrayViewFromImage(result.field)
    assert np.all(np.isfinite(field)) and 0.5 < float(field.min()) and float(field.max()) < 2.0
    empty = sitk.Image(axial.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(axial)
    no_voxels = sitk.Image(axial.GetSize(), sitk.sitkUInt8)
    no_voxels.CopyInformation(axial)
    for args, kwargs, expected in [
        ((empty,), {}, "the image is empty"),
        ((axial, no_voxels), {}, "the mask has no voxel"),
        ((axial, sitk.Image([3, 3, 3], sitk.sitkUInt8)), {}, "differs from the image's"),
        ((axial, sitk.Image(axial.GetSize(), sitk.sitkUInt8) + 1), {}, "not on the image's grid"),
        ((axial,), {"shrink": 0}, "shrink must be 1 or more"),
        ((axial,), {"iterations": ()}, "iterations must be positive"),
    ]:
        with pytest.raises(BiasFieldError, match=expected) as raised:
            correct_bias_field(*args, **kwargs)
        assert "\n" not in str(raised.value)
