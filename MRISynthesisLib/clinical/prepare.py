"""Preparing a clinical study for the model, and mapping what the model made back to the study's own grids.

:func:`prepare_study` runs, in this order:

1. bias-field correction of every series (SimpleITK N4), only with ``bias_correction``: on the phantom
   studies it changed the synthetic T1c's SSIM by less than 0.001 and cost 10-40 s per case
   (benchmarks/clinical_preparation.py), so it is off unless asked for;
2. rigid co-registration of every series to the reference series (mutual information, with
   a sanity check; the transforms are kept and reported);
3. brain extraction on the reference series (a given mask, or HD-BET; :mod:`.brain_masks`);
4. resampling of every series into the model space (axial, around the brain, at the voxel size the
   model was trained on: 1 mm for BraTS models; :mod:`.model_space`), with everything outside the
   brain set to 0, as in BraTS data.

The :class:`PreparedStudy` it returns holds the model-space images the engine synthesises
from, and maps results back: :meth:`PreparedStudy.to_reference_grid` onto the reference
series' native grid, :meth:`PreparedStudy.to_input_grid` onto any input series' own grid.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Mapping, Optional

import SimpleITK as sitk

from ..core.pipeline import TARGET_IMAGE_ROLES, SynthesisResult
from ..core.progress import check_cancel
from ..sequences import SEQUENCES, Sequence
from .brain_masks import BACKENDS, BrainExtractionError, hd_bet_mask, mask_on_grid
from .model_space import MODEL_SPACING_MM, into_grid, model_space_grid

__all__ = ["PreparedStudy", "prepare_study", "PreparationError", "model_spacing_of"]

#: Images of a TargetResult that are masks (mapped with nearest neighbour).
_MASK_ROLES = ("tumour_mask",)


class PreparationError(ValueError):
    """A study that cannot be prepared (one line: which series, what failed, what to do)."""


@dataclasses.dataclass
class PreparedStudy:
    """A study in the model space, and how each series got there."""

    images: Dict[Sequence, sitk.Image]
    brain_mask: sitk.Image
    reference: Sequence
    native: Dict[Sequence, sitk.Image]
    registrations: Dict[Sequence, object]
    brain_extraction: str
    timings: Dict[str, float]
    messages: List[str]

    @property
    def reference_brain_mask(self) -> sitk.Image:
        """The brain mask on the reference series' own grid (to write out and show)."""
        return into_grid(self.brain_mask, self.native[self.reference], nearest=True)

    def _native_transform(self, sequence: Sequence) -> Optional[sitk.Transform]:
        """Maps points of ``sequence``'s grid to the model space (the reference frame)."""
        registration = self.registrations.get(sequence)
        return None if registration is None else registration.transform.GetInverse()

    def to_input_grid(self, image: sitk.Image, sequence: Sequence, nearest: bool = False) -> sitk.Image:
        """A model-space image on ``sequence``'s own native grid."""
        return into_grid(image, self.native[sequence], self._native_transform(sequence), nearest=nearest)

    def to_reference_grid(self, image: sitk.Image, nearest: bool = False) -> sitk.Image:
        return self.to_input_grid(image, self.reference, nearest)

    def result_on_grid(self, result: SynthesisResult, sequence: Optional[Sequence] = None) -> SynthesisResult:
        """``result`` (made in the model space) with every image on the reference's (or ``sequence``'s) grid."""
        sequence = sequence or self.reference
        brain = self.to_input_grid(self.brain_mask, sequence, nearest=True)
        targets = {}
        for target, made in result.targets.items():
            images = {role: None if getattr(made, role) is None else
                      self.to_input_grid(getattr(made, role), sequence, nearest=role in _MASK_ROLES)
                      for role in TARGET_IMAGE_ROLES}
            for role, image in images.items():  # 0 outside the brain, as on the model space (no interpolation halo)
                if image is not None and role not in _MASK_ROLES:
                    images[role] = sitk.Mask(image, brain, 0)
            if images["tumour_mask"] is not None:
                images["tumour_mask"] = sitk.Cast(images["tumour_mask"], sitk.sitkUInt8)
            targets[target] = dataclasses.replace(made, **images)
        return dataclasses.replace(result, targets=targets, model_grid=None,
                                   messages=list(self.messages) + list(result.messages),
                                   brain_mask=brain,
                                   preparation=self.report())

    def report(self) -> dict:
        """How the study was prepared, for the report file."""
        return {
            "reference": self.reference.value,
            "brain_extraction": self.brain_extraction,
            "model_space": {"size": list(self.brain_mask.GetSize()), "spacing_mm": list(self.brain_mask.GetSpacing()),
                            "origin_mm": list(self.brain_mask.GetOrigin())},
            "registrations": {s.value: _registration_json(r) for s, r in self.registrations.items()},
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def model_spacing_of(bundle) -> float:
    """The in-plane voxel size (mm) a bundle's stage-1 generator sees (its 240 mm field of view / image size)."""
    from ..core.model_grid_inputs import model_grid_for

    return float(model_grid_for(bundle.stage1)[1])


def _registration_json(registration) -> dict:
    transform = registration.transform
    return {"description": registration.describe(), "trusted": bool(registration.trusted),
            "transform": type(transform).__name__, "parameters": list(transform.GetParameters()),
            "fixed_parameters": list(transform.GetFixedParameters())}


def _reference_of(images: Mapping[Sequence, sitk.Image], reference: Optional[Sequence]) -> Sequence:
    if reference is not None:
        if reference not in images:
            raise PreparationError(f"reference {Sequence(reference).display_name} is not among the inputs")
        return Sequence(reference)
    return next(s for s in SEQUENCES if s in images)


def prepare_study(images: Mapping[Sequence, sitk.Image], *, brain_mask: Optional[sitk.Image] = None,
                  brain_extraction: str = "mask", reference: Optional[Sequence] = None, bias_correction: bool = False,
                  names: Optional[Mapping[Sequence, str]] = None, device: str = "cpu",
                  spacing_mm: float = MODEL_SPACING_MM,
                  progress: Optional[Callable[[float, str], None]] = None, cancel=None) -> PreparedStudy:
    """Bias-correct, co-register, brain-extract and resample a study into the model space (module docstring).

    ``brain_mask``: a mask in the reference series' physical space (any grid), used when
    ``brain_extraction`` is ``"mask"``; ``"hd-bet"`` runs HD-BET instead. ``names``: how to call each
    series in messages (file or node names). ``spacing_mm``: voxel size of the model space; the grid the
    model was trained on (:func:`model_spacing_of` a bundle: 1 mm for BraTS-trained models, 1.5 mm for
    the CPU demo model), so that its slices show anatomy at the scale it learned. A co-registration that fails
    its sanity check stops the preparation with a one-line error naming the series.
    """
    from .bias_field import correct_bias_field
    from .registration import register_rigid

    if brain_extraction not in BACKENDS:
        raise PreparationError(f"brain extraction {brain_extraction!r}: expected one of {', '.join(BACKENDS)}")
    if brain_extraction == "mask" and brain_mask is None:
        raise PreparationError("preparing a study needs a brain mask (--brain-mask FILE) or --brain-extraction hd-bet")
    report = progress or (lambda fraction, message: None)
    reference = _reference_of(images, reference)
    label = {s: (names or {}).get(s) or f"the {s.display_name} series" for s in images}
    timings: Dict[str, float] = {}
    messages: List[str] = []
    native = {s: images[s] for s in SEQUENCES if s in images}

    corrected = dict(native)
    if bias_correction:
        tick = time.perf_counter()
        for index, sequence in enumerate(native):
            check_cancel(cancel)
            report(0.3 * index / len(native), f"bias-field correction of {label[sequence]}")
            try:
                corrected[sequence] = correct_bias_field(native[sequence]).corrected
            except ValueError as error:
                raise PreparationError(f"bias-field correction of {label[sequence]}: {error}") from None
        timings["bias_correction_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    registrations: Dict[Sequence, object] = {}
    others = [s for s in native if s is not reference]
    for index, sequence in enumerate(others):
        check_cancel(cancel)
        report(0.3 + 0.5 * index / max(1, len(others)), f"co-registering {label[sequence]} to {label[reference]}")
        registration = register_rigid(corrected[reference], corrected[sequence], name=label[sequence])
        if not registration.trusted:
            raise PreparationError(f"co-registration of {label[sequence]} to {label[reference]} failed its check "
                                   f"({registration.warning}); check that both series show the same head")
        registrations[sequence] = registration
        messages.append(f"co-registered {label[sequence]} to {label[reference]}: {registration.describe()}")
    timings["registration_s"] = time.perf_counter() - tick

    check_cancel(cancel)
    report(0.8, "brain extraction")
    tick = time.perf_counter()
    if brain_extraction == "hd-bet":
        mask = hd_bet_mask(corrected[reference], device=device, name=label[reference], cancel=cancel)
    else:
        mask = mask_on_grid(brain_mask, native[reference], "the brain mask")
    timings["brain_extraction_s"] = time.perf_counter() - tick
    messages.append(f"brain extraction: {'HD-BET' if brain_extraction == 'hd-bet' else 'the given brain mask'}")

    report(0.9, f"resampling into the model space ({spacing_mm:g} mm, axial)")
    tick = time.perf_counter()
    grid = model_space_grid(mask, spacing=spacing_mm)
    brain = into_grid(mask, grid, nearest=True)
    prepared = {}
    for sequence in native:
        check_cancel(cancel)
        registration = registrations.get(sequence)
        moved = into_grid(corrected[sequence], grid, None if registration is None else registration.transform)
        prepared[sequence] = sitk.Mask(sitk.Clamp(moved, lowerBound=0.0), brain, 0.0)  # BraTS: 0 outside the brain
    timings["resampling_s"] = time.perf_counter() - tick
    report(1.0, "study prepared")
    if not any(sitk.GetArrayViewFromImage(image).any() for image in prepared.values()):
        raise BrainExtractionError("the brain mask covers no signal of the study")
    return PreparedStudy(prepared, brain, reference, native, registrations,
                         brain_extraction, timings, messages)
