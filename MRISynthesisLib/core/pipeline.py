"""``synthesize()``: acquired volumes -> stage 1 (2D HF-GAN) -> stage 2 (3D Refiner) -> maps.

Front ends (CLI, Slicer) hand in ``{Sequence: SimpleITK.Image}`` and get a
:class:`SynthesisResult` whose images lie exactly on the grid of the reference input
(size, spacing, origin, direction). Each target is synthesised from the *acquired*
sequences only, never from another synthetic one.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import threading
import time
from typing import Iterable, Mapping, Optional, Union

import numpy as np
import SimpleITK as sitk

from . import maps
from .inference import Stage1Options, Stage2Options
from .input_checks import check_acquired, find_duplicate
from .io import InputError, check_image, resample_to, same_grid
from .model_grid_inputs import ModelGridInputs, brain_box, prepare_model_grid_inputs
from .ood_check import check_distribution
from .preprocessing import UnitRangeScaling, fit_unit_range, prior_intensity
from .progress import ProgressCallback, check_cancel, scaled
from .stages import completed_set, refine_on_model_grid, segment_whole_tumour, stage1_on_model_grid
from ..sequences import SEQUENCES, Sequence, by_sequence, parse_sequence

__all__ = ["synthesize", "parse_intensity", "SynthesisResult", "TargetResult", "TARGET_IMAGE_ROLES", "ModelGridVolumes",
           "SYNTHETIC_SCALE", "INTENSITY_CHOICES"]


#: Synthetic volumes are written in arbitrary units: the brain's 99.5th percentile is about this value.
SYNTHETIC_SCALE = 1000.0

#: What an intensity setting may be (the words of every refusal, in the CLI and the Python API alike).
INTENSITY_CHOICES = "'mean', '+Ksigma'/'-Ksigma' or a value in [0, 1]"


#: The image fields of a :class:`TargetResult`, in order (``synthetic`` always set, the others optional).
TARGET_IMAGE_ROLES = ("synthetic", "stage1", "refinement_map", "tumour_map", "tumour_mask", "error_map",
                      "uncertainty_map")


@dataclasses.dataclass
class TargetResult:
    """Everything produced for one target sequence, on the reference input's grid."""

    sequence: Sequence
    synthetic: sitk.Image
    stage1: sitk.Image
    refinement_map: Optional[sitk.Image] = None
    tumour_map: Optional[sitk.Image] = None
    tumour_mask: Optional[sitk.Image] = None
    error_map: Optional[sitk.Image] = None
    metrics: dict = dataclasses.field(default_factory=dict)
    stage1_metrics: dict = dataclasses.field(default_factory=dict)
    sources: list = dataclasses.field(default_factory=list)
    intensity: float = float("nan")
    tumour_region_source: str = ""
    #: Per-voxel spread of ``synthetic`` over test-time variations (:mod:`.uncertainty`), same units; None when off.
    uncertainty_map: Optional[sitk.Image] = None
    #: Mean uncertainty in the brain, the tumour region and the healthy rest, with the samples' settings.
    uncertainty: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelGridVolumes:
    """The prepared inputs and each target's stage-1 and final volume on the model grid (unit range).

    Kept only on request (evaluation segments them where they were made, without resampling).
    """

    prepared: "ModelGridInputs"
    stage1: dict
    final: dict


@dataclasses.dataclass
class SynthesisResult:
    """The targets, and how they were made (inputs, model, device, timings, log lines)."""

    targets: dict
    inputs: list
    model_name: str
    device: str
    timings: dict
    messages: list
    reference: Optional[Sequence] = None
    model_grid: Optional[ModelGridVolumes] = None
    #: With a prepared clinical study: the brain mask used, on the reference grid, and how it was prepared.
    brain_mask: Optional[sitk.Image] = None
    preparation: Optional[dict] = None
    #: The out-of-distribution check of the inputs against the bundle's training statistics
    #: (:meth:`~MRISynthesisLib.core.ood_check.DistributionCheck.to_json`); None when none was made.
    distribution_check: Optional[dict] = None


def _as_sequence_dict(images: Mapping) -> dict:
    """``{Sequence: image}`` from the caller's mapping, every image checked and none repeated."""
    if not isinstance(images, Mapping):
        raise TypeError(f"images must be a mapping {{sequence name: SimpleITK.Image}}, got {type(images).__name__}")
    out: dict = {}
    for key, image in images.items():
        sequence = parse_sequence(key)
        if sequence in out:
            raise InputError(f"two inputs for {sequence.display_name}")
        if not isinstance(image, sitk.Image):
            raise TypeError(f"{sequence.display_name} input: expected a SimpleITK image, got {type(image).__name__}")
        name = f"{sequence.display_name} input"
        check_image(image, name)
        check_acquired(image, name)
        out[sequence] = image
    duplicate = find_duplicate(out)
    if duplicate is not None:
        first, second = duplicate
        raise InputError(f"{second.display_name} input: holds exactly the voxels of the {first.display_name} "
                         "input (the same scan given twice?)")
    return out


def _check_call(targets, cancel, progress, device, ground_truth, label, bundle, tumour_maps=True,
                stage1_options=None, stage2_options=None, keep_model_grid=False) -> None:
    """Refuse argument types that would otherwise be misread, silently ignored or fail deep inside with a
    Python message (a string of targets is not a list of letters, the string 'no' is not False)."""
    if isinstance(targets, (str, bytes)) or (targets is not None and not isinstance(targets, Iterable)):
        raise TypeError(f"targets must be a list of sequence names such as ['t1c'], got {targets!r}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(f"cancel must be a threading.Event or None, got {type(cancel).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable progress(fraction, message) or None, got "
                        f"{type(progress).__name__}")
    if not isinstance(device, str) and type(device).__name__ != "device":
        raise TypeError(f"device must be a name such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if ground_truth is not None:
        if not isinstance(ground_truth, Mapping):
            raise TypeError(f"ground_truth must be a mapping {{sequence name: SimpleITK.Image}}, got "
                            f"{type(ground_truth).__name__}")
        for key, image in ground_truth.items():
            if not isinstance(image, sitk.Image):
                raise TypeError(f"ground_truth[{key!r}]: expected a SimpleITK image, got {type(image).__name__}")
    if label is not None:
        if not isinstance(label, sitk.Image):
            raise TypeError(f"label must be a SimpleITK label image or None, got {type(label).__name__}")
        if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"label must be a 3D label image, got a {label.GetDimension()}D image with "
                             f"{label.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    if bundle is not None and not isinstance(bundle, (str, os.PathLike)) and not hasattr(bundle, "stage1"):
        raise TypeError(f"bundle must be a ModelBundle, a catalogue name or a path, got {type(bundle).__name__}")
    for name, value in (("tumour_maps", tumour_maps), ("keep_model_grid", keep_model_grid)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__}")
    for name, value, expected in (("stage1_options", stage1_options, Stage1Options),
                                  ("stage2_options", stage2_options, Stage2Options)):
        if value is not None and not isinstance(value, expected):
            raise TypeError(f"{name} must be a {expected.__module__}.{expected.__qualname__} or None, got "
                            f"{type(value).__name__}")


def _check_metrics_protocol(protocol: str, ground_truth: Optional[Mapping]) -> None:
    """Refuse an unknown scoring protocol, and for ``brasyn`` with ground truth a torchmetrics that cannot be
    imported, both before the model is loaded."""
    from ..metrics.protocols import check_protocol

    check_protocol(protocol)
    if protocol == "brasyn" and ground_truth:
        from ..metrics.brasyn import load_torchmetrics

        load_torchmetrics()


def _check_ground_truth(ground_truth: Optional[Mapping], plan: dict) -> dict:
    """``{target: acquired image}``; an entry for a sequence that is not a target would be ignored, so it
    is refused."""
    return per_target(ground_truth or {}, plan, "ground_truth")


def per_target(mapping: Mapping, plan: dict, argument: str) -> dict:
    """``{target: value}`` from a caller's ``{sequence name: value}``; unknown names, a sequence given
    twice and a sequence that is not a target are refused naming ``argument`` (they would be ignored)."""
    out = by_sequence(mapping.items(),
                      unknown=lambda key, value, error: ValueError(f"{argument}[{key!r}]: {error}"),
                      repeated=lambda sequence, *_: ValueError(f"{argument} gives {sequence.display_name} twice"))
    for sequence in out:
        if sequence not in plan:
            raise ValueError(f"{argument} names {sequence.display_name}, which is not a target (targets: "
                             f"{', '.join(t.display_name for t in plan)})")
    return out


def parse_intensity(value, target: Optional[Sequence] = None, priors: Optional[Mapping] = None,
                    name: str = "intensity"):
    """One intensity setting: ``None``/``"mean"`` (the prior mean), ``"+1sigma"``-style strings (mean + k
    sigma; ``"σ"`` works too), or a value in [0, 1] (a number or its text).

    With ``target``, returns the intensity-encoding value for it (``priors``: the model's; default the
    paper's table). Without, checks the setting and returns it unchanged. Raises ``TypeError`` for
    anything but a string or a number and ``ValueError`` (:class:`InputError`) naming ``name`` for a
    setting outside these forms. The CLI's ``--intensity`` uses this very function.
    """
    k_sigma = None
    number = None
    if value is None:
        k_sigma = 0.0
    elif isinstance(value, str):
        text = value.strip().lower().replace("σ", "sigma")
        try:
            if text == "mean":
                k_sigma = 0.0
            elif text.endswith("sigma"):
                head = text[: -len("sigma")].strip()
                k_sigma = float(head + "1" if head in ("", "+", "-") else head)
                if not math.isfinite(k_sigma):
                    raise ValueError
            else:
                number = float(text)
                if not 0.0 <= number <= 1.0:
                    raise ValueError
        except ValueError:
            raise InputError(f"{name} {value!r}: expected {INTENSITY_CHOICES}") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
        if not 0.0 <= number <= 1.0:
            raise InputError(f"{name} {number:g} is outside [0, 1]: expected {INTENSITY_CHOICES}")
    else:
        raise TypeError(f"{name} must be {INTENSITY_CHOICES} (a string or a number), got {type(value).__name__}")
    if target is None:
        return value
    if number is not None:
        return number
    return prior_intensity(target, k_sigma, priors)


def _intensity_settings(intensity, plan: dict) -> dict:
    """``{target: setting}`` from one setting for all targets or a per-target mapping, every one checked."""
    if not isinstance(intensity, Mapping):
        if not isinstance(intensity, (str, numbers.Real)) and intensity is not None:
            raise TypeError(f"intensity must be {INTENSITY_CHOICES}, or a mapping {{target: setting}}, got "
                            f"{type(intensity).__name__}")
        parse_intensity(intensity)
        return {target: intensity for target in plan}
    settings = per_target(intensity, plan, "intensity")
    for sequence, value in settings.items():
        parse_intensity(value, name=f"intensity[{sequence.value!r}]")
    return {target: settings.get(target) for target in plan}


def _plan_targets(acquired: list, targets) -> dict:
    """``{target: sources}``; ``None`` means every missing sequence."""
    if targets is None:
        wanted = [s for s in SEQUENCES if s not in acquired]
        if not wanted:
            raise InputError("all four sequences are present: nothing is missing (use validation to compare)")
    else:
        parsed = {parse_sequence(t) for t in targets}
        wanted = [s for s in SEQUENCES if s in parsed]
        if not wanted:
            raise InputError("no target sequence given")
    plan = {}
    for target in wanted:
        sources = [s for s in acquired if s != target]
        if not sources:
            raise InputError(f"cannot synthesise {target.display_name}: no other acquired sequence")
        plan[target] = sources
    return plan


def synthesize(
    images: Mapping,
    bundle,
    targets=None,
    device: str = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    tumour_maps: bool = True,
    ground_truth: Optional[Mapping] = None,
    label: Optional[sitk.Image] = None,
    intensity: Union[str, float, Mapping, None] = None,
    stage1_options: Optional[Stage1Options] = None,
    stage2_options: Optional[Stage2Options] = None,
    keep_model_grid: bool = False,
    metrics_protocol: str = "brain",
    uncertainty: int = 0,
    uncertainty_seed: int = 0,
) -> SynthesisResult:
    """Synthesise ``targets`` (default: every missing sequence) from the acquired ``images``.

    ``bundle``: a :class:`~MRISynthesisLib.core.bundles.ModelBundle` or a name/path for
    :func:`~MRISynthesisLib.core.bundles.load_bundle`. ``intensity``: ``None``/``"mean"`` for the
    prior mean, ``"+1sigma"``-style strings for mean + k sigma, a number, or a per-target
    mapping (see :func:`parse_intensity`). ``ground_truth`` (acquired versions of targets, for
    validation) adds error maps and metrics; ``label`` (BraTS label map) then defines the tumour
    region for the metrics. An ``intensity`` or ``ground_truth`` entry for a sequence that is not a
    target is refused (an acquired input given again as itself excepted), as is any argument of the
    wrong type, all before the model is loaded.
    ``progress(fraction, message)`` is called often; setting ``cancel`` raises
    :class:`~MRISynthesisLib.core.progress.Cancelled` within about a second and returns nothing. ``keep_model_grid`` keeps the
    model-grid volumes in ``result.model_grid`` (memory; for evaluation). ``metrics_protocol`` (one of
    :data:`~MRISynthesisLib.metrics.protocols.PROTOCOLS`) chooses the metrics against ``ground_truth``:
    ``"brain"`` (this project's, over the brain) or ``"brasyn"`` (the BraSyn challenge's, whole volume,
    torchmetrics; its tumour region is the ``label`` only). ``uncertainty`` (0: off, else at least 2 samples)
    adds each target's ``uncertainty_map`` and ``uncertainty`` summary, seeded by ``uncertainty_seed``
    (see :mod:`.uncertainty`).
    """
    from .devices import MPS_FALLBACK_NOTE, resolve_device
    from .bundles import load_bundle
    from . import uncertainty as spread

    started = time.perf_counter()
    timings: dict = {}
    messages: list = []
    _check_call(targets, cancel, progress, device, ground_truth, label, bundle, tumour_maps, stage1_options,
                stage2_options, keep_model_grid)
    _check_metrics_protocol(metrics_protocol, ground_truth)
    samples = spread.check_samples(uncertainty)
    uncertainty_seed = spread.check_seed(uncertainty_seed)
    report = progress or (lambda fraction, message: None)
    source_images = _as_sequence_dict(images)
    plan = _plan_targets([s for s in SEQUENCES if s in source_images], targets)
    truths = _check_ground_truth(ground_truth, plan)
    settings = _intensity_settings(intensity, plan)
    torch_device = resolve_device(device)
    if torch_device.type == "mps":
        messages.append(MPS_FALLBACK_NOTE)
    check_cancel(cancel)
    report(0.0, "loading model")
    bundle = load_bundle(bundle)
    bundle.to(torch_device)
    report(0.02, "preparing inputs")
    prepared = prepare_model_grid_inputs(source_images, messages, bundle.stage1)
    distribution = check_distribution(source_images, prepared, getattr(bundle, "metadata", None))
    timings["prepare_s"] = time.perf_counter() - started
    check_cancel(cancel)

    n_targets = len(plan)
    results: dict = {}
    finals_unit: dict = {}
    stage1_unit: dict = {}
    spreads: dict = {}
    for index, (target, sources) in enumerate(plan.items()):
        low, end = 0.05 + 0.8 * index / n_targets, 0.05 + 0.8 * (index + 1) / n_targets
        high = low + (end - low) * (0.4 if samples else 1.0)  # the samples take the rest of the target's share
        value = parse_intensity(settings[target], target, getattr(bundle.stage1, "intensity_priors", None))
        if not getattr(bundle.stage1.config, "intensity_encoding", True):  # trained without: no code is fed
            note = "the model has no intensity encoding: the intensity setting is not used"
            if settings[target] not in (None, "mean") and note not in messages:
                messages.append(note)
            value = float("nan")
        tick = time.perf_counter()
        stage1 = stage1_on_model_grid(prepared, bundle, target, sources, value, torch_device, stage1_options,
                                      scaled(report, low, low + (high - low) * 0.5), cancel, messages)
        timings[f"stage1_{target.value}_s"] = time.perf_counter() - tick
        stage1_unit[target] = stage1
        final = stage1
        if bundle.refiner is not None:
            tick = time.perf_counter()
            final = refine_on_model_grid(prepared, bundle, target, sources, stage1, torch_device, stage2_options,
                                         scaled(report, low + (high - low) * 0.5, high), cancel, messages)
            timings[f"stage2_{target.value}_s"] = time.perf_counter() - tick
        finals_unit[target] = final
        results[target] = dict(sources=sources, intensity=value)
        if samples:
            tick = time.perf_counter()
            spreads[target] = spread.spread_on_model_grid(
                prepared, bundle, target, sources, value, final, torch_device, samples, uncertainty_seed,
                stage1_options, stage2_options, scaled(report, high, end), cancel, messages)
            timings[f"uncertainty_{target.value}_s"] = time.perf_counter() - tick

    check_cancel(cancel)
    report(0.86, "computing maps")
    tick = time.perf_counter()
    regions = _tumour_regions(prepared, bundle, finals_unit, stage1_unit, tumour_maps, torch_device, cancel)
    timings["maps_s"] = time.perf_counter() - tick
    report(0.93, "mapping results to the input grid")
    output: dict = {}
    for target, info in results.items():
        check_cancel(cancel)
        final_array = finals_unit[target] * SYNTHETIC_SCALE
        stage1_array = stage1_unit[target] * SYNTHETIC_SCALE
        result = TargetResult(
            sequence=target,
            synthetic=prepared.to_input_grid(final_array),
            stage1=prepared.to_input_grid(stage1_array),
            sources=list(info["sources"]),
            intensity=info["intensity"],
        )
        if bundle.refiner is not None:
            change = maps.refinement_map(final_array, stage1_array)
            result.refinement_map = prepared.to_input_grid(change)
            if tumour_maps and target in regions:
                region, how = regions[target]
                result.tumour_mask = _as_uint8(prepared.to_input_grid(region.astype(np.float32), nearest=True))
                result.tumour_map = prepared.to_input_grid(maps.tumour_region_map(change, region))
                result.tumour_region_source = how
        if target in spreads:
            _add_uncertainty(result, prepared, *spreads[target], uncertainty_seed)
        output[target] = result
    if truths:
        _add_validation(output, truths, prepared, label, messages, metrics_protocol)
    timings["total_s"] = time.perf_counter() - started
    report(1.0, "done")
    return SynthesisResult(
        targets=output, inputs=[s for s in SEQUENCES if s in source_images], model_name=bundle.name,
        device=str(torch_device), timings=timings, messages=messages,
        reference=next(iter(sorted(source_images, key=SEQUENCES.index))),
        model_grid=ModelGridVolumes(prepared, stage1_unit, finals_unit) if keep_model_grid else None,
        distribution_check=distribution.to_json(),
    )


def _tumour_regions(prepared: ModelGridInputs, bundle, finals: dict, stage1: dict, wanted: bool, device,
                    cancel) -> dict:
    """Per target: (tumour region on the model grid, how it was found)."""
    if not wanted or bundle.refiner is None:
        return {}
    brain = prepared.brain
    regions = {}
    if bundle.segmenter is not None:
        completed = completed_set(prepared, finals)
        box = brain_box(brain, margin=4)
        whole_tumour = np.zeros(brain.shape, dtype=bool)
        whole_tumour[box] = segment_whole_tumour(bundle.segmenter, completed[(slice(None),) + box], brain[box],
                                                 device)
        check_cancel(cancel)
        for target in finals:
            regions[target] = (whole_tumour, "segmenter (whole tumour) on the completed set")
        return regions
    for target in finals:
        change = finals[target] - stage1[target]
        regions[target] = (maps.fallback_tumour_region(change, brain),
                           f"strongest refinement (> {maps.FALLBACK_PERCENTILE:g}th percentile), no segmenter")
    return regions


def _add_uncertainty(result: TargetResult, prepared: ModelGridInputs, spread_unit: np.ndarray, plan, seed: int) -> None:
    """The uncertainty map on the input grid and its summary (tumour region: the tumour map's; ``samples``
    counts the synthesis itself and ``plan``'s samples)."""
    from .uncertainty import region_summary

    result.uncertainty_map = prepared.to_input_grid(spread_unit * SYNTHETIC_SCALE)
    tumour = None if result.tumour_mask is None else sitk.GetArrayViewFromImage(result.tumour_mask) > 0
    summary = region_summary(sitk.GetArrayViewFromImage(result.uncertainty_map), prepared.input_brain, tumour)
    result.uncertainty = {"samples": plan.count + 1, "seed": seed, "sources": list(plan.sources), **summary,
                          "tumour_region": result.tumour_region_source or None}


def _as_uint8(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(sitk.BinaryThreshold(image, 0.5, 1e9, 1, 0), sitk.sitkUInt8)


def _add_validation(output: dict, ground_truth: Mapping, prepared: ModelGridInputs, label: Optional[sitk.Image],
                    messages: list, protocol: str = "brain") -> None:
    """Error maps and metrics (``protocol``) against the acquired versions of the targets (leave-one-out).

    The brain protocol's tumour region is the label inside the brain, or without a label the region the
    pipeline found; BraSyn's is the label (> 0) only, so without one its tumour and healthy scores are NaN.
    """
    from ..metrics.protocols import protocol_metrics, protocol_provenance

    reference = prepared.reference
    brain = prepared.input_brain
    tumour = None
    labelled = None
    if label is not None:
        if not same_grid(label, reference):
            label = resample_to(label, reference, sitk.sitkNearestNeighbor)
        labelled = sitk.GetArrayFromImage(label) > 0
        tumour = labelled & brain
    if protocol != "brain":
        provenance = protocol_provenance(protocol)
        messages.append(f"metrics: {protocol} protocol (torchmetrics {provenance['torchmetrics_version']})")
    for sequence, acquired_image in ground_truth.items():
        if not same_grid(acquired_image, reference):
            acquired_image = resample_to(acquired_image, reference)
        result = output[sequence]
        acquired = sitk.GetArrayFromImage(acquired_image).astype(np.float32)
        scaling: UnitRangeScaling = fit_unit_range(acquired, brain)
        acquired_units = (scaling.forward(acquired) + 1.0) / 2.0 * SYNTHETIC_SCALE
        acquired_units[~brain] = 0.0
        synthetic = sitk.GetArrayFromImage(result.synthetic)
        error = maps.error_map(synthetic, acquired_units, brain)
        result.error_map = _like(error, reference)
        region = tumour
        if region is None and result.tumour_mask is not None:
            region = sitk.GetArrayFromImage(result.tumour_mask) > 0
        if protocol == "brasyn":
            region = labelled
        result.metrics = protocol_metrics(protocol, acquired, synthetic, brain, region)
        result.stage1_metrics = protocol_metrics(protocol, acquired, sitk.GetArrayFromImage(result.stage1), brain,
                                                 region)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    return image
