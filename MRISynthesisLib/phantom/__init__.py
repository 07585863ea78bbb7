"""MR-physics brain phantom cases in BraTS layout, with ground truth for all four sequences.

No BraTS data can be downloaded where this project is built and tested, so every model here
is trained and checked on these cases. This package offers the case API; its modules, from the
ground up: ``grid`` (voxel grids), ``fields`` (smooth random fields), ``physics`` (tissue and
protocol parameters, signal equations), ``template`` (the ICBM152 anatomy), ``deformation``
(case geometry), ``tumour``, ``compartments``, ``acquisition`` (signals, bias, noise) and
``cases`` (generate and write cases); for clinical-like studies (each series on its own grid, with
skull, moved, optionally as DICOM) ``head`` (the head around the brain), ``clinical_protocol``
(series plans, motion), ``clinical`` (generate a study), ``clinical_files`` and ``dicom_study``
(write it).
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
from .grid import PhantomGrid, phantom_grid
from .tumour import LABELS

__all__ = [
    "PhantomCase",
    "PhantomGrid",
    "PhantomError",
    "LABELS",
    "phantom_grid",
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
