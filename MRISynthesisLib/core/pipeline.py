"""``synthesize()``: acquired volumes -> stage 1 (2D HF-GAN) -> stage 2 (3D Refiner) -> maps.

Front ends (CLI, Slicer) hand in ``{Sequence: SimpleITK.Image}`` and get a
:class:`SynthesisResult` whose images lie exactly on the grid of the reference input
(size, spacing, origin, direction). Each target is synthesised from the *acquired*
sequences only, never from another synthetic one.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Iterable, Mapping, Optional, Union

import numpy as np
import SimpleITK as sitk

from . import maps
from .inference import Stage1Options, Stage2Options, run_refiner, run_stage1
from .input_checks import check_acquired, find_duplicate
from .io import InputError, align_inputs, check_image, resample_to, same_grid
from .preprocessing import (
    ModelGrid,
    UnitRangeScaling,
    brain_mask,
    fit_unit_range,
    fit_zscore,
    prior_intensity,
)
from .progress import ProgressCallback, check_cancel, scaled
from ..sequences import SEQUENCES, Sequence, parse_sequence

__all__ = ["synthesize", "SynthesisResult", "TargetResult", "ModelOutputError", "SYNTHETIC_SCALE"]

#: Stage 1 sees axial slices covering this field of view (BraTS: 240 voxels at 1 mm).
MODEL_FIELD_OF_VIEW_MM = 240.0

#: Synthetic volumes are written in arbitrary units: the brain's 99.5th percentile is about this value.
SYNTHETIC_SCALE = 1000.0


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


@dataclasses.dataclass
class ModelGridVolumes:
    """The prepared inputs and each target's stage-1 and final volume on the model grid (unit range).

    Kept only on request (evaluation segments them where they were made, without resampling).
    """

    prepared: "PreparedInputs"
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


@dataclasses.dataclass
class PreparedInputs:
    """Inputs on the model grid: [-1, 1] stage-1 arrays, raw arrays for z-scoring, the brain.

    Arrays are ``[slices, H, W]``; ``brain`` is on the model grid, ``input_brain`` on the
    reference input's grid.
    """

    grid: ModelGrid
    brain: np.ndarray
    scaled: dict
    raw: dict
    reference: sitk.Image
    input_brain: np.ndarray

    def to_input_grid(self, array: np.ndarray, nearest: bool = False) -> sitk.Image:
        """Model-grid array -> image on the reference input grid, exactly 0 outside the brain.

        Interpolating back from a resampled model grid would smear values into the
        background; masking with the input-grid brain keeps the background at 0.
        """
        image = self.grid.from_model(array, nearest=nearest)
        voxels = sitk.GetArrayFromImage(image)
        voxels[~self.input_brain] = 0
        out = sitk.GetImageFromArray(voxels)
        out.CopyInformation(image)
        return out


class ModelOutputError(RuntimeError):
    """The networks produced something that is not an image (NaN, Inf, or nothing in the brain)."""


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


def _check_call(targets, cancel, progress, device, ground_truth, label, bundle) -> None:
    """Refuse argument types that would otherwise be misread or fail deep inside with a Python message
    (a string of targets is not a list of letters)."""
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
    if label is not None and not isinstance(label, sitk.Image):
        raise TypeError(f"label must be a SimpleITK label image or None, got {type(label).__name__}")
    if bundle is not None and not isinstance(bundle, (str, os.PathLike)) and not hasattr(bundle, "stage1"):
        raise TypeError(f"bundle must be a ModelBundle, a catalogue name or a path, got {type(bundle).__name__}")


def check_network_output(raw: np.ndarray, unit: np.ndarray, brain: np.ndarray, target: Sequence,
                         stage: str) -> None:
    """Stop the run when a network's output is not an image: NaN/Inf in its ``raw`` output, or a
    ``unit``-range result that is 0 in the whole brain.

    Broken weights (or inputs far outside the training range) otherwise give blank volumes
    that are written and labelled SYNTHETIC as if all were well.
    """
    bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
    if bad:
        raise ModelOutputError(f"{stage} produced {bad} NaN or Inf voxels for {target.short_name}: the model's "
                               "weights or the inputs are broken; nothing was written")
    if brain.any() and not np.any(unit[brain] > 0):
        raise ModelOutputError(f"{stage} produced an empty {target.short_name} (every brain voxel 0): the "
                               "model's weights or the inputs are broken; nothing was written")


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


def model_grid_for(generator) -> tuple:
    """(slice shape, in-plane spacing mm) of a generator: a 240 mm field of view at its image size.

    The paper's generator sees 240 x 240 slices at 1 mm; a generator built for 120 x 120
    slices (a CPU demo model) sees the same field of view at 2 mm.
    """
    size = int(generator.config.image_size)
    return (size, size), MODEL_FIELD_OF_VIEW_MM / size


def prepare_inputs(images: dict, messages: list, generator) -> PreparedInputs:
    """Align, mask and normalise inputs onto ``generator``'s model grid (shared with training).

    ``messages`` receives a line for every resampling. Raw model-grid arrays are kept for
    the stage-2 z-score; stage-1 arrays are scaled to [-1, 1] with background -1.
    """
    aligned = align_inputs(images)
    messages.extend(aligned.resampled)
    reference = aligned.images[aligned.reference]
    arrays = {s: sitk.GetArrayViewFromImage(img) for s, img in aligned.images.items()}
    brain_input = brain_mask(arrays.values())
    slice_shape, axial_spacing = model_grid_for(generator)
    grid = ModelGrid.plan(reference, brain_input, slice_shape, axial_spacing)
    if grid.resampled is not None:
        spacing = ", ".join(f"{v:g}" for v in reference.GetSpacing())
        messages.append(f"inputs resampled in-plane from ({spacing}) mm to the model's {axial_spacing:g} mm grid")
    brain = grid.to_model(_mask_image(brain_input, reference), nearest=True) > 0.5
    scaled_inputs, raw = {}, {}
    for sequence, image in aligned.images.items():
        model_array = grid.to_model(image)
        model_array[~brain] = 0.0
        raw[sequence] = model_array
        try:
            scaling = fit_unit_range(model_array, brain)
        except ValueError as error:
            raise InputError(f"{sequence.display_name} input: {error}") from None
        scaled_inputs[sequence] = scaling.forward(model_array)
    return PreparedInputs(grid=grid, brain=brain, scaled=scaled_inputs, raw=raw, reference=reference,
                     input_brain=brain_input)


def _mask_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def _generator_channels(prepared: PreparedInputs, generator, sources: list) -> tuple:
    """[Z, 4, H, W] in the generator's channel order (missing channels -1) and the available indices."""
    order = list(generator.modality_order)
    depth, height, width = prepared.brain.shape
    channels = np.full((depth, 4, height, width), -1.0, dtype=np.float32)
    for sequence in sources:
        channels[:, order.index(sequence)] = prepared.scaled[sequence]
    return channels, sorted(order.index(s) for s in sources)


def _unit_from_stage1(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Stage-1 output in [-1, 1] -> [0, 1] inside the brain, exactly 0 outside."""
    return np.where(brain, np.clip((volume + 1.0) / 2.0, 0.0, 1.0), 0.0).astype(np.float32)


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
) -> SynthesisResult:
    """Synthesise ``targets`` (default: every missing sequence) from the acquired ``images``.

    ``bundle``: a :class:`~MRISynthesisLib.core.weights.ModelBundle` or a name/path for
    :func:`~MRISynthesisLib.core.weights.load_bundle`. ``intensity``: ``None``/``"mean"`` for the
    prior mean, ``"+1sigma"``-style strings for mean + k sigma, a number, or a per-target
    mapping. ``ground_truth`` (acquired versions of targets, for validation) adds error maps
    and metrics; ``label`` (BraTS label map) then defines the tumour region for the metrics.
    ``progress(fraction, message)`` is called often; setting ``cancel`` raises
    :class:`~MRISynthesisLib.core.progress.Cancelled` within about a second and returns nothing. ``keep_model_grid`` keeps the
    model-grid volumes in ``result.model_grid`` (memory; for evaluation).
    """
    from .devices import resolve_device
    from .weights import load_bundle

    started = time.perf_counter()
    timings: dict = {}
    messages: list = []
    _check_call(targets, cancel, progress, device, ground_truth, label, bundle)
    report = progress or (lambda fraction, message: None)
    source_images = _as_sequence_dict(images)
    plan = _plan_targets([s for s in SEQUENCES if s in source_images], targets)
    torch_device = resolve_device(device)
    check_cancel(cancel)
    report(0.0, "loading model")
    bundle = load_bundle(bundle)
    bundle.to(torch_device)
    report(0.02, "preparing inputs")
    prepared = prepare_inputs(source_images, messages, bundle.stage1)
    timings["prepare_s"] = time.perf_counter() - started
    check_cancel(cancel)

    n_targets = len(plan)
    results: dict = {}
    finals_unit: dict = {}
    stage1_unit: dict = {}
    for index, (target, sources) in enumerate(plan.items()):
        low, high = 0.05 + 0.8 * index / n_targets, 0.05 + 0.8 * (index + 1) / n_targets
        value = _target_intensity(intensity, target, getattr(bundle.stage1, "intensity_priors", None))
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
        output[target] = result
    if ground_truth:
        _add_validation(output, ground_truth, prepared, label, messages)
    timings["total_s"] = time.perf_counter() - started
    report(1.0, "done")
    return SynthesisResult(
        targets=output, inputs=[s for s in SEQUENCES if s in source_images], model_name=bundle.name,
        device=str(torch_device), timings=timings, messages=messages,
        reference=next(iter(sorted(source_images, key=SEQUENCES.index))),
        model_grid=ModelGridVolumes(prepared, stage1_unit, finals_unit) if keep_model_grid else None,
    )


def _target_intensity(intensity, target: Sequence, priors=None) -> float:
    """The intensity-encoding value for ``target`` (the model's prior mean unless asked otherwise)."""
    if isinstance(intensity, Mapping):
        intensity = intensity.get(target, intensity.get(target.value))
    if intensity is None or intensity == "mean":
        return prior_intensity(target, priors=priors)
    if isinstance(intensity, str):
        text = intensity.strip().lower().replace("σ", "sigma")
        if text.endswith("sigma"):
            return prior_intensity(target, float(text[: -len("sigma")] or 1.0), priors)
        intensity = float(text)
    value = float(intensity)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"intensity {value:g} for {target.display_name} is outside [0, 1]")
    return value


def stage1_on_model_grid(prepared: PreparedInputs, bundle, target: Sequence, sources: list, intensity: float,
                         device, options, progress, cancel, messages: list) -> np.ndarray:
    """Stage 1 of ``target`` from ``sources`` on the model grid, in unit-range intensities (brain only).

    Public so that training (the stage-2 cache) and evaluation run exactly the inference code.
    """
    generator = bundle.stage1
    channels, available = _generator_channels(prepared, generator, sources)
    brain_slices = prepared.brain.reshape(prepared.brain.shape[0], -1).any(axis=1)
    stage1 = run_stage1(generator, channels, available, generator.modality_order.index(target), intensity,
                        brain_slices, device, options, progress, cancel, messages.append)
    unit = _unit_from_stage1(stage1, prepared.brain)
    check_network_output(stage1, unit, prepared.brain, target, "stage 1")
    return unit


def refine_on_model_grid(prepared: PreparedInputs, bundle, target: Sequence, sources: list, stage1: np.ndarray,
                         device, options, progress, cancel, messages: list) -> np.ndarray:
    """The Refiner on a stage-1 volume (model grid): z-scored in, refined around the brain, scaled back."""
    brain = prepared.brain
    inputs = np.zeros((4,) + brain.shape, dtype=np.float32)
    for sequence in sources:
        inputs[SEQUENCES.index(sequence)] = fit_zscore(prepared.raw[sequence], brain).forward(
            prepared.raw[sequence], brain)
    zscore = fit_zscore(stage1, brain)
    normalised = zscore.forward(stage1, brain)
    box = brain_box(brain, margin=4)  # refine only around the brain: the model grid is mostly background
    refined = normalised.copy()
    refined[box] = run_refiner(bundle.refiner, normalised[box], inputs[(slice(None),) + box],
                               SEQUENCES.index(target), [SEQUENCES.index(s) for s in sources], device, options,
                               progress, cancel, messages.append)
    final = np.clip(zscore.inverse(refined, brain), 0.0, None)
    check_network_output(refined, final, brain, target, "the refiner")
    return final


def brain_box(brain: np.ndarray, margin: int = 4) -> tuple:
    """Slices of the brain's bounding box grown by ``margin`` voxels (clipped to the array)."""
    from scipy import ndimage

    found = ndimage.find_objects(brain.astype(np.uint8))
    if not found:
        return tuple(slice(0, n) for n in brain.shape)
    return tuple(slice(max(0, b.start - margin), min(n, b.stop + margin)) for b, n in zip(found[0], brain.shape))


def _tumour_regions(prepared: PreparedInputs, bundle, finals: dict, stage1: dict, wanted: bool, device,
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


def completed_set(prepared: PreparedInputs, finals: dict) -> np.ndarray:
    """[4, Z, H, W] z-scored: acquired volumes where present, synthetic ones for the targets."""
    brain = prepared.brain
    volumes = np.zeros((4,) + brain.shape, dtype=np.float32)
    for index, sequence in enumerate(SEQUENCES):
        if sequence in finals:
            source = finals[sequence]
        elif sequence in prepared.raw:
            source = prepared.raw[sequence]
        else:  # cannot happen for "synthesise missing", but keep the segmenter input well defined
            continue
        volumes[index] = fit_zscore(source, brain).forward(source, brain)
    return volumes


def segment_whole_tumour(segmenter, volumes: np.ndarray, brain: np.ndarray, device) -> np.ndarray:
    """Whole-tumour mask (WT > 0.5) from the segmenter on z-scored [4, Z, H, W] volumes."""
    import torch

    from ..models.segmenter import predict_region_probabilities

    probabilities = predict_region_probabilities(
        segmenter, torch.from_numpy(volumes)[None], roi_size=segmenter_roi(volumes.shape[1:]),
        device=device, output_device="cpu")
    return (probabilities[0, 0].numpy() > 0.5) & brain


def segmenter_roi(shape: tuple) -> tuple:
    """Sliding-window size of the segmenter for a volume: its size rounded up to 8, at most 128."""
    return tuple(min(128, ((s + 7) // 8) * 8) for s in shape)


def _as_uint8(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(sitk.BinaryThreshold(image, 0.5, 1e9, 1, 0), sitk.sitkUInt8)


def _add_validation(output: dict, ground_truth: Mapping, prepared: PreparedInputs, label: Optional[sitk.Image],
                    messages: list) -> None:
    """Error maps and metrics against the acquired versions of the targets (leave-one-out)."""
    from .. import metrics

    reference = prepared.reference
    brain = prepared.input_brain
    tumour = None
    if label is not None:
        if not same_grid(label, reference):
            label = resample_to(label, reference, sitk.sitkNearestNeighbor)
        tumour = (sitk.GetArrayFromImage(label) > 0) & brain
    for key, acquired_image in ground_truth.items():
        sequence = parse_sequence(key)
        if sequence not in output:
            continue
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
        result.metrics = metrics.image_metrics(acquired, synthetic, brain, region)
        result.stage1_metrics = metrics.image_metrics(acquired, sitk.GetArrayFromImage(result.stage1), brain,
                                                      region)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    return image
