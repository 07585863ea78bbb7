"""MR-physics brain phantom cases in BraTS layout, with ground truth for all four sequences.

No BraTS data can be downloaded where this project is built and tested, so every model here
is trained and checked on these cases. This package offers the case API; its modules, from the
ground up: ``grid`` (voxel grids), ``fields`` (smooth random fields), ``physics`` (tissue and
protocol parameters, signal equations), ``template`` (the ICBM152 anatomy), ``deformation``
(case geometry), ``tumour``, ``compartments``, ``acquisition`` (signals, bias, noise) and
``cases`` (generate and write cases).
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
]
