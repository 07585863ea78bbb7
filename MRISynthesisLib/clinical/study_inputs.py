"""The inputs of a synthesis from a DICOM study folder: scan, recognise, apply the user's choices, read.

``mrisynth synthesize --dicom STUDY_DIR`` (and the Slicer module) call :func:`study_inputs`. It says
in one line per series what was used and what was ignored, and stops with one line when the study
cannot give inputs: no DICOM, no MR image series, two series for one sequence (then the user picks
one with ``--input SEQ=<SeriesNumber or SeriesInstanceUID>``), or a choice that names no series.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import SimpleITK as sitk

from ..core.input_checks import SYNTHETIC_MARK
from ..core.io import check_image
from ..sequences import SEQUENCES, Sequence, UnknownSequenceError, parse_sequence
from .dicom_study import DicomSeries, DicomStudy, StudyError, read_series, scan_study, series_name
from .series_recognition import Recognition, describe_tags, recognise

__all__ = ["StudyInputs", "choose_series", "study_inputs", "study_messages"]

#: Series listed at most in a one-line error before "..." (a study may hold dozens).
_LISTED = 8


@dataclasses.dataclass
class StudyInputs:
    """The images to synthesise from, the series they came from, and one message line per series."""

    images: Dict[Sequence, sitk.Image]
    series: Dict[Sequence, DicomSeries]
    messages: List[str]
    recognition: Recognition
    study: DicomStudy


def _listing(series: List[DicomSeries]) -> str:
    shown = ", ".join(s.label() for s in series[:_LISTED])
    return shown + (f", ... ({len(series) - _LISTED} more)" if len(series) > _LISTED else "")


def _check_study(study: DicomStudy) -> None:
    """Refuse a study without DICOM series or without MR image series, naming what was found instead."""
    folder = study.folder
    if not study.series:
        if study.unreadable:
            path, reason = study.unreadable[0]
            raise StudyError(f"{folder}: no readable DICOM files ({len(study.unreadable)} with unreadable headers, "
                             f"e.g. {path.name}: {reason})")
        raise StudyError(f"{folder}: no DICOM files found")
    if not any(s.is_mr_image for s in study.series):
        counts = collections.Counter(s.kind for s in study.series)
        found = ", ".join(kind if count == 1 else f"{kind} x{count}" for kind, count in counts.items())
        raise StudyError(f"{folder}: no MR image series (found: {found})")


def _find(study: DicomStudy, name: str, value: str) -> DicomSeries:
    """The series an override names by SeriesInstanceUID or SeriesNumber; one line when none or several."""
    text = str(value).strip()
    given = f"--input {name}={text}"
    matches = [s for s in study.series if s.uid == text]
    if not matches and text.lstrip("+-").isdigit():
        matches = [s for s in study.series if s.number is not None and s.number == int(text)]
    if not matches:
        listed = _listing([s for s in study.series if s.is_mr_image])
        raise StudyError(f"{study.folder}: {given} names no series (no SeriesNumber or SeriesInstanceUID {text}); "
                         f"its MR series: {listed}")
    if len(matches) > 1:
        raise StudyError(f"{study.folder}: {given}: series number {text} names {len(matches)} series "
                         f"({_listing(matches)}); give the SeriesInstanceUID instead")
    series = matches[0]
    if not series.is_mr_image:
        raise StudyError(f"{series_name(series)}: {given}: not an MR image series ({series.kind})")
    for text_field in (series.description, series.protocol):
        if SYNTHETIC_MARK in text_field.upper():
            raise StudyError(f"{series_name(series)}: {given}: a synthetic series ('{text_field}'), not an acquired "
                             "scan; synthesis uses acquired inputs only")
    return series


def _apply_overrides(study: DicomStudy, found: Recognition,
                     overrides: Mapping[Union[str, Sequence], str]) -> Recognition:
    """The recognition with the user's choices in place: chosen, and removed from every other place."""
    result = copy.copy(found)
    result.chosen, result.reasons = dict(found.chosen), dict(found.reasons)
    result.ambiguous = {k: list(v) for k, v in found.ambiguous.items()}
    picked: Dict[Sequence, DicomSeries] = {}
    notes: Dict[str, str] = {}
    for key, value in overrides.items():
        try:
            sequence = parse_sequence(key)
        except UnknownSequenceError as error:
            raise StudyError(f"{study.folder}: --input {key}={value}: {error}") from None
        series = _find(study, sequence.value, str(value))
        for other, earlier in picked.items():
            if earlier.uid == series.uid:
                raise StudyError(f"{series_name(series)}: given for both {other.display_name} and "
                                 f"{sequence.display_name}")
        picked[sequence] = series
        notes[series.uid] = f"--input {sequence.value}={str(value).strip()}"
    used = {s.uid for s in picked.values()}
    previously = {s.uid: reason for s, reason in found.ignored}
    for sequence, series in picked.items():
        reason = f"chosen with {notes[series.uid]}"
        if series.uid in previously:
            reason += f" (it would have been ignored: {previously[series.uid]})"
        elif series.uid in found.candidates and found.candidates[series.uid][0] != sequence:
            reason += f" (it looked like {found.candidates[series.uid][0].short_name})"
        result.chosen[sequence], result.reasons[sequence] = series, reason
        result.ambiguous.pop(sequence, None)
    for sequence in list(result.chosen):
        if sequence not in picked and result.chosen[sequence].uid in used:
            del result.chosen[sequence], result.reasons[sequence]
    for sequence, candidates in list(result.ambiguous.items()):
        left = [s for s in candidates if s.uid not in used]
        del result.ambiguous[sequence]
        if len(left) == 1:
            result.chosen[sequence], result.reasons[sequence] = left[0], found.candidates[left[0].uid][1]
        elif left:
            result.ambiguous[sequence] = left
    result.ignored = [(s, r) for s, r in found.ignored if s.uid not in used]
    for sequence, series in picked.items():  # the candidates the user's choice passed over, and why they looked so
        passed = ([found.chosen[sequence]] if sequence in found.chosen else []) + found.ambiguous.get(sequence, [])
        for other in (s for s in passed if s.uid not in used):
            result.ignored.append((other, f"also looks like {sequence.short_name} ({found.candidates[other.uid][1]}); "
                                          f"{notes[series.uid]} chose {series.label()}"))
    result.unrecognised = [s for s in found.unrecognised if s.uid not in used]
    return result


def _ambiguity(study: DicomStudy, ambiguous: Mapping[Sequence, List[DicomSeries]]) -> str:
    parts = []
    for sequence in (s for s in SEQUENCES if s in ambiguous):
        candidates = ambiguous[sequence]
        first = candidates[0]
        numbers = [s.number for s in study.series]
        if first.number is not None and numbers.count(first.number) == 1:
            hint = f"{first.number} (series number) or --input {sequence.value}=<SeriesInstanceUID>"
        else:  # series numbers repeat in this study: only the UID names one series
            hint = f"<SeriesInstanceUID> (e.g. {first.uid})"
        parts.append(f"{len(candidates)} series look like {sequence.short_name}: {_listing(candidates)}; choose one "
                     f"with --input {sequence.value}={hint}")
    return f"{study.folder}: " + "; ".join(parts)


def choose_series(study: DicomStudy, overrides: Optional[Mapping[Union[str, Sequence], str]] = None) -> Recognition:
    """Recognise the study's series and apply ``overrides`` ({sequence name: SeriesNumber or SeriesInstanceUID}).

    Raises :class:`StudyError` (one line) for a study without MR image series, an override that names
    no series (or a non-MR, synthetic or doubly given one), a sequence left with two candidates, and
    a study where no series looks like any of the four sequences. Reads no voxels.
    """
    _check_study(study)
    result = _apply_overrides(study, recognise(study.series), overrides or {})
    if result.ambiguous:
        raise StudyError(_ambiguity(study, result.ambiguous))
    if not result.chosen:
        mr = [s for s in study.series if s.is_mr_image]
        raise StudyError(f"{study.folder}: none of its {len(mr)} MR image series looks like T1, T1c, T2 or FLAIR "
                         f"({_listing(mr)}); give them with --input SEQ=<series number>")
    return result


def study_messages(study: DicomStudy, result: Recognition) -> List[str]:
    """One line per chosen, ignored and unrecognised series, and one per kind of skipped file."""
    lines = [f"{sequence.display_name} ({sequence.value}): {result.chosen[sequence].label()}: "
             f"{result.reasons[sequence]}" for sequence in SEQUENCES if sequence in result.chosen]
    lines += [f"ignored {series.label()}: {reason}" for series, reason in result.ignored]
    lines += [f"not recognised {series.label()}: {describe_tags(series.tags)}; give it with --input "
              f"SEQ={series.number if series.number is not None else series.uid} if it is T1, T1c, T2 or FLAIR"
              for series in result.unrecognised]
    if study.non_dicom:
        lines.append(f"skipped {study.non_dicom} file(s) that are not DICOM images (or belong to no series)")
    if study.duplicates:
        lines.append(f"skipped {study.duplicates} duplicate file(s) (an image already found)")
    for path, reason in study.unreadable:
        lines.append(f"skipped {path}: unreadable DICOM header ({reason})")
    return lines


def study_inputs(study_dir: Union[str, Path],
                 overrides: Optional[Mapping[Union[str, Sequence], str]] = None) -> StudyInputs:
    """Read the synthesis inputs from a DICOM study folder.

    ``overrides`` maps a sequence name (``t2f``, ``FLAIR``, ...) to a SeriesNumber or a
    SeriesInstanceUID and wins over recognition. Each chosen series is read
    (:func:`dicom_study.read_series`) and checked like any input image (:func:`core.io.check_image`).
    Errors are :class:`StudyError` (an ``InputError``) with one line naming the folder and series.
    """
    study = scan_study(study_dir)
    result = choose_series(study, overrides)
    images: Dict[Sequence, sitk.Image] = {}
    for sequence in (s for s in SEQUENCES if s in result.chosen):
        series = result.chosen[sequence]
        image = read_series(series)
        check_image(image, series_name(series))
        images[sequence] = image
    return StudyInputs(images=images, series=dict(result.chosen), messages=study_messages(study, result),
                       recognition=result, study=study)
