"""MR-physics brain phantom cases in BraTS layout, with ground truth for all four sequences.

No BraTS data can be downloaded where this project is built and tested, so every model here
is trained and checked on these cases. This package offers the case API; its modules, from the
ground up: ``grid`` (voxel grids: full 1 mm, medium 1.5 mm, small 2.5 mm), ``fields`` (smooth
random fields), ``physics`` (tissue and protocol parameters, signal equations), ``template`` (the
ICBM152 anatomy), ``deformation`` (case geometry), ``tumour``, ``compartments``, ``acquisition``
(signals, bias, noise) and ``cases`` (generate and write cases). Randomised training cases
(``generate_case(..., randomise=True)``) add ``randomisation`` (wide tissue, sequence and
acquisition ranges at 1.5 and 3 T, checked contrast orderings), ``anatomy_variation`` (stronger
warps, atrophy, sulci), ``tumour_variation`` (tumour sites and shapes), ``vessels`` (arteries,
veins, flow effects), ``acquisition_effects`` (shared coil bias, thick slices, Gibbs ringing,
motion, noise) and ``randomised`` (one case from them). For clinical-like studies (each series on
its own grid, with skull, moved, optionally as DICOM) ``head`` (the head around the brain),
``clinical_protocol`` (series plans, motion), ``clinical`` (generate a study), ``clinical_files``
and ``dicom_study`` (write it).
"""
from __future__ import annotations

from .cases import (
    PhantomCase,
    PhantomError,
    case_files,
    case_id_for_seed,
    generate_case,
    generate_cases,
    write_case,
)
from .clinical import ClinicalSeries, ClinicalStudy, generate_clinical_study
from .clinical_files import TRANSFORM_CONVENTION, clinical_study_files, write_clinical_study
from .clinical_protocol import SeriesPlan
from .dicom_study import write_dicom_study
from .grid import GRID_NAMES, PhantomGrid, phantom_grid
from .tumour import LABELS

__all__ = [
    "PhantomCase",
    "PhantomGrid",
    "PhantomError",
    "LABELS",
    "phantom_grid",
    "GRID_NAMES",
    "generate_case",
    "write_case",
    "generate_cases",
    "case_files",
    "case_id_for_seed",
    "ClinicalSeries",
    "ClinicalStudy",
    "SeriesPlan",
    "TRANSFORM_CONVENTION",
    "generate_clinical_study",
    "write_clinical_study",
    "clinical_study_files",
    "write_dicom_study",
]
