"""Each stage on the model grid: stage 1 (HF-GAN) and the Refiner on prepared inputs, the
segmenter on the completed set, and the check that a network's output is an image at all."""
from __future__ import annotations

import numpy as np

from .inference import RunHooks, run_refiner, run_stage1
from .model_grid_inputs import ModelGridInputs, brain_box
from .preprocessing import fit_zscore
from ..sequences import SEQUENCES, Sequence

__all__ = ["ModelOutputError", "check_network_output", "stage1_on_model_grid", "refine_on_model_grid",
           "completed_set", "segment_whole_tumour", "segmenter_roi"]


class ModelOutputError(RuntimeError):
    """The networks produced something that is not an image (NaN, Inf, or nothing in the brain)."""


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


def _generator_channels(prepared: ModelGridInputs, generator, sources: list) -> tuple:
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


def stage1_on_model_grid(prepared: ModelGridInputs, bundle, target: Sequence, sources: list, intensity: float,
                         device, options, progress, cancel, messages: list) -> np.ndarray:
    """Stage 1 of ``target`` from ``sources`` on the model grid, in unit-range intensities (brain only).

    Public so that training (the stage-2 cache) and evaluation run exactly the inference code.
    A generator built without intensity encoding gets no intensity code (``intensity`` is unused).
    """
    generator = bundle.stage1
    channels, available = _generator_channels(prepared, generator, sources)
    brain_slices = prepared.brain.reshape(prepared.brain.shape[0], -1).any(axis=1)
    code = intensity if getattr(generator.config, "intensity_encoding", True) else None
    stage1 = run_stage1(generator, channels, available, generator.modality_order.index(target), code,
                        brain_slices, device, options, RunHooks(progress, cancel, messages.append))
    unit = _unit_from_stage1(stage1, prepared.brain)
    check_network_output(stage1, unit, prepared.brain, target, "stage 1")
    return unit


def refine_on_model_grid(prepared: ModelGridInputs, bundle, target: Sequence, sources: list, stage1: np.ndarray,
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
                               RunHooks(progress, cancel, messages.append))
    final = np.clip(zscore.inverse(refined, brain), 0.0, None)
    check_network_output(refined, final, brain, target, "the refiner")
    return final


def completed_set(prepared: ModelGridInputs, finals: dict) -> np.ndarray:
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
