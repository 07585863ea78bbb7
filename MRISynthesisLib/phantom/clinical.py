"""Clinical-like phantom studies: a case's four sequences as a scanner acquires them, each series on its own
grid and orientation, with skull, slightly moved, with the truth needed to check a clinical pipeline.

One study is one case (:func:`.cases.generate_case`, same seed) with a head built around its
brain (:mod:`.head`), acquired per the protocol of :mod:`.clinical_protocol`: every series has
its own small rigid head motion (up to about 4 degrees and 4 mm), its noise-free signal is
resampled onto the series grid (thick 2D slices average the signal across the slice
thickness: partial volume), and then a bias field and Rician noise are added over the whole
field of view (air included: a head image has noise in the air) and intensities are rounded
to unsigned 16-bit integers, as a scanner stores them. The BraTS-space version of the same
case (skull-stripped, on the BraTS grid) comes along for comparisons.

**Transform convention.** For every series, ``transform`` is a ``sitk.Euler3DTransform`` that
maps a point of BraTS brain physical space (LPS mm) to the same anatomical point in the
series' physical (LPS) space, so that ``sitk.Resample(series.image, brats_reference,
series.transform)`` brings the series back into brain space, and a series-space point ``p``
is brain-space point ``series.transform.GetInverse().TransformPoint(p)``. Its centre is the
centre of the brain; angles follow ITK's Euler3DTransform (radians in the transform, ``R =
Rz Rx Ry``). All series share one scanner frame of reference (BraTS space up to the motion).

Generating a small study takes a few seconds; a full-size one about half a minute (two
generations of the case, the 1 mm head, series of up to 11 million voxels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..sequences import SEQUENCES, Sequence
from .cases import PhantomCase, PhantomError, generate_case
from .clinical_protocol import (
    SeriesPlan,
    clinical_plans,
    localizer_plan,
    motion_transform,
    sample_motion,
    series_grid,
)
from .fields import smooth_field
from .grid import PhantomGrid
from .head import build_head

__all__ = ["ClinicalSeries", "ClinicalStudy", "generate_clinical_study", "brain_centre"]

#: Entropy added to the case seed for the random draws of the head and the acquisition, so that
#: they never change the case itself.
_CLINICAL_STREAM = 0xC11


@dataclass
class ClinicalSeries:
    """One acquired series: the image with skull on its own grid, the true brain mask there, the motion.

    ``key`` names its files (``t1n``, ``t1c``, ``t2w``, ``t2f`` and ``t2f-2`` for a second
    FLAIR); ``transform`` maps brain space to this series' space (module docstring).
    """

    key: str
    sequence: Sequence
    plan: SeriesPlan
    image: sitk.Image  # UInt16
    brain_mask: sitk.Image  # UInt8, same grid
    transform: sitk.Euler3DTransform
    series_number: int
    motion: dict = field(default_factory=dict)


@dataclass
class ClinicalStudy:
    """A clinical-like study of one phantom case and its truth.

    ``series`` are the imaging series in acquisition order; ``localizer`` the three stacks
    (sagittal, coronal, axial) of the 3-plane localizer that readers must ignore, with its
    ``localizer_plans``; ``brats`` the BraTS-space case exactly as :func:`generate_case` gives
    it and ``brain_mask`` its true brain mask on the BraTS grid.
    """

    case_id: str
    seed: int
    small: bool
    series: list[ClinicalSeries]
    localizer: list[sitk.Image]
    localizer_plans: list[SeriesPlan]
    brats: PhantomCase
    brain_mask: sitk.Image
    parameters: dict

    def primary(self, seq: Sequence) -> ClinicalSeries:
        """The first series of ``seq`` (the one named after the sequence alone)."""
        for series in self.series:
            if series.sequence == seq:
                return series
        raise KeyError(f"clinical study {self.case_id}: no {seq.value} series")

    @property
    def images(self) -> dict[Sequence, sitk.Image]:
        """The first series of each sequence."""
        return {seq: self.primary(seq).image for seq in SEQUENCES}

    @property
    def transforms(self) -> dict[Sequence, sitk.Euler3DTransform]:
        """Brain-to-series transform of the first series of each sequence."""
        return {seq: self.primary(seq).transform for seq in SEQUENCES}


def brain_centre(brain_mask: sitk.Image) -> np.ndarray:
    """LPS centre (mm) of the bounding box of a brain mask: the centre of every head motion."""
    inside = np.argwhere(sitk.GetArrayFromImage(brain_mask) > 0)
    if inside.size == 0:
        raise PhantomError("clinical phantom: the case's brain mask is empty")
    middle = (inside.min(axis=0) + inside.max(axis=0)) / 2.0  # (z, y, x)
    return np.asarray(brain_mask.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in middle[::-1])))


def _resample(image: sitk.Image, grid: PhantomGrid, to_source: sitk.Transform, interpolator: int,
              pixel: int, offset_mm: float = 0.0) -> sitk.Image:
    """``image`` sampled on ``grid`` moved ``offset_mm`` along its slice normal (``to_source``: grid -> image space)."""
    normal = np.asarray(grid.direction).reshape(3, 3)[:, 2]
    origin = tuple(float(o) for o in np.asarray(grid.origin) + offset_mm * normal)
    return sitk.Resample(image, grid.size, to_source, interpolator, origin, grid.spacing, grid.direction,
                         0.0, pixel)


def _slice_profile(image: sitk.Image, grid: PhantomGrid, to_source: sitk.Transform, thickness: float) -> np.ndarray:
    """Noise-free signal on ``grid``: the mean over the slice thickness (a box slice profile), as an array."""
    samples = max(1, int(math.ceil(thickness / min(image.GetSpacing()) - 1e-6)))
    total = None
    for j in range(samples):
        offset = ((j + 0.5) / samples - 0.5) * thickness
        values = sitk.GetArrayFromImage(_resample(image, grid, to_source, sitk.sitkLinear, sitk.sitkFloat32, offset))
        total = values if total is None else total + values
    return total / np.float32(samples)


def _acquire(rng: np.random.Generator, signal: np.ndarray, grid: PhantomGrid, scanner: dict) -> sitk.Image:
    """Bias field and Rician noise over the whole field of view; unsigned 16-bit intensities on ``grid``."""
    spacing_zyx = tuple(reversed(grid.spacing))
    bias = np.exp(np.float32(scanner["bias_std"]) * smooth_field(rng, signal.shape, 90.0, spacing_zyx))
    sigma = np.float32(scanner["noise_fraction"] * scanner["wm_level"])
    real = signal * bias + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    magnitude = np.rint(np.minimum(np.sqrt(real * real + imag * imag), 65535.0)).astype(np.uint16)
    return grid.apply_to(sitk.GetImageFromArray(magnitude))


def _transform_summary(transform: sitk.Euler3DTransform) -> dict:
    """Angles (degrees), translation and centre (mm) and matrix of a brain-to-series transform."""
    return {"rotation_deg": [math.degrees(a) for a in (transform.GetAngleX(), transform.GetAngleY(),
                                                       transform.GetAngleZ())],
            "translation_mm": list(transform.GetTranslation()), "center_mm": list(transform.GetCenter()),
            "matrix": np.asarray(transform.GetMatrix()).reshape(3, 3).tolist()}


def _series_of(rng: np.random.Generator, plan: SeriesPlan, head_image: sitk.Image, brain_mask: sitk.Image,
               centre: np.ndarray, scanner: dict) -> tuple[sitk.Image, sitk.Image, sitk.Euler3DTransform, dict]:
    """Image, brain mask, brain-to-series transform and motion of one planned series."""
    motion = sample_motion(rng)
    transform = motion_transform(motion, centre)
    fov_centre = transform.TransformPoint(tuple(float(c) for c in centre + np.asarray(plan.centre_shift_mm)))
    grid = series_grid(plan, fov_centre)
    to_brain = transform.GetInverse()
    signal = _slice_profile(head_image, grid, to_brain, plan.thickness)
    image = _acquire(rng, signal, grid, scanner)
    mask = _resample(brain_mask, grid, to_brain, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    return image, mask, transform, motion


def generate_clinical_study(seed: int, small: bool = False, case_id: Optional[str] = None,
                            extra_flair: bool = False, tumour: bool = True) -> ClinicalStudy:
    """A clinical-like study of phantom case ``seed``; the same arguments give the same study, bit for bit.

    ``small`` uses the small case (2.5 mm BraTS grid) and coarser series (module
    :mod:`.clinical_protocol`); ``extra_flair`` adds a second FLAIR series. The head, the
    motions and the noise come from a random stream of their own, so ``study.brats`` is
    exactly ``generate_case(seed, small, case_id, tumour=tumour)``.
    """
    brats = generate_case(seed, small=small, case_id=case_id, tumour=tumour)
    ideal = generate_case(seed, small=small, case_id=case_id, tumour=tumour, noise=False, bias=False)
    params = brats.parameters
    rng = np.random.default_rng([brats.seed, _CLINICAL_STREAM])
    brain_mask = brats.tissues["brain"]
    head = build_head(rng, brain_mask, params)
    plans = clinical_plans(rng, params, small=small, extra_flair=extra_flair)
    loc_plans = localizer_plan(rng, small=small)
    centre = brain_centre(brain_mask)

    numbers = {plan.key: i + 2 for i, plan in enumerate(plans)}  # series 1 is the localizer
    series: dict[str, ClinicalSeries] = {}
    localizer: list[sitk.Image] = []
    localizer_motion: dict = {}
    for seq in SEQUENCES:
        head_image = head.image(seq, ideal.images[seq])
        if seq == Sequence.T1N:  # the localizer is a fast T1-weighted gradient echo
            localizer_motion = sample_motion(rng)
            loc_transform = motion_transform(localizer_motion, centre)
            loc_scanner = dict(plans[0].scanner, noise_fraction=2.0 * plans[0].scanner["noise_fraction"])
            for plan in loc_plans:
                shifted = centre + np.asarray(plan.centre_shift_mm)
                grid = series_grid(plan, loc_transform.TransformPoint(tuple(float(c) for c in shifted)))
                signal = _slice_profile(head_image, grid, loc_transform.GetInverse(), plan.thickness)
                localizer.append(_acquire(rng, signal, grid, loc_scanner))
        for plan in plans:
            if plan.sequence == seq:
                image, mask, transform, motion = _series_of(rng, plan, head_image, brain_mask, centre, plan.scanner)
                series[plan.key] = ClinicalSeries(key=plan.key, sequence=seq, plan=plan, image=image,
                                                  brain_mask=mask, transform=transform,
                                                  series_number=numbers[plan.key], motion=motion)
        del head_image
    ordered = [series[plan.key] for plan in plans]
    parameters = {
        "generator": "MRISynthesisLib.phantom.clinical",
        "seed": brats.seed, "case_id": brats.case_id, "small": bool(small), "extra_flair": bool(extra_flair),
        "brain_centre_mm": [float(c) for c in centre],
        "head": head.parameters,
        "series": {s.key: dict(s.plan.summary(), series_number=s.series_number,
                               transform=_transform_summary(s.transform)) for s in ordered},
        "localizer": {"planes": [p.summary() for p in loc_plans], "series_number": 1,
                      "motion": localizer_motion},
    }
    return ClinicalStudy(case_id=brats.case_id, seed=brats.seed, small=bool(small), series=ordered,
                         localizer=localizer, localizer_plans=loc_plans, brats=brats,
                         brain_mask=brain_mask, parameters=parameters)
