"""Are these inputs what the model expects? Skull-stripped, co-registered, near its 1 mm grid; measured, not assumed.

Every model of the method was trained on BraTS-preprocessed cases. Before a synthesis the
front ends call :func:`check_preconditions` and refuse (command line) or warn with a
*Prepare inputs* action (Slicer) when a precondition fails and no preparation was asked for.

The measures, per input:

* **skull-stripped**: after skull stripping the background is exactly zero and the foreground
  is brain-sized. A head image has noise in the air around it (no exact zeros) or, when the
  scanner zeroed the air, a foreground larger than any brain (scalp, skull, neck).
  Volumes whose foreground is far smaller than a brain are not judged (no verdict);
* **co-registered** (each input against the reference): the inputs are resampled onto the
  reference's physical space at 3 mm and their mutual information is compared with that after
  small trial moves (2 mm along each axis, 2 degrees about each axis). When a trial move aligns
  them better than no move, they are not co-registered: an aligned pair sits at a maximum;
* **resolution**: a voxel larger than :data:`MAX_SPACING_MM` along any axis is far from the
  model's 1 mm grid (thick 2D slices).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..sequences import SEQUENCES, Sequence
from .volume_checks import foreground_mask

__all__ = ["MAX_BRAIN_ML", "MIN_JUDGED_ML", "MIN_ZERO_BACKGROUND", "MAX_SPACING_MM", "InputCheck",
           "AlignmentCheck", "PreconditionReport", "PreconditionError", "check_preconditions",
           "check_input", "check_alignment", "PREPARE_ADVICE"]

#: A brain with a tumour is at most this large (adult brains 1000-1700 ml, the phantom's up to 2300 ml); a whole
#: head with scalp and skull is 3000 ml or more.
MAX_BRAIN_ML = 2800.0
#: Below this much foreground a volume is no whole brain or head: no skull-stripping verdict.
MIN_JUDGED_ML = 400.0
#: Share of all voxels that are exactly zero in a skull-stripped volume, at least (a brain fills at most
#: about half of even a tight box around it; a head's air holds noise, not zeros).
MIN_ZERO_BACKGROUND = 0.25
#: Voxels larger than this along any axis are far from the model's 1 mm grid.
MAX_SPACING_MM = 3.0
#: Grid on which alignment is measured, and the trial moves.
_ALIGNMENT_SPACING_MM = 3.0
_TRIAL_SHIFT_MM = 2.0
_TRIAL_ROTATION_DEGREES = 2.0
#: Share of the grid's voxels the metric samples (enough for a stable value, fast on a full-size case).
_SAMPLING_SHARE = 0.1
#: A trial move must improve the mutual information by this share to count (noise of the metric), and by
#: at least the absolute floor (unrelated images have almost no mutual information to compare).
ALIGNMENT_MARGIN = 0.02
ALIGNMENT_FLOOR = 0.02
#: Fewer sample points than this on the 3 mm grid give no alignment verdict (a volume smaller than a brain).
MIN_ALIGNMENT_SAMPLES = 2000

#: What the command line says to do when a precondition fails.
PREPARE_ADVICE = ("run with --prepare (co-registration, brain extraction, resampling to the model's grid) or "
                  "give a brain mask with --brain-mask FILE")


class PreconditionError(ValueError):
    """Inputs that are not what the model expects, and no preparation was asked for (one line)."""


@dataclasses.dataclass
class InputCheck:
    """One input measured: foreground volume, share of exact zeros, voxel size, and the verdicts."""

    sequence: Sequence
    foreground_ml: float
    zero_fraction: float
    spacing_mm: tuple
    skull_stripped: Optional[bool]
    resolution_ok: bool

    def problems(self, name: str) -> List[str]:
        """Short sentences, one per failed check."""
        found = []
        if self.skull_stripped is False:
            why = ("its background is not zero" if self.zero_fraction < MIN_ZERO_BACKGROUND else
                   f"its foreground is {self.foreground_ml:.0f} ml, larger than a brain")
            found.append(f"{name} is not skull-stripped ({why})")
        if not self.resolution_ok:
            spacing = " x ".join(f"{s:g}" for s in self.spacing_mm)
            found.append(f"{name} has {spacing} mm voxels, far from the model's 1 mm grid")
        return found


@dataclasses.dataclass
class AlignmentCheck:
    """One input against the reference: mutual information now and after the best trial move."""

    sequence: Sequence
    metric: float
    best_trial_metric: float
    best_trial: str
    coregistered: Optional[bool]

    def problems(self, name: str, reference_name: str) -> List[str]:
        if self.coregistered is not False:  # None: too small to judge
            return []
        return [f"{name} is not co-registered with {reference_name} (moving it {self.best_trial} aligns them "
                "better)"]


@dataclasses.dataclass
class PreconditionReport:
    """Every input's measures, each non-reference input's alignment, and the failed checks as sentences."""

    reference: Sequence
    inputs: Dict[Sequence, InputCheck]
    alignment: Dict[Sequence, AlignmentCheck]
    names: Dict[Sequence, str]

    @property
    def problems(self) -> List[str]:
        found: List[str] = []
        for sequence, check in self.inputs.items():
            found += check.problems(self.names[sequence])
        for sequence, check in self.alignment.items():
            found += check.problems(self.names[sequence], self.names[self.reference])
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def one_line(self, advice: str = PREPARE_ADVICE) -> str:
        """All failed checks and what to do (default: the command line's options), in one line."""
        return "; ".join(self.problems) + f": {advice}"

    def to_json(self) -> dict:
        """The measures for the report file."""
        return {
            "reference": self.reference.value,
            "inputs": {s.value: {"foreground_ml": round(c.foreground_ml, 1), "zero_fraction": round(c.zero_fraction, 4),
                                 "spacing_mm": list(c.spacing_mm), "skull_stripped": c.skull_stripped,
                                 "resolution_ok": c.resolution_ok} for s, c in self.inputs.items()},
            "alignment": {s.value: {"mutual_information": _finite(c.metric), "best_trial": c.best_trial or None,
                                    "best_trial_mutual_information": _finite(c.best_trial_metric),
                                    "coregistered": c.coregistered} for s, c in self.alignment.items()},
            "problems": self.problems,
        }


def _finite(value: float) -> Optional[float]:
    return round(float(value), 5) if math.isfinite(value) else None


def _foreground(image: sitk.Image) -> np.ndarray:
    """Voxels that are signal: above zero where the background is zero, else above an Otsu threshold."""
    array = sitk.GetArrayViewFromImage(image)
    if np.count_nonzero(array == 0) >= MIN_ZERO_BACKGROUND * array.size:
        return array > 0
    return sitk.GetArrayFromImage(foreground_mask(image)) > 0


def check_input(image: sitk.Image, sequence: Sequence) -> InputCheck:
    """Measure one input (see the module docstring)."""
    array = sitk.GetArrayViewFromImage(image)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    zero_fraction = float(np.count_nonzero(array == 0)) / array.size
    foreground_ml = float(np.count_nonzero(_foreground(image))) * voxel_ml
    if foreground_ml < MIN_JUDGED_ML:
        skull_stripped: Optional[bool] = None
    else:
        skull_stripped = zero_fraction >= MIN_ZERO_BACKGROUND and foreground_ml <= MAX_BRAIN_ML
    spacing = tuple(round(float(s), 4) for s in image.GetSpacing())
    return InputCheck(sequence, foreground_ml, zero_fraction, spacing, skull_stripped,
                      resolution_ok=max(spacing) <= MAX_SPACING_MM)


def _alignment_grid(reference: sitk.Image, margin_mm: float = 0.0) -> sitk.Image:
    """The reference's physical box at 3 mm, in its own orientation, grown by ``margin_mm`` on every side."""
    spacing = np.full(3, _ALIGNMENT_SPACING_MM)
    extent = np.array(reference.GetSize()) * np.array(reference.GetSpacing()) + 2.0 * margin_mm
    size = [max(2, int(math.ceil(e / _ALIGNMENT_SPACING_MM))) for e in extent]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(tuple(spacing))
    grid.SetDirection(reference.GetDirection())
    corner = -np.array(reference.GetSpacing()) / 2.0 - margin_mm + spacing / 2.0  # first voxel centre, in mm
    grid.SetOrigin(tuple(np.array(reference.GetOrigin()) + np.array(reference.GetDirection()).reshape(3, 3) @ corner))
    return grid


def _cropped_to(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    """``image`` cut to the bounding box of ``mask`` (same grid): fewer voxels for the metric to visit."""
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(mask)
    if not shape.HasLabel(1):
        return image
    box = shape.GetBoundingBox(1)
    return sitk.RegionOfInterest(image, box[3:], box[:3])


def _trial_moves(centre: tuple) -> list:
    """(label, transform) for no move and the twelve small trial moves about ``centre``."""
    moves = [("not at all", sitk.Euler3DTransform(centre))]
    for axis, name in enumerate("xyz"):
        for sign in (1, -1):
            shift = sitk.Euler3DTransform(centre)
            offset = [0.0, 0.0, 0.0]
            offset[axis] = sign * _TRIAL_SHIFT_MM
            shift.SetTranslation(offset)
            moves.append((f"{sign * _TRIAL_SHIFT_MM:+g} mm along {name}", shift))
            turn = sitk.Euler3DTransform(centre)
            angles = [0.0, 0.0, 0.0]
            angles[axis] = math.radians(sign * _TRIAL_ROTATION_DEGREES)
            turn.SetRotation(*angles)
            moves.append((f"{sign * _TRIAL_ROTATION_DEGREES:+g} degrees about {name}", turn))
    return moves


def check_alignment(reference: sitk.Image, moving: sitk.Image, sequence: Sequence) -> AlignmentCheck:
    """Mutual information of ``moving`` with ``reference`` now, and after the best of twelve small moves."""
    grid = _alignment_grid(reference)
    fixed = sitk.Resample(sitk.Cast(reference, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0)
    mask = sitk.Cast(sitk.BinaryDilate(sitk.Cast(fixed > 0, sitk.sitkUInt8) if
                                       np.count_nonzero(sitk.GetArrayViewFromImage(fixed) == 0) else
                                       foreground_mask(fixed), [2, 2, 2]), sitk.sitkUInt8)
    fixed, mask = _cropped_to(mask, fixed), _cropped_to(mask, mask)  # the metric visits every fixed voxel
    # the moving image at 3 mm too, on a box with room for the trial moves: small and quick to interpolate
    moving_float = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), _alignment_grid(reference, margin_mm=12.0),
                                 sitk.Transform(), sitk.sitkLinear, 0.0)
    centre = grid.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in grid.GetSize()])
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricFixedMask(mask)
    method.SetMetricUseFixedImageGradientFilter(False)  # a value is all that is asked: no gradient images
    method.SetMetricUseMovingImageGradientFilter(False)
    method.SetMetricSamplingStrategy(method.REGULAR)  # the same sample points for every trial: comparable values
    method.SetMetricSamplingPercentage(_SAMPLING_SHARE, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    if np.count_nonzero(sitk.GetArrayViewFromImage(mask)) * _SAMPLING_SHARE < MIN_ALIGNMENT_SAMPLES:
        return AlignmentCheck(sequence, float("nan"), float("nan"), "", coregistered=None)
    values = []
    try:
        for label, move in _trial_moves(centre):
            method.SetInitialTransform(move, inPlace=False)
            values.append((method.MetricEvaluate(fixed, moving_float), label))
    except RuntimeError:  # the images barely overlap: no verdict here (the engine's own checks refuse that)
        return AlignmentCheck(sequence, float("nan"), float("nan"), "", coregistered=None)
    metric = values[0][0]
    best_value, best_label = min(values[1:])
    improvement = metric - best_value  # Mattes MI is negative: lower is better
    return AlignmentCheck(sequence, float(metric), float(best_value), best_label,
                          coregistered=not improvement > max(ALIGNMENT_MARGIN * abs(metric), ALIGNMENT_FLOOR))


def check_preconditions(images: Mapping[Sequence, sitk.Image], names: Optional[Mapping[Sequence, str]] = None,
                        reference: Optional[Sequence] = None) -> PreconditionReport:
    """Measure every input and every input's alignment with the reference (first in T1, T1c, T2, FLAIR order).

    ``names``: how to call each input in the sentences (file names, node names); default its sequence.
    """
    present = [s for s in SEQUENCES if s in images]
    if not present:
        raise ValueError("check_preconditions needs at least one input image")
    reference = reference or present[0]
    labels = {s: (names or {}).get(s) or f"the {s.display_name} input" for s in present}
    inputs = {s: check_input(images[s], s) for s in present}
    alignment = {s: check_alignment(images[reference], images[s], s) for s in present if s is not reference}
    return PreconditionReport(reference, inputs, alignment, labels)
