"""Writing a clinical phantom study to disk: native series, truth (brain masks, transforms), the BraTS-space
case and, optionally, DICOM.

Layout under ``<folder>/<case_id>/``::

    nifti/<case_id>-<key>.nii.gz          each series on its own grid, with skull (uint16)
    truth/brain-mask-<key>.nii.gz         the true brain mask on each series' grid
    truth/brain-mask.nii.gz               ... and on the BraTS grid
    truth/<key>-from-brain.tfm            brain space -> series space (sitk.WriteTransform)
    truth/transforms.json                 the same transforms in degrees and millimetres
    truth/study.json                      every parameter of the study (plans, head, motions)
    brats/<case_id>-{t1n,t1c,t2w,t2f,seg}.nii.gz, brats/<case_id>-phantom.json
    dicom/<NN>-<description>/IM<nnnn>.dcm (with ``dicom=True``; 01 is the localizer)

``<key>`` is ``t1n``, ``t1c``, ``t2w``, ``t2f`` (and ``t2f-2`` for a second FLAIR). The
transform convention is that of :mod:`.clinical`: ``sitk.Resample(series, brats_reference,
sitk.ReadTransform(tfm))`` brings a series into brain space.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import SimpleITK as sitk

from ..sequences import SEQUENCES
from .cases import case_files
from .clinical import ClinicalStudy

__all__ = ["clinical_study_files", "write_clinical_study", "TRANSFORM_CONVENTION"]

#: What every transform of a study means; written into transforms.json.
TRANSFORM_CONVENTION = (
    "Each transform maps a point of BraTS brain physical space (LPS mm) to the same anatomical point in "
    "the series' physical (LPS) space: sitk.Resample(series_image, brats_reference_image, transform) brings "
    "the series into brain space. ITK Euler3DTransform about center_mm, R = Rz Rx Ry with rotation_deg "
    "(x, y, z); p_series = R (p_brain - center) + center + translation."
)


def clinical_study_files(study: ClinicalStudy) -> dict[str, dict[str, str]]:
    """Relative paths (under ``<case_id>/``) of the files :func:`write_clinical_study` writes, by kind and key."""
    cid = study.case_id
    keys = [s.key for s in study.series]
    brats = case_files(cid)
    return {
        "nifti": {k: f"nifti/{cid}-{k}.nii.gz" for k in keys},
        "brain_mask": dict({k: f"truth/brain-mask-{k}.nii.gz" for k in keys}, brats="truth/brain-mask.nii.gz"),
        "transform": {k: f"truth/{k}-from-brain.tfm" for k in keys},
        "truth": {"transforms": "truth/transforms.json", "study": "truth/study.json"},
        "brats": {name: f"brats/{file}" for name, file in brats.items()},
    }


def _transforms_json(study: ClinicalStudy, files: dict) -> dict:
    """The summary in truth/transforms.json: per series its file, sequence, description and motion."""
    series = {}
    for s in study.series:
        summary = study.parameters["series"][s.key]["transform"]
        series[s.key] = {"file": Path(files["transform"][s.key]).name, "sequence": s.sequence.value,
                         "series_description": s.plan.description, "series_number": s.series_number,
                         **summary}
    return {"case_id": study.case_id, "convention": TRANSFORM_CONVENTION, "series": series}


def write_clinical_study(study: ClinicalStudy, output_dir: Union[str, Path], dicom: bool = True) -> Path:
    """Write ``study`` under ``output_dir/<case_id>/`` in the layout of this module; returns that folder.

    Every file is written atomically and replaces an earlier one of the same name; with
    ``dicom=True`` each DICOM series folder is replaced as a whole.
    """
    from ..core.io import atomic_path, write_image, write_text
    from .dicom_study import write_dicom_study

    folder = Path(output_dir) / study.case_id
    files = clinical_study_files(study)
    for s in study.series:
        write_image(s.image, folder / files["nifti"][s.key],
                    description=f"PHANTOM {s.plan.description} (MRISynthesis, not patient data)")
        write_image(s.brain_mask, folder / files["brain_mask"][s.key])
        with atomic_path(folder / files["transform"][s.key]) as path:
            sitk.WriteTransform(s.transform, str(path))
    write_image(study.brain_mask, folder / files["brain_mask"]["brats"])
    write_text(json.dumps(_transforms_json(study, files), indent=2) + "\n", folder / files["truth"]["transforms"])
    write_text(json.dumps(study.parameters, indent=2) + "\n", folder / files["truth"]["study"])
    for seq in SEQUENCES:
        write_image(study.brats.images[seq], folder / files["brats"][seq.value])
    write_image(study.brats.label, folder / files["brats"]["seg"])
    write_text(json.dumps(study.brats.parameters, indent=2) + "\n", folder / files["brats"]["phantom"])
    if dicom:
        write_dicom_study(study, folder / "dicom")
    return folder
