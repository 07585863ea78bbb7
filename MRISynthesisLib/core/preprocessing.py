"""Brain mask, the method's two normalisations, intensity encoding, and the model grid.

Stage 1 (HF-GAN) sees each volume linearly scaled to [-1, 1] and 240 x 240 axial slices at
1 mm; stage 2 (Refiner) sees z-scored volumes. Every transform here has an exact inverse
so that results land on the input's own grid with the input's own geometry.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..sequences import INTENSITY_PRIORS, Sequence  # the priors are facts about the sequences


#: Stage-1 model grid: axial slices of this many voxels at this in-plane spacing.
MODEL_SLICE_SHAPE: tuple[int, int] = (240, 240)
MODEL_AXIAL_SPACING_MM = 1.0

#: Percentile of brain voxels mapped to +1 by the stage-1 scaling (robust to bright outliers).
UPPER_PERCENTILE = 99.5


# --------------------------------------------------------------------------- brain mask


def brain_mask(volumes: Iterable[np.ndarray], min_component_fraction: float = 0.01) -> np.ndarray:
    """Brain region: union of non-zero voxels of the (skull-stripped) inputs, cleaned.

    Holes are filled slice by slice and in 3D (dark necrosis or CSF can be exactly 0 after
    skull stripping), and connected components smaller than ``min_component_fraction`` of the
    largest are dropped (isolated noise voxels).
    """
    union: np.ndarray | None = None
    for volume in volumes:
        nonzero = np.asarray(volume) != 0
        union = nonzero if union is None else (union | nonzero)
    if union is None:
        raise ValueError("brain_mask needs at least one volume")
    labels, count = ndimage.label(union)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_component_fraction * sizes.max()) + 1
        union = np.isin(labels, keep)
    union = ndimage.binary_fill_holes(union)
    for index in range(union.shape[0]):  # axial holes that touch no other slice
        union[index] = ndimage.binary_fill_holes(union[index])
    return union


# --------------------------------------------------------------------------- stage 1 scaling


@dataclasses.dataclass(frozen=True)
class UnitRangeScaling:
    """Linear map of a volume to [-1, 1]: 0 -> -1 and the robust maximum ``high`` -> +1."""

    high: float

    def forward(self, volume: np.ndarray) -> np.ndarray:
        """Scale to [-1, 1] (values above ``high`` clip to 1, negatives to -1)."""
        unit = np.clip(np.asarray(volume, dtype=np.float32) / np.float32(self.high), 0.0, 1.0)
        return unit * 2.0 - 1.0

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Back to the input's intensity units: -1 -> 0, +1 -> ``high``."""
        return (np.asarray(scaled, dtype=np.float32) + 1.0) * np.float32(self.high / 2.0)


def fit_unit_range(volume: np.ndarray, mask: np.ndarray | None = None,
                   percentile: float = UPPER_PERCENTILE) -> UnitRangeScaling:
    """Fit the stage-1 scaling on brain voxels: ``high`` is their ``percentile``-th value.

    Zero stays the floor because skull-stripped MR magnitudes are non-negative and the
    background must map to -1 (the value the generator uses for "nothing here").
    """
    values = np.asarray(volume)[mask] if mask is not None else np.asarray(volume)
    values = values[values > 0]
    if values.size == 0:
        raise ValueError("cannot scale a volume with no positive voxel in the brain")
    high = float(np.percentile(values, percentile))
    if high <= 0:
        high = float(values.max())
    return UnitRangeScaling(high=high)


def intensity_encoding_value(scaled: np.ndarray, mask: np.ndarray) -> float:
    """The intensity-encoding value: median brain intensity on the [0, 1] scale.

    ``scaled`` is the stage-1 [-1, 1] volume; training conditions on this value of the true
    target, inference on the prior mean (:data:`INTENSITY_PRIORS`).
    """
    values = (np.asarray(scaled)[mask] + 1.0) / 2.0
    if values.size == 0:
        raise ValueError("intensity encoding needs a non-empty brain mask")
    return float(np.median(values))


def prior_intensity(sequence: Sequence, k_sigma: float = 0.0,
                    priors: Mapping[Sequence, tuple[float, float]] | None = None) -> float:
    """Inference intensity: prior mean of ``sequence`` plus ``k_sigma`` standard deviations.

    ``priors`` are the model's own (measured on its training data, stored in its checkpoint);
    the default is the paper's BraTS table.
    """
    mean, std = (priors or INTENSITY_PRIORS)[sequence]
    return float(np.clip(mean + k_sigma * std, 0.0, 1.0))


def estimate_intensity_priors(values: Iterable[Mapping[Sequence, float]]) -> dict[Sequence, tuple[float, float]]:
    """Normal prior (mean, std) of each sequence's intensity-encoding value over training cases.

    The paper precomputes this distribution on its training set; a model trained on other
    data (another cohort, the phantoms) must carry its own, or inference conditions it on
    an intensity level it never saw.
    """
    collected: dict[Sequence, list[float]] = {}
    for case in values:
        for sequence, value in case.items():
            collected.setdefault(sequence, []).append(float(value))
    priors = dict(INTENSITY_PRIORS)
    for sequence, samples in collected.items():
        priors[sequence] = (float(np.mean(samples)), float(np.std(samples)))
    return priors


# --------------------------------------------------------------------------- stage 2 z-score


@dataclasses.dataclass(frozen=True)
class ZScore:
    """Z-score over non-zero (brain) voxels; background stays 0 both ways."""

    mean: float
    std: float

    def forward(self, volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` inside ``mask``, 0 outside."""
        out = np.zeros(np.shape(volume), dtype=np.float32)
        out[mask] = (np.asarray(volume, dtype=np.float32)[mask] - self.mean) / self.std
        return out

    def inverse(self, normalised: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``x * std + mean`` inside ``mask``, 0 outside."""
        out = np.zeros(np.shape(normalised), dtype=np.float32)
        out[mask] = np.asarray(normalised, dtype=np.float32)[mask] * self.std + self.mean
        return out


def fit_zscore(volume: np.ndarray, mask: np.ndarray | None = None) -> ZScore:
    """Mean and standard deviation of the non-zero voxels (inside ``mask`` when given)."""
    volume = np.asarray(volume, dtype=np.float64)
    selection = volume != 0 if mask is None else (np.asarray(mask) & (volume != 0))
    values = volume[selection]
    if values.size < 2:
        raise ValueError("cannot z-score a volume with fewer than 2 non-zero voxels")
    std = float(values.std())
    return ZScore(mean=float(values.mean()), std=std if std > 0 else 1.0)


# --------------------------------------------------------------------------- model grid


@dataclasses.dataclass(frozen=True)
class CropPad:
    """Per-axis (before, after) crop (negative) or pad (positive) amounts; exact to undo."""

    amounts: tuple[tuple[int, int], ...]

    def apply(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Pad with ``fill`` and/or crop, axis by axis."""
        pad = [(max(b, 0), max(a, 0)) for b, a in self.amounts]
        padded = np.pad(array, pad, mode="constant", constant_values=fill) if any(map(any, pad)) else array
        slices = tuple(
            slice(max(-b, 0), padded.shape[i] - max(-a, 0)) for i, (b, a) in enumerate(self.amounts)
        )
        return padded[slices]

    def undo(self, array: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """The inverse: what was padded is removed, what was cropped comes back as ``fill``."""
        return CropPad(tuple((-b, -a) for b, a in self.amounts)).apply(array, fill)


def plan_crop_pad(shape: tuple[int, ...], target: tuple[int, ...],
                  mask: np.ndarray | None = None) -> CropPad:
    """Crop/pad ``shape`` to ``target`` on the trailing axes, centred on the brain's bounding box.

    Leading axes (slices) are left alone. Cropping never cuts brain voxels while the brain
    fits in ``target``; a brain that does not fit raises a ValueError.
    """
    lead = len(shape) - len(target)
    amounts: list[tuple[int, int]] = [(0, 0)] * lead
    boxes = ndimage.find_objects(mask.astype(np.uint8)) if mask is not None and mask.any() else None
    for axis, wanted in enumerate(target, start=lead):
        size = shape[axis]
        low, high = (boxes[0][axis].start, boxes[0][axis].stop) if boxes else (0, size)
        if high - low > wanted:
            raise ValueError(
                f"brain extent {high - low} voxels along axis {axis} exceeds the model grid of {wanted}"
            )
        centred = int(round((low + high) / 2.0 - wanted / 2.0))  # first kept input index
        if size >= wanted:  # crop: stay inside the array and keep the whole brain
            start = min(max(centred, max(0, high - wanted)), min(size - wanted, low))
        else:  # pad: the whole array fits, place it around the centre
            start = min(max(centred, size - wanted), 0)
        amounts.append((-start, start + wanted - size))
    return CropPad(tuple(amounts))


@dataclasses.dataclass
class ModelGrid:
    """Maps an input grid to the stage-1 model grid (LPS-oriented, 1 mm axial, 240 x 240) and back.

    The mapping is: reorient to LPS by axis permutation/flip (exact), resample in-plane to
    1 mm only when the spacing differs (cubic B-spline within the source's range; nearest neighbour
    for labels and masks), then crop/pad each axial slice to 240 x 240
    around the brain. ``to_model`` gives ``[slices, 240, 240]`` arrays; ``from_model`` undoes
    every step and returns images with exactly the input's geometry.
    """

    reference: sitk.Image
    oriented: sitk.Image
    resampled: sitk.Image | None
    crop_pad: CropPad

    @classmethod
    def plan(cls, reference: sitk.Image, brain: np.ndarray | None = None,
             slice_shape: tuple[int, int] = MODEL_SLICE_SHAPE,
             axial_spacing: float = MODEL_AXIAL_SPACING_MM) -> "ModelGrid":
        """Plan the mapping for images on ``reference``'s grid (``brain`` in its array layout)."""
        oriented = _orient_lps(_information_only(reference))
        spacing = oriented.GetSpacing()
        resampled = None
        if not np.allclose(spacing[:2], (axial_spacing, axial_spacing), atol=1e-3):
            size = [
                max(1, int(round(oriented.GetSize()[i] * spacing[i] / axial_spacing))) for i in range(2)
            ] + [oriented.GetSize()[2]]
            resampled = sitk.Image(size, sitk.sitkUInt8)
            resampled.SetDirection(oriented.GetDirection())
            resampled.SetSpacing((axial_spacing, axial_spacing, spacing[2]))
            # Keep the physical centre of the first voxel's slab aligned with the input's field of view.
            origin_index = [(-0.5 + 0.5 * axial_spacing / spacing[i]) for i in range(2)] + [0.0]
            resampled.SetOrigin(oriented.TransformContinuousIndexToPhysicalPoint(origin_index))
        grid = cls(reference=reference, oriented=oriented, resampled=resampled, crop_pad=CropPad(()))
        model_brain = None
        if brain is not None:
            model_brain = grid._to_model_space(_array_like(reference, brain.astype(np.uint8)), True) > 0
        shape = sitk.GetArrayViewFromImage(resampled or oriented).shape
        grid.crop_pad = plan_crop_pad(shape, slice_shape, model_brain)
        return grid

    def _to_model_space(self, image: sitk.Image, nearest: bool = False) -> np.ndarray:
        oriented = _orient_lps(image)
        if self.resampled is None:
            return sitk.GetArrayFromImage(oriented)
        return _resample_onto(oriented, self.resampled, 0.0, nearest)

    def to_model(self, image: sitk.Image, fill: float = 0.0, nearest: bool = False) -> np.ndarray:
        """Input-grid image -> ``[slices, 240, 240]`` float32 array on the model grid."""
        array = self._to_model_space(image, nearest).astype(np.float32, copy=False)
        return self.crop_pad.apply(array, fill)

    def from_model(self, array: np.ndarray, fill: float = 0.0, nearest: bool = False) -> sitk.Image:
        """Model-grid array -> image with exactly the reference's size, spacing, origin and direction."""
        uncropped = self.crop_pad.undo(np.asarray(array, dtype=np.float32), fill)
        space = self.resampled or self.oriented
        image = sitk.GetImageFromArray(uncropped)
        image.CopyInformation(space)
        if self.resampled is not None:
            image = _array_like(self.oriented, _resample_onto(image, self.oriented, fill, nearest))
        original = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.reference.GetDirection())
        image = sitk.DICOMOrient(image, original)
        # DICOMOrient may differ by rounding in the last digit; the reference's geometry is the truth.
        image.CopyInformation(self.reference)
        return image

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (x, y, z) in mm on the model grid."""
        return tuple((self.resampled or self.oriented).GetSpacing())  # type: ignore[return-value]


#: In-plane resampling between a case's grid and the model grid. Cubic B-spline, not linear: a case on a
#: coarser grid than the model's goes there and back, and linear interpolation blurs it both ways. On the
#: classic 2.5 mm held-out phantoms a 1.5 mm model's brain SSIM rose with it by up to 0.024 per sequence
#: (T2 0.758 -> 0.782, FLAIR 0.761 -> 0.776, T1c unchanged; scripts/train_randomised_model.py has the runs),
#: while smoothing before downsampling (anti-aliasing) lowered it.
IMAGE_INTERPOLATOR = sitk.sitkBSpline


def _resample_onto(image: sitk.Image, reference: sitk.Image, fill: float, nearest: bool) -> np.ndarray:
    """``image`` resampled onto ``reference``'s grid as an array ``[z, y, x]``: labels and masks (``nearest``)
    by nearest neighbour in their own pixel type; images with :data:`IMAGE_INTERPOLATOR` as float32, clipped to
    the range of ``image`` and ``fill``: a cubic spline overshoots at sharp edges (the brain's border against a
    zero background), and a negative intensity or a probability above 1 would be invented."""
    if nearest:
        return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                    float(fill), image.GetPixelID()))
    source = sitk.Cast(image, sitk.sitkFloat32)
    resampled = sitk.GetArrayFromImage(sitk.Resample(source, reference, sitk.Transform(), IMAGE_INTERPOLATOR,
                                                     float(fill), sitk.sitkFloat32))
    values = sitk.GetArrayViewFromImage(source)
    low, high = min(float(np.nanmin(values)), float(fill)), max(float(np.nanmax(values)), float(fill))
    return np.clip(resampled, low, high, out=resampled)


def _orient_lps(image: sitk.Image) -> sitk.Image:
    """Permute/flip axes so that array axes run L, P, S (BraTS layout); no interpolation."""
    return sitk.DICOMOrient(image, "LPS")


def _information_only(image: sitk.Image) -> sitk.Image:
    """A tiny-pixel image with the same grid (so planning does not copy the voxels)."""
    blank = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    blank.CopyInformation(image)
    return blank


def _array_like(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    """Wrap an array in ``reference``'s geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def image_array(image: sitk.Image) -> np.ndarray:
    """Voxels as float32 ``[z, y, x]`` (a copy: callers may modify it without touching the image)."""
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False)


def stage1_inputs(images: Mapping[Sequence, sitk.Image], grid: ModelGrid,
                  mask: np.ndarray) -> tuple[dict[Sequence, np.ndarray], dict[Sequence, UnitRangeScaling]]:
    """Scale each input to [-1, 1] on the model grid; ``mask`` is the brain on the model grid."""
    scaled: dict[Sequence, np.ndarray] = {}
    scalings: dict[Sequence, UnitRangeScaling] = {}
    for sequence, image in images.items():
        model = grid.to_model(image)
        scaling = fit_unit_range(model, mask)
        scaled[sequence] = scaling.forward(model)
        scalings[sequence] = scaling
    return scaled, scalings
