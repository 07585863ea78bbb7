"""A clinical phantom study as DICOM files: classic single-frame MR Image Storage, one folder per series,
written with pydicom.

One StudyInstanceUID for the study, one SeriesInstanceUID per series and one
FrameOfReferenceUID for all (one scanner session). The UIDs are derived from the case id and
seed (name-based ``2.25.`` UUID UIDs), so writing the same study twice gives the same files. Every
slice carries the geometry of its grid exactly (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing, SliceThickness, SpacingBetweenSlices), the acquisition attributes of its plan
(:mod:`.clinical_protocol`) and the series' unsigned 16-bit intensities as stored (no rescale).
Series 1 is a 3-plane localizer (ImageType ``ORIGINAL\\PRIMARY\\LOCALIZER``) that readers must
ignore. Patient attributes are synthetic: ``Phantom^Clinical`` with the case id as PatientID.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from .clinical_protocol import SeriesPlan

__all__ = ["MANUFACTURER", "MR_IMAGE_STORAGE", "PATIENT_NAME", "series_folder_name", "study_uid",
           "write_dicom_study"]

#: SOP Class UID of (classic) MR Image Storage.
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MANUFACTURER = "MRISynthesis phantom"
PATIENT_NAME = "Phantom^Clinical"
#: Minutes each series takes, for plausible series times (localizer, then by key).
_MINUTES = {"localizer": 0.5, "t1n": 5.0, "t2w": 3.0, "t2f": 4.0, "t2f-2": 4.0, "t1c": 5.0}


def study_uid(case_id: str, seed: int, *parts: str) -> str:
    """A UID that depends only on the case, the seed and ``parts`` (``study``, ``frame``, a series key ...).

    ``2.25.`` followed by a name-based (SHA-1) UUID as an integer, the UUID-derived UID form.
    """
    name = "/".join(["MRISynthesis clinical phantom", case_id, str(seed), *parts])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def series_folder_name(number: int, description: str) -> str:
    """``<NN>-<description>`` with anything but letters, digits and dashes made a dash: ``02-SAG-T1-MPRAGE``."""
    return f"{number:02d}-" + re.sub(r"[^A-Za-z0-9]+", "-", description).strip("-")


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters that keeps 10 significant digits."""
    value = 0.0 if abs(value) < 1e-12 else float(value)
    return f"{value:.10g}"


def _window(pixels: np.ndarray) -> tuple[int, int]:
    """Window centre and width that show the head (1st to 99.5th percentile of the non-air voxels)."""
    values = pixels[pixels > np.percentile(pixels, 50)]
    if values.size == 0:
        return 1, 2
    low, high = np.percentile(values, [1.0, 99.5])
    return int(round((low + high) / 2.0)), max(2, int(round(high - low)))


def _base_dataset(study, plan: SeriesPlan, number: int, series_key: str, when: datetime.datetime,
                  localizer: bool):
    """Patient, study, series, equipment and acquisition attributes shared by every slice of a series."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if localizer else "M"] + ([] if localizer else ["ND"])
    ds.SOPClassUID = MR_IMAGE_STORAGE
    study_date = _study_start(study).strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = _study_start(study).strftime("%H%M%S")
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "MR physics phantom"
    ds.InstitutionName = "MRISynthesis"
    ds.StationName = "PHANTOM"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MRI BRAIN TUMOUR"
    ds.SeriesDescription = plan.description
    ds.ProtocolName = plan.description
    ds.PatientName = PATIENT_NAME
    ds.PatientID = study.case_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "HEAD"
    for keyword, value in plan.acquisition.items():
        setattr(ds, keyword, value)
    ds.SliceThickness = _ds(plan.thickness)
    ds.SpacingBetweenSlices = _ds(plan.spacing[2])
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = "123.2"
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = 3
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid(study.case_id, study.seed, "study")
    ds.SeriesInstanceUID = study_uid(study.case_id, study.seed, "series", series_key)
    ds.StudyID = "1"
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study_uid(study.case_id, study.seed, "frame")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _study_start(study) -> datetime.datetime:
    """A synthetic study date and start time that depend on the seed only."""
    return datetime.datetime(2024, 1, 1, 8, 0, 0) + datetime.timedelta(days=study.seed % 366,
                                                                       minutes=15 * (study.seed % 32))


def _write_stack(base, image: sitk.Image, plan: SeriesPlan, folder: Path, series_key: str,
                 first_instance: int, study) -> int:
    """Write every slice of one stack of a series; returns the next instance number."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin, spacing, size = np.asarray(image.GetOrigin()), image.GetSpacing(), image.GetSize()
    pixels = sitk.GetArrayFromImage(image)
    if pixels.dtype != np.uint16:
        raise ValueError(f"DICOM study {study.case_id}: series {plan.description} is {pixels.dtype}, not uint16")
    centre, width = _window(pixels)
    orientation = [_ds(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    instance = first_instance
    for k in range(size[2]):
        position = origin + k * spacing[2] * direction[:, 2]
        ds = Dataset()
        ds.update(base)
        uid = study_uid(study.case_id, study.seed, "instance", series_key, str(instance))
        ds.SOPInstanceUID = uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = orientation
        ds.SliceLocation = _ds(float(position @ direction[:, 2]))
        ds.Rows, ds.Columns = int(size[1]), int(size[0])
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.WindowCenter, ds.WindowWidth = centre, width
        ds.PixelData = np.ascontiguousarray(pixels[k]).astype("<u2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"IM{instance:04d}.dcm", enforce_file_format=True)
        instance += 1
    return instance


def _replace_folder(staging: Path, target: Path) -> None:
    """Put a fully written series folder in place of any earlier one of the same name."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(staging, target)


def _write_series(study, stacks: list, plans: list, number: int, series_key: str, dicom_dir: Path,
                  when: datetime.datetime, localizer: bool) -> Path:
    """Write one series (one or several stacks) into ``dicom_dir/<NN>-<description>/`` atomically."""
    target = dicom_dir / series_folder_name(number, plans[0].description)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=dicom_dir))
    try:
        instance = 1
        for image, plan in zip(stacks, plans):
            base = _base_dataset(study, plan, number, series_key, when, localizer)
            instance = _write_stack(base, image, plan, staging, series_key, instance, study)
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_dicom_study(study, output_dir: Union[str, Path], start: Optional[datetime.datetime] = None) -> list[Path]:
    """Write ``study`` (a :class:`.clinical.ClinicalStudy`) as ``output_dir/<NN>-<description>/IM<nnnn>.dcm``.

    The localizer is series 1, the imaging series follow in acquisition order with their
    ``series_number``. Each series folder is written beside its final place and then renamed
    over any earlier one. Returns the series folders in order.
    """
    dicom_dir = Path(output_dir)
    dicom_dir.mkdir(parents=True, exist_ok=True)
    when = start or _study_start(study)
    folders = [_write_series(study, study.localizer, study.localizer_plans, 1, "localizer", dicom_dir, when, True)]
    when += datetime.timedelta(minutes=_MINUTES["localizer"])
    for series in study.series:
        folders.append(_write_series(study, [series.image], [series.plan], series.series_number, series.key,
                                     dicom_dir, when, False))
        when += datetime.timedelta(minutes=_MINUTES.get(series.key, 4.0))
    return folders
