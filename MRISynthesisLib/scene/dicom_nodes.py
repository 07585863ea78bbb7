"""Which sequence a volume loaded from Slicer's DICOM browser is, from its DICOM tags, not only its name.

Slicer's DICOM loader names a volume ``<SeriesNumber>: <SeriesDescription>`` and records its
instances in the node attribute ``DICOM.instanceUIDs``. Through the DICOM database (in Slicer,
``slicer.dicomDatabase.fileForInstance``) those give the files, whose headers say what the name
may not: the acquisition (ScanningSequence, TR, TE, TI) and a contrast agent. The same rules as
``mrisynth synthesize --dicom`` decide (:mod:`MRISynthesisLib.clinical.series_recognition`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional

from ..sequences import Sequence

__all__ = ["INSTANCE_UIDS_ATTRIBUTE", "node_dicom_files", "dicom_sequence", "dicom_recogniser"]

#: Node attribute in which Slicer's DICOM scalar-volume loader lists the SOP Instance UIDs it read.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


def node_dicom_files(node: Any, file_for_instance: Callable[[str], str]) -> List[Path]:
    """The DICOM files a node was loaded from (those the database still has), in the listed order."""
    uids = (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    files = []
    for uid in uids:
        path = file_for_instance(uid) or ""
        if path and Path(path).is_file():
            files.append(Path(path))
    return files


def dicom_sequence(node: Any, file_for_instance: Callable[[str], str]) -> Optional[Sequence]:
    """The sequence the node's DICOM series is by the recognition rules, or None (no DICOM origin, a series
    the rules ignore, such as a localiser, or no clear answer)."""
    from ..clinical.dicom_study import scan_files
    from ..clinical.series_recognition import classify, ignore_reason

    files = node_dicom_files(node, file_for_instance)
    if not files:
        return None
    study = scan_files(files, files[0].parent)
    if len(study.series) != 1 or ignore_reason(study.series[0]) is not None:
        return None
    found = classify(study.series[0])
    return None if found is None else found[0]


def dicom_recogniser(file_for_instance: Optional[Callable[[str], str]]) -> Optional[Callable[[Any], Optional[Sequence]]]:
    """``node -> Sequence or None`` from the DICOM database's file lookup (None without a database).

    Answers are kept per node and instance list: the panel asks on every update, and reading a
    series' headers each time would make it sluggish.
    """
    if file_for_instance is None:
        return None
    known: dict = {}

    def recognise(node: Any) -> Optional[Sequence]:
        key = (node.GetID(), node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "")
        if not key[1]:
            return None
        if key not in known:
            known[key] = dicom_sequence(node, file_for_instance)
        return known[key]

    return recognise
