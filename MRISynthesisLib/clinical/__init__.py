"""Clinical studies in and out: what a radiologist's study needs before the model can use it, and DICOM.

Every model of the method expects BraTS-preprocessed input (four sequences co-registered on one
1 mm grid, skull-stripped). A clinical study is DICOM series, each on its own grid, with skull,
slightly moved between series. This package checks those preconditions, prepares a study
(bias-field correction, rigid co-registration, brain extraction, resampling into a BraTS-like
space and back), reads DICOM studies (series recognition) and writes synthetic series as DICOM.
It runs below the worker and the Slicer bridge, so both the command line and the module's
worker process use it.
"""
from __future__ import annotations
