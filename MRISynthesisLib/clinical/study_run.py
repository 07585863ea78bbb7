"""One rule for every front end: inputs go to the model prepared, or checked and found ready; never assumed.

The command line, the worker process (the Slicer module) and the blocking scene flow all call
:func:`model_ready_inputs` before a synthesis: with ``prepare`` the study is prepared
(:func:`~.prepare.prepare_study`), with only a ``brain_mask`` the inputs are skull-stripped with it,
and either way the result is measured (:func:`~.preconditions.check_preconditions`) unless it
was prepared. A study that fails raises :class:`~.preconditions.PreconditionError` carrying the
report, so each front end says what to do in its own words (an option, a button).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Tuple

import SimpleITK as sitk

from ..sequences import Sequence
from .brain_masks import mask_on_grid
from .preconditions import PreconditionError, PreconditionReport, check_preconditions
from .prepare import PreparedStudy, model_spacing_of, prepare_study

__all__ = ["StudyOptions", "NotReadyError", "model_ready_inputs"]


@dataclasses.dataclass
class StudyOptions:
    """How to treat the inputs: prepare them, or only skull-strip them with a mask, or use them as they are."""

    prepare: bool = False
    brain_mask: Optional[sitk.Image] = None
    brain_extraction: str = "mask"
    bias_correction: bool = False


class NotReadyError(PreconditionError):
    """Inputs that are not what the model expects; ``report`` holds the measures and the failed checks."""

    def __init__(self, report: PreconditionReport, advice: str):
        super().__init__(report.one_line(advice))
        self.report = report


def _skull_stripped(images: Mapping[Sequence, sitk.Image], mask: sitk.Image, names: Mapping[Sequence, str]) -> dict:
    """Every input with everything outside the brain mask set to 0 (the mask resampled onto each grid)."""
    return {sequence: sitk.Mask(image, mask_on_grid(mask, image, f"the brain mask on the grid of {names[sequence]}"),
                                0) for sequence, image in images.items()}


def model_ready_inputs(images: Mapping[Sequence, sitk.Image], bundle, options: StudyOptions,
                       names: Optional[Mapping[Sequence, str]] = None, advice: str = "",
                       progress: Optional[Callable[[float, str], None]] = None, cancel=None,
                       device: str = "cpu") -> Tuple[dict, Optional[PreparedStudy], Optional[PreconditionReport]]:
    """``(images for the model, the PreparedStudy or None, the preconditions report or None)``.

    ``advice``: what the user should do when the inputs are not ready (default: the command line's).
    """
    from .preconditions import PREPARE_ADVICE

    if options.prepare:
        prepared = prepare_study(images, brain_mask=options.brain_mask, brain_extraction=options.brain_extraction,
                                 bias_correction=options.bias_correction, names=names, device=device,
                                 spacing_mm=model_spacing_of(bundle), progress=progress, cancel=cancel)
        return prepared.images, prepared, None
    labels = {s: (names or {}).get(s) or f"the {s.display_name} input" for s in images}
    ready = dict(images) if options.brain_mask is None else _skull_stripped(images, options.brain_mask, labels)
    report = check_preconditions(ready, names)
    if not report.ok:
        raise NotReadyError(report, advice or PREPARE_ADVICE)
    return ready, None, report
