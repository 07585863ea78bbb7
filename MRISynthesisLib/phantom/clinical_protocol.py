"""The scanner protocol of a clinical phantom study: which series one session acquires, on which grid and
orientation, with which DICOM acquisition attributes, and how the head moves between series.

A routine brain-tumour protocol: a 3-plane localizer, a 3D sagittal T1 at 1 mm, an axial 2D
T2 turbo spin echo (0.5 x 0.5 mm, 5 mm slices), an axial 2D FLAIR (0.9 x 0.9 mm, 3 mm slices),
optionally a second FLAIR, and the post-contrast 3D T1 last (sagittal or axial, drawn per
study). The 2D axial stacks are tilted about the left-right axis as a technologist plans them
along the AC-PC line. The T1 pulse sequence (MPRAGE, spoiled gradient echo or 3D turbo spin
echo) and every timing attribute are those the case's signals were simulated with. Small
studies keep the orientations and the slice geometry of the 2D series and double the in-plane
(and 3D slice) spacing.

Scanner space here is brain (BraTS) space moved by each series' head motion: a scanner's frame
of reference with its isocentre where BraTS puts the brain, so the series of one study share
one frame of reference, as they do on a real scanner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from ..sequences import Sequence
from .grid import PhantomGrid
from .physics import sample_uniform

__all__ = ["SeriesPlan", "ORIENTATIONS", "LOCALIZER_PLANES", "MAX_MOTION", "clinical_plans",
           "localizer_plan", "sample_motion", "motion_transform", "series_grid"]

#: Direction cosines (columns: row direction, column direction, slice normal) in LPS, as DICOM's
#: ImageOrientationPatient gives them: sagittal 0\1\0\0\0\-1, coronal 1\0\0\0\0\-1, axial 1\0\0\0\1\0.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}
#: Planes of the 3-plane localizer, in the order its images are written.
LOCALIZER_PLANES = ("sagittal", "coronal", "axial")
#: Largest head motion per axis between a series and brain space: degrees about each axis, mm along it
#: (together at most about 4 degrees and 4 mm).
MAX_MOTION = {"rotation_deg": 2.3, "translation_mm": 2.3}
#: Largest tilt (degrees) of axial 2D stacks about the left-right axis, and random FOV offset (mm).
MAX_TILT_DEG = 10.0
MAX_FOV_JITTER_MM = 3.0


@dataclass(frozen=True)
class SeriesPlan:
    """One series as planned on the scanner: geometry, DICOM acquisition attributes, scanner gain and noise.

    ``size`` and ``spacing`` are (columns, rows, slices) and (column spacing, row spacing,
    slice spacing) in mm; ``thickness`` is the slice thickness (less than the slice spacing
    when 2D slices have gaps). ``acquisition`` maps DICOM keywords to values; ``scanner``
    holds ``wm_level``, ``noise_fraction`` and ``bias_std`` for the simulation.
    """

    key: str
    sequence: Optional[Sequence]
    description: str
    orientation: str
    dimensionality: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    thickness: float
    tilt_deg: float = 0.0
    centre_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    acquisition: dict[str, Any] = field(default_factory=dict)
    scanner: dict[str, float] = field(default_factory=dict)

    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the row direction, the column direction and the slice normal."""
        row, column = (np.asarray(v) for v in ORIENTATIONS[self.orientation])
        tilt = sitk.Euler3DTransform((0.0, 0.0, 0.0), math.radians(self.tilt_deg), 0.0, 0.0)
        rotation = np.asarray(tilt.GetMatrix()).reshape(3, 3)
        row, column = rotation @ row, rotation @ column
        return np.column_stack([row, column, np.cross(row, column)])

    def summary(self) -> dict:
        """JSON-serialisable description of the plan."""
        return {"key": self.key, "sequence": self.sequence.value if self.sequence else None,
                "description": self.description, "orientation": self.orientation,
                "dimensionality": self.dimensionality, "size": list(self.size),
                "spacing": list(self.spacing), "thickness": self.thickness, "tilt_deg": self.tilt_deg,
                "acquisition": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                                for k, v in self.acquisition.items()},
                "scanner": dict(self.scanner)}


def series_grid(plan: SeriesPlan, centre_lps) -> PhantomGrid:
    """The plan's voxel grid with its field of view centred on ``centre_lps`` (scanner space, mm)."""
    direction = plan.direction()
    half = (np.asarray(plan.size, dtype=float) - 1.0) / 2.0 * np.asarray(plan.spacing)
    origin = np.asarray(centre_lps, dtype=float) - direction @ half
    return PhantomGrid(size=tuple(int(n) for n in plan.size), spacing=tuple(float(s) for s in plan.spacing),
                       origin=tuple(float(o) for o in origin),
                       direction=tuple(float(v) for v in direction.ravel()))


def sample_motion(rng: np.random.Generator) -> dict[str, list[float]]:
    """A small rigid head motion: Euler angles (degrees) and a translation (mm), uniform per axis."""
    rotation = rng.uniform(-MAX_MOTION["rotation_deg"], MAX_MOTION["rotation_deg"], 3)
    translation = rng.uniform(-MAX_MOTION["translation_mm"], MAX_MOTION["translation_mm"], 3)
    return {"rotation_deg": [float(a) for a in rotation], "translation_mm": [float(t) for t in translation]}


def motion_transform(motion: dict, centre_lps) -> sitk.Euler3DTransform:
    """Euler transform (centre ``centre_lps``) taking brain-space points to scanner-space points."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(tuple(float(c) for c in centre_lps))
    transform.SetRotation(*(math.radians(a) for a in motion["rotation_deg"]))
    transform.SetTranslation(tuple(float(t) for t in motion["translation_mm"]))
    return transform


def _scale(small: bool, size, spacing, two_d: bool) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Small studies: half the matrix at twice the spacing in-plane (and along the slices of 3D series)."""
    if not small:
        return tuple(size), tuple(spacing)
    axes = 2 if two_d else 3
    return (tuple(n // 2 if a < axes else n for a, n in enumerate(size)),
            tuple(s * 2.0 if a < axes else s for a, s in enumerate(spacing)))


def _t1_acquisition(protocol: dict, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    """Name and DICOM attributes of the 3D T1 the case's T1 protocol describes."""
    tags: dict[str, Any] = {"MRAcquisitionType": "3D", "RepetitionTime": round(protocol["TR"], 2),
                            "EchoTime": round(protocol["TE"], 2)}
    if protocol["type"] == "mprage":
        tags.update(ScanningSequence=["GR", "IR"], SequenceVariant=["SK", "SP", "MP"], ScanOptions=["IR"],
                    InversionTime=round(protocol["TI"], 2), FlipAngle=round(protocol["flip"], 1),
                    EchoTrainLength=1, SequenceName="*tfl3d1_16ns")
        return "T1 MPRAGE", tags
    if protocol["type"] == "spgr":
        tags.update(ScanningSequence=["GR"], SequenceVariant=["SK", "SP"], ScanOptions="",
                    FlipAngle=round(protocol["flip"], 1), EchoTrainLength=1, SequenceName="*fl3d1")
        return "T1 3D SPGR", tags
    tags.update(ScanningSequence=["SE"], SequenceVariant=["SK", "SP"], ScanOptions="", FlipAngle=120.0,
                EchoTrainLength=int(rng.integers(30, 49)), SequenceName="*spc3d1")
    return "T1 SPACE", tags


def _scanner(params: dict, seq: Sequence) -> dict[str, float]:
    """The case's gain, noise and bias strength of one sequence."""
    acq = params["acquisition"][seq.value]
    return {"wm_level": acq["wm_level"], "noise_fraction": acq["noise_fraction"], "bias_std": acq["bias_std"]}


def _jitter(rng: np.random.Generator, shift: tuple[float, float, float]) -> tuple[float, float, float]:
    """A planned FOV centre offset plus the technologist's few millimetres."""
    return tuple(float(s + rng.uniform(-MAX_FOV_JITTER_MM, MAX_FOV_JITTER_MM)) for s in shift)


def clinical_plans(rng: np.random.Generator, params: dict, small: bool = False,
                   extra_flair: bool = False) -> list[SeriesPlan]:
    """The imaging series of one session in acquisition order (the localizer is :func:`localizer_plan`).

    ``params`` are the case parameters (protocols, scanner gain and noise per sequence).
    ``extra_flair`` adds a second FLAIR, ``AX T2 FLAIR 2``, with thicker slices and its
    own tilt, gain and noise: two series of one sequence, for series-recognition tests.
    """
    protocols = params["protocols"]
    t1_name, t1_tags = _t1_acquisition(protocols["t1n"], rng)
    _, t1c_tags = _t1_acquisition(protocols["t1c"], rng)
    t1c_tags.update(ContrastBolusAgent="GADOBUTROL", ContrastBolusRoute="IV")
    t1c_axial = bool(rng.random() < 0.5)
    t2w, t2f = protocols["t2w"], protocols["t2f"]
    t2_tags = {"ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP"], "ScanOptions": ["PFP"],
               "MRAcquisitionType": "2D", "RepetitionTime": round(t2w["TR"], 2), "EchoTime": round(t2w["TE"], 2),
               "FlipAngle": 150.0, "EchoTrainLength": int(rng.integers(12, 19)), "SequenceName": "*tse2d1_15"}
    flair_tags = {"ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": ["IR"],
                  "MRAcquisitionType": "2D", "RepetitionTime": round(t2f["TR"], 2), "EchoTime": round(t2f["TE"], 2),
                  "InversionTime": round(t2f["TI"], 2), "FlipAngle": 150.0,
                  "EchoTrainLength": int(rng.integers(14, 21)), "SequenceName": "*tir2d1_16"}
    sagittal_fov = (0.0, 5.0, -25.0)  # brain centre to FOV centre: include the neck
    axial_fov = (0.0, 0.0, 8.0)  # from below the skull base to the vertex

    def plan(key, seq, description, orientation, size, spacing, thickness, tags, shift, tilt=0.0, scanner=None):
        two_d = tags["MRAcquisitionType"] == "2D"
        size, spacing = _scale(small, size, spacing, two_d)
        if small and not two_d:
            thickness *= 2.0
        return SeriesPlan(key=key, sequence=seq, description=description, orientation=orientation,
                          dimensionality=tags["MRAcquisitionType"], size=size, spacing=spacing,
                          thickness=thickness, tilt_deg=tilt, centre_shift_mm=_jitter(rng, shift),
                          acquisition=dict(tags), scanner=scanner or _scanner(params, seq))

    plans = [
        plan("t1n", Sequence.T1N, f"SAG {t1_name}", "sagittal", (256, 256, 176), (1.0, 1.0, 1.0), 1.0,
             t1_tags, sagittal_fov),
        plan("t2w", Sequence.T2W, "AX T2 TSE", "axial", (400, 464, 30), (0.5, 0.5, 5.5), 5.0, t2_tags,
             axial_fov, tilt=sample_uniform(rng, (-MAX_TILT_DEG, MAX_TILT_DEG))),
        plan("t2f", Sequence.T2F, "AX T2 FLAIR", "axial", (224, 256, 52), (0.9, 0.9, 3.3), 3.0, flair_tags,
             axial_fov, tilt=sample_uniform(rng, (-MAX_TILT_DEG, MAX_TILT_DEG))),
    ]
    if extra_flair:
        scanner = _scanner(params, Sequence.T2F)
        scanner["wm_level"] *= sample_uniform(rng, (0.8, 1.25))
        scanner["noise_fraction"] *= sample_uniform(rng, (0.9, 1.2))
        tags = dict(flair_tags, EchoTrainLength=int(rng.integers(14, 21)))
        plans.append(plan("t2f-2", Sequence.T2F, "AX T2 FLAIR 2", "axial", (288, 320, 40), (0.72, 0.72, 4.4),
                          4.0, tags, axial_fov, tilt=sample_uniform(rng, (-MAX_TILT_DEG, MAX_TILT_DEG)),
                          scanner=scanner))
    if t1c_axial:
        plans.append(plan("t1c", Sequence.T1C, f"AX {t1_name} POST GD", "axial", (256, 256, 160),
                          (0.9375, 0.9375, 1.0), 1.0, t1c_tags, axial_fov))
    else:
        plans.append(plan("t1c", Sequence.T1C, f"SAG {t1_name} POST GD", "sagittal", (256, 256, 176),
                          (1.0, 1.0, 1.0), 1.0, t1c_tags, sagittal_fov))
    return plans


def localizer_plan(rng: np.random.Generator, small: bool = False) -> list[SeriesPlan]:
    """The 3-plane localizer: three slices 10 mm apart in each of :data:`LOCALIZER_PLANES` (one series)."""
    tags = {"ScanningSequence": ["GR"], "SequenceVariant": ["SP"], "ScanOptions": "", "MRAcquisitionType": "2D",
            "RepetitionTime": 8.6, "EchoTime": 4.0, "FlipAngle": 20.0, "EchoTrainLength": 1,
            "SequenceName": "*fl2d1"}
    size, spacing = _scale(small, (128, 128, 3), (2.0, 2.0, 10.0), True)
    return [SeriesPlan(key=f"localizer-{plane}", sequence=None, description="3-PLANE LOC", orientation=plane,
                       dimensionality="2D", size=size, spacing=spacing, thickness=5.0,
                       centre_shift_mm=_jitter(rng, (0.0, 0.0, -10.0)), acquisition=dict(tags))
            for plane in LOCALIZER_PLANES]
