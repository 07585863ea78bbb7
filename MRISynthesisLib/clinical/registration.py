"""Rigid co-registration of one series of a clinical study to a reference series.

The series of one MR session are acquired minutes apart on different grids (a 1 mm 3-D T1, a
3 mm axial FLAIR, an oblique T2 ...) and the head moves a little between them; the model needs
them voxel-aligned. This module finds the rigid motion with SimpleITK's registration framework:
Mattes mutual information (the sequences have different contrasts), a versor rigid transform
started from the scanner alignment or from the centres of mass of the heads (whichever matches
better), a three-level pyramid (4, 2, 1) with random sampling so it runs in seconds on two
cores, and a regular-step gradient descent with physical-shift scales. The result says whether
it can be trusted: a weak final similarity, a series covering too little of the head to judge,
or a motion no patient makes within one session (more than 30 mm or 20 degrees away from the
scanner alignment) is flagged with a one-line warning rather than raised, so a study can still
be shown and judged by a person.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence as Seq, Tuple

import numpy as np
import SimpleITK as sitk

from ..core.input_checks import InputError
from .volume_checks import float_volume, foreground_mask

__all__ = [
    "RegistrationError",
    "RigidRegistration",
    "TargetError",
    "register_rigid",
    "target_registration_error",
    "mask_points",
    "foreground_mask",
    "MAX_TRANSLATION_MM",
    "MAX_ROTATION_DEGREES",
    "MIN_TRUSTED_SIMILARITY",
    "MIN_COVERAGE",
]

#: Largest plausible head motion between two series of one session (mm, from the scanner alignment).
MAX_TRANSLATION_MM = 30.0
#: Largest plausible head rotation between two series of one session (degrees).
MAX_ROTATION_DEGREES = 20.0
#: Mattes mutual information (SimpleITK reports it negated: lower is better) that a registration
#: must reach to be trusted. Aligned phantom pairs of different sequences reach -0.44 to -0.75 on
#: whole images and -0.27 to -0.34 inside brain masks; a head against noise or a smooth random
#: volume stays between -0.002 and -0.035.
MIN_TRUSTED_SIMILARITY = 0.1
#: Share of the fixed head that must lie inside the moving series' field of view once registered:
#: mutual information over a small overlap is high by chance (a 2 cm cube of a T2 reaches -1.1).
MIN_COVERAGE = 0.5

#: Fewest voxels along any axis of a volume to register (the pyramid's smoothing needs four).
MIN_VOXELS_PER_AXIS = 4
#: Shrink factors of the pyramid (coarse to fine) and their smoothing sigmas in millimetres.
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (4.0, 2.0, 0.0)
#: Histogram bins of the Mattes metric: enough for four tissue classes, few enough for sparse samples.
HISTOGRAM_BINS = 32
#: Random samples per pyramid level (inside the fixed mask when one is given); sampling a fixed
#: number instead of every voxel keeps each level near a second on two cores at 1 mm.
SAMPLES_PER_LEVEL = 40_000
#: Fixed voxels on which the similarity is evaluated before and after (every n-th voxel of the
#: fixed grid): SimpleITK evaluates the metric on every voxel there, half a second at 1 mm.
EVALUATION_VOXELS = 300_000
#: Seed of the random sampling: the same inputs give the same result.
SAMPLING_SEED = 20240915
#: Regular step gradient descent: first step (mm of the largest voxel shift), smallest step, limit.
LEARNING_RATE_MM = 2.0
MIN_STEP_MM = 0.005
MAX_ITERATIONS = 200
RELAXATION = 0.5


class RegistrationError(InputError):
    """A registration that cannot run at all (empty image, empty mask, not a 3-D volume)."""


class TargetError(NamedTuple):
    """Distances (mm) between where two transforms send the same points."""

    mean_mm: float
    max_mm: float


@dataclass
class RigidRegistration:
    """The rigid motion from a fixed (reference) series to a moving series, and how far to trust it.

    ``transform`` maps fixed physical points to moving physical points (SimpleITK's convention),
    so ``sitk.Resample(moving, fixed, transform)`` puts the moving series on the fixed grid.
    ``rotation_degrees`` and ``translation_mm`` measure it against the scanner alignment
    (the identity): the rotation angle, and how far the centre of the fixed head moves.
    ``metric`` and ``initial_metric`` are Mattes mutual information (negated: lower is better)
    at the end and at the start; ``coverage`` is the share of the fixed head inside the moving
    series' field of view. ``warning`` is empty when ``trusted``.
    """

    name: str
    transform: sitk.Transform
    metric: float
    initial_metric: float
    iterations: int
    rotation_degrees: float
    translation_mm: float
    seconds: float
    trusted: bool
    warning: str = ""
    start: str = "scanner"
    coverage: float = 1.0

    def describe(self) -> str:
        """One line for the log and the report."""
        line = (f"{self.name}: rigid registration {self.rotation_degrees:.1f} deg, "
                f"{self.translation_mm:.1f} mm from the scanner alignment, Mattes MI "
                f"{self.initial_metric:.3f} -> {self.metric:.3f}, {self.iterations} iterations "
                f"from the {self.start} alignment, {self.seconds:.1f} s")
        return line if self.trusted else f"{line}; NOT TRUSTED: {self.warning}"


# --------------------------------------------------------------------------- inputs


def _as_volume(image: object, name: str) -> sitk.Image:
    """``image`` as a float32 3-D SimpleITK volume, or :class:`RegistrationError`."""
    return float_volume(image, name, RegistrationError, MIN_VOXELS_PER_AXIS)


def _as_mask(mask: Optional[sitk.Image], name: str) -> Optional[sitk.Image]:
    """A mask as uint8 0/1 (non-zero voxels are inside), ``None`` stays ``None``."""
    if mask is None:
        return None
    if not isinstance(mask, sitk.Image) or mask.GetDimension() != 3:
        raise RegistrationError(f"{name}: expected a 3-D SimpleITK mask image")
    binary = sitk.Cast(sitk.NotEqual(sitk.Cast(mask, sitk.sitkFloat32), 0.0), sitk.sitkUInt8)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(binary)
    if stats.GetSum() == 0:
        raise RegistrationError(f"{name}: the mask has no voxels")
    return binary


# --------------------------------------------------------------------------- geometry


def mask_points(mask: sitk.Image, max_points: int = 20_000, seed: int = 0) -> np.ndarray:
    """Physical positions (n x 3, mm) of a mask's non-zero voxels, at most ``max_points`` of them.

    A random subset (fixed ``seed``) is taken when the mask has more voxels, so target
    registration errors over a whole brain cost milliseconds.
    """
    array = sitk.GetArrayViewFromImage(mask)
    indices = np.argwhere(array != 0)[:, ::-1].astype(np.float64)  # (z, y, x) -> (x, y, z)
    if len(indices) == 0:
        raise RegistrationError("mask: the mask has no voxels")
    if len(indices) > max_points:
        chosen = np.random.default_rng(seed).choice(len(indices), size=max_points, replace=False)
        indices = indices[np.sort(chosen)]
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    matrix = direction @ np.diag(mask.GetSpacing())
    return indices @ matrix.T + np.asarray(mask.GetOrigin())


def _map_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """Where ``transform`` sends each row of ``points``."""
    return np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in points])


def target_registration_error(estimated: sitk.Transform, true: sitk.Transform, points) -> TargetError:
    """Mean and largest distance (mm) between where ``estimated`` and ``true`` send ``points`` (n x 3)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise RegistrationError("target registration error: no points given")
    distances = np.linalg.norm(_map_points(estimated, points) - _map_points(true, points), axis=1)
    return TargetError(float(distances.mean()), float(distances.max()))


def _rotation_degrees(transform: sitk.Transform, centre: Seq[float]) -> Tuple[float, float]:
    """Rotation angle (degrees) of a rigid transform and how far (mm) it moves ``centre``."""
    moved = np.asarray(transform.TransformPoint(tuple(centre)))
    columns = [np.asarray(transform.TransformVector(axis, tuple(centre))) for axis in np.eye(3)]
    rotation = np.stack(columns, axis=1)
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return math.degrees(math.acos(cosine)), float(np.linalg.norm(moved - np.asarray(centre)))


# --------------------------------------------------------------------------- registration


def _reduced(image: sitk.Image, max_voxels: int = EVALUATION_VOXELS) -> sitk.Image:
    """Every n-th voxel of ``image`` along each axis, n the smallest that leaves at most ``max_voxels``."""
    voxels = float(np.prod(image.GetSize()))
    factor = max(1, int(math.ceil((voxels / max_voxels) ** (1.0 / 3.0))))
    return sitk.Shrink(image, [factor] * 3) if factor > 1 else image


def _sampling_percentages(fixed: sitk.Image, fixed_mask: Optional[sitk.Image]) -> list:
    """Share of voxels to sample per pyramid level so that each level sees about SAMPLES_PER_LEVEL."""
    inside = 1.0
    if fixed_mask is not None:
        # the virtual domain is the fixed grid; samples falling outside the mask are dropped
        grid = _reduced(fixed)
        on_grid = sitk.Resample(fixed_mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        inside = max(float(np.count_nonzero(sitk.GetArrayViewFromImage(on_grid))) /
                     float(np.prod(grid.GetSize())), 1e-3)
    percentages = []
    for factor in SHRINK_FACTORS:
        voxels = float(np.prod([max(1, size // factor) for size in fixed.GetSize()]))
        percentages.append(min(1.0, SAMPLES_PER_LEVEL / (voxels * inside)))
    return percentages


def _method(fixed: sitk.Image, fixed_mask: Optional[sitk.Image], moving_mask: Optional[sitk.Image],
            pyramid: bool) -> sitk.ImageRegistrationMethod:
    """The configured registration method; ``pyramid=False`` gives a metric evaluator (every fixed voxel)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    if pyramid:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentagePerLevel(_sampling_percentages(fixed, fixed_mask), SAMPLING_SEED)
        method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
        method.SetSmoothingSigmasPerLevel(list(SMOOTHING_SIGMAS_MM))
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        method.SetMetricMovingMask(moving_mask)
    # gradients at the sampled points only: a gradient image of a 1 mm volume costs more than the fit
    method.MetricUseFixedImageGradientFilterOff()
    method.MetricUseMovingImageGradientFilterOff()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=LEARNING_RATE_MM, minStep=MIN_STEP_MM, numberOfIterations=MAX_ITERATIONS,
        relaxationFactor=RELAXATION, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _metric(evaluator: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image,
            transform: sitk.Transform) -> float:
    """Mattes MI of ``moving`` seen through ``transform``; 0 (no similarity) when nothing overlaps."""
    evaluator.SetInitialTransform(sitk.VersorRigid3DTransform(transform), inPlace=False)
    try:
        return float(evaluator.MetricEvaluate(fixed, moving))
    except RuntimeError:  # too few samples map inside the moving image
        return 0.0


def _starts(fixed_fg: sitk.Image, moving_fg: sitk.Image) -> dict:
    """Candidate initial transforms: the scanner alignment and the heads' centres of mass matched.

    Both rotate about the centre of mass of the fixed head, so the optimiser's rotations and
    the reported translation refer to the middle of the head rather than the grid origin.
    """
    moments = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed_fg, sitk.sitkFloat32), sitk.Cast(moving_fg, sitk.sitkFloat32),
        sitk.VersorRigid3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    moments = sitk.VersorRigid3DTransform(moments)
    scanner = sitk.VersorRigid3DTransform()
    scanner.SetCenter(moments.GetCenter())
    return {"scanner": scanner, "centre-of-mass": moments}


def _coverage(transform: sitk.Transform, fixed_fg: sitk.Image, moving: sitk.Image) -> float:
    """Share of the fixed foreground's voxels that ``transform`` sends inside the moving image."""
    points = mask_points(fixed_fg, max_points=20_000)
    matrix = np.asarray(transform.GetMatrix()).reshape(3, 3)
    centre = np.asarray(transform.GetCenter())
    mapped = (points - centre) @ matrix.T + centre + np.asarray(transform.GetTranslation())
    to_index = np.linalg.inv(np.asarray(moving.GetDirection()).reshape(3, 3) @ np.diag(moving.GetSpacing()))
    index = (mapped - np.asarray(moving.GetOrigin())) @ to_index.T
    inside = np.all((index >= -0.5) & (index <= np.asarray(moving.GetSize()) - 0.5), axis=1)
    return float(inside.mean())


def _judge(name: str, metric: float, rotation: float, translation: float, coverage: float) -> str:
    """The warning for an untrusted result, empty when it can be trusted."""
    problems = []
    if coverage < MIN_COVERAGE:
        problems.append(f"the series covers only {100 * coverage:.0f} % of the reference head "
                        f"(at least {100 * MIN_COVERAGE:.0f} % needed to judge the alignment)")
    if -metric < MIN_TRUSTED_SIMILARITY:
        problems.append(f"weak similarity after registration (Mattes MI {metric:.3f}, trusted at "
                        f"-{MIN_TRUSTED_SIMILARITY:g} or lower): the series may not show the same head")
    if translation > MAX_TRANSLATION_MM or rotation > MAX_ROTATION_DEGREES:
        problems.append(f"implausible motion ({translation:.1f} mm, {rotation:.1f} deg from the scanner "
                        f"alignment; at most {MAX_TRANSLATION_MM:g} mm and {MAX_ROTATION_DEGREES:g} deg "
                        f"are expected within one session)")
    return (f"{name}: " + "; ".join(problems) + "; check the overlay") if problems else ""


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, fixed_mask: Optional[sitk.Image] = None,
                   moving_mask: Optional[sitk.Image] = None, name: str = "moving") -> RigidRegistration:
    """Rigidly register ``moving`` to ``fixed`` (any grids, any two MR contrasts).

    ``fixed_mask`` / ``moving_mask`` (brain or head masks, on any grid) restrict the similarity
    to the voxels that matter; without them every voxel counts. Raises
    :class:`RegistrationError` only when registration cannot run; a poor result comes back
    with ``trusted=False`` and a one-line ``warning``.
    """
    began = time.perf_counter()
    fixed = _as_volume(fixed, f"{name} registration: the fixed image")
    moving = _as_volume(moving, f"{name} registration: the moving image")
    fixed_mask = _as_mask(fixed_mask, f"{name} registration: the fixed mask")
    moving_mask = _as_mask(moving_mask, f"{name} registration: the moving mask")

    evaluator = _method(fixed, fixed_mask, moving_mask, pyramid=False)
    fixed_points = _reduced(fixed)  # the similarity before and after is measured on these voxels
    fixed_fg = _reduced(fixed_mask) if fixed_mask is not None else foreground_mask(fixed_points)
    starts = _starts(fixed_fg, _reduced(moving_mask) if moving_mask is not None else foreground_mask(_reduced(moving)))
    scored = {label: _metric(evaluator, fixed_points, moving, tx) for label, tx in starts.items()}
    start = min(scored, key=lambda label: scored[label])  # ties keep the scanner alignment
    transform = sitk.VersorRigid3DTransform(starts[start])  # a copy: the optimiser works in place

    method = _method(fixed, fixed_mask, moving_mask, pyramid=True)
    method.SetInitialTransform(transform, inPlace=True)
    iterations = [0]
    method.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
    failure = ""
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:  # the optimiser lost the overlap: keep the start, flag it
        transform = starts[start]
        failure = str(error).strip().splitlines()[-1][:160] if str(error).strip() else "registration failed"
    metric = _metric(evaluator, fixed_points, moving, transform)
    rotation, translation = _rotation_degrees(transform, transform.GetCenter())
    coverage = _coverage(transform, fixed_fg, moving)
    warning = _judge(name, metric, rotation, translation, coverage)
    if failure:
        warning = f"{name}: the optimiser stopped ({failure}); check the overlay"
    return RigidRegistration(
        name=name, transform=transform, metric=metric, initial_metric=scored[start],
        iterations=iterations[0], rotation_degrees=rotation, translation_mm=translation,
        seconds=time.perf_counter() - began, trusted=not warning, warning=warning, start=start,
        coverage=coverage)
