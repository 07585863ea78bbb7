"""The inputs on the model grid: aligned, masked and normalised the way stage 1 and the Refiner
expect, with the exact way back to the reference input's grid.

Shared by inference, training (the stage-2 cache) and evaluation, so all three see the very
same preparation.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import SimpleITK as sitk

from .io import InputError, align_inputs
from .preprocessing import ModelGrid, brain_mask, fit_unit_range

__all__ = ["MODEL_FIELD_OF_VIEW_MM", "MIN_BRAIN_COVERAGE", "check_brain_coverage", "ModelGridInputs", "model_grid_for", "prepare_model_grid_inputs", "brain_box"]


#: Stage 1 sees axial slices covering this field of view (BraTS: 240 voxels at 1 mm).
MODEL_FIELD_OF_VIEW_MM = 240.0


@dataclasses.dataclass
class ModelGridInputs:
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


def model_grid_for(generator) -> tuple:
    """(slice shape, in-plane spacing mm) of a generator: a 240 mm field of view at its image size.

    The paper's generator sees 240 x 240 slices at 1 mm; a generator built for 120 x 120
    slices (a CPU demo model) sees the same field of view at 2 mm.
    """
    size = int(generator.config.image_size)
    return (size, size), MODEL_FIELD_OF_VIEW_MM / size


#: Each input must show at least this share of the brain the inputs show together: a volume of a
#: few scattered voxels (or a thin slab) beside whole brains is not a scan of the same head.
MIN_BRAIN_COVERAGE = 0.25


def check_brain_coverage(arrays: dict, brain: np.ndarray) -> None:
    """Refuse an input whose non-zero voxels cover only a sliver of the brain the others show."""
    if len(arrays) < 2:
        return
    total = max(1, int(np.count_nonzero(brain)))
    for sequence, array in arrays.items():
        share = np.count_nonzero((np.asarray(array) != 0) & brain) / total
        if share < MIN_BRAIN_COVERAGE:
            raise InputError(f"{sequence.display_name} input: its non-zero voxels cover only {100 * share:.1f}% of "
                             "the brain the other inputs show (a different head, a thin slab or an empty volume?)")


def prepare_model_grid_inputs(images: dict, messages: list, generator) -> ModelGridInputs:
    """Align, mask and normalise inputs onto ``generator``'s model grid (shared with training).

    ``messages`` receives a line for every resampling. Raw model-grid arrays are kept for
    the stage-2 z-score; stage-1 arrays are scaled to [-1, 1] with background -1.
    """
    aligned = align_inputs(images)
    messages.extend(aligned.resampled)
    reference = aligned.images[aligned.reference]
    arrays = {s: sitk.GetArrayViewFromImage(img) for s, img in aligned.images.items()}
    brain_input = brain_mask(arrays.values())
    check_brain_coverage(arrays, brain_input)
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
    return ModelGridInputs(grid=grid, brain=brain, scaled=scaled_inputs, raw=raw, reference=reference,
                     input_brain=brain_input)


def _mask_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def brain_box(brain: np.ndarray, margin: int = 4) -> tuple:
    """Slices of the brain's bounding box grown by ``margin`` voxels (clipped to the array)."""
    from scipy import ndimage

    found = ndimage.find_objects(brain.astype(np.uint8))
    if not found:
        return tuple(slice(0, n) for n in brain.shape)
    return tuple(slice(max(0, b.start - margin), min(n, b.stop + margin)) for b, n in zip(found[0], brain.shape))
