"""Stage-1 training slices: axial slices with enough brain, drawn epoch by epoch into batches with
a target and a random missing-sequence pattern.

A slice is used when it holds at least 2000 mm^2 of brain (2000 pixels at 1 mm); each item of a
batch has a target and one to three inputs (never the target) from the input-pattern scheme.
The target (:data:`SLICE_TARGETS`) is either drawn at random per item (``random``: one
(slice, target) pair per slice and epoch) or, as the HF-GAN reference trains, every batch of
slices is used four times in a row with each item's target shifted by one sequence each time
(``all``: all four targets of every slice in each epoch, four times the pairs and the steps).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Optional, Sequence as SequenceT

import numpy as np

from ..metrics import BRATS_REGIONS
from ..sequences import SEQUENCES, Sequence
from .input_patterns import sample_pattern
from .options import TrainingError
from .prepared_cases import PreparedCase

__all__ = ["MIN_BRAIN_AREA_MM2", "TUMOUR_CORE_LABELS", "SLICE_TARGETS", "check_slice_targets", "min_brain_pixels",
           "eligible_slices", "Stage1Batch",
           "make_stage1_batch", "SliceSampler", "tumour_items_per_batch"]

#: Slices with less brain than this are not used for stage-1 training (paper: 2000 pixels at 1 mm).
MIN_BRAIN_AREA_MM2 = 2000.0
#: BraTS 2023 labels of the tumour core (necrosis and enhancing tumour), which stage 1 can oversample.
TUMOUR_CORE_LABELS = BRATS_REGIONS["TC"]
#: ``--slice-targets``: one random target per slice and epoch, or all four in turn (HF-GAN reference).
SLICE_TARGETS = ("random", "all")


def check_slice_targets(value: str) -> None:
    """One-line :class:`TrainingError` unless ``value`` is one of :data:`SLICE_TARGETS`."""
    if value not in SLICE_TARGETS:
        raise TrainingError(f"--slice-targets must be one of {', '.join(SLICE_TARGETS)}, got {value!r}")


def min_brain_pixels(pixel_area_mm2: float, area_mm2: float = MIN_BRAIN_AREA_MM2) -> int:
    """Brain pixels a slice needs: ``area_mm2`` over the pixel area (2000 at 1 mm, 500 at 2 mm)."""
    if not pixel_area_mm2 > 0:
        raise TrainingError(f"pixel area must be positive, got {pixel_area_mm2}")
    return int(math.ceil(area_mm2 / pixel_area_mm2 - 1e-9))


def eligible_slices(brain: np.ndarray, pixel_area_mm2: float, area_mm2: float = MIN_BRAIN_AREA_MM2) -> np.ndarray:
    """Indices of axial slices (axis 0) with at least :func:`min_brain_pixels` brain pixels."""
    counts = np.asarray(brain).reshape(brain.shape[0], -1).sum(axis=1)
    return np.flatnonzero(counts >= min_brain_pixels(pixel_area_mm2, area_mm2))


@dataclasses.dataclass
class Stage1Batch:
    """A stage-1 training batch; channel indices are in the generator's ``modality_order``.

    ``images`` [B, 4, H, W] holds all four real slices (the generator masks what is not
    available). The cycle pass re-synthesises ``cycle_target`` from ``cycle_available``,
    which includes the synthetic target (HF-GAN's cycle consistency).
    """

    images: np.ndarray
    available: np.ndarray
    target: np.ndarray
    intensity: np.ndarray
    cycle_available: np.ndarray
    cycle_target: np.ndarray
    cycle_intensity: np.ndarray
    target_class: np.ndarray
    cycle_class: np.ndarray
    label: np.ndarray
    brain: np.ndarray
    items: list


def make_stage1_batch(cases: SequenceT[PreparedCase], items: SequenceT[tuple], order: SequenceT[Sequence],
                      rng: np.random.Generator, patterns: str = "hfgan",
                      targets: Optional[SequenceT[Sequence]] = None) -> Stage1Batch:
    """Build a batch from ``(case index, slice index)`` items with ``patterns`` inputs; ``targets`` gives
    each item's target (default: one drawn at random per item)."""
    order = list(order)
    size = len(items)
    first = cases[items[0][0]]
    height, width = first.brain.shape[1:]
    images = np.empty((size, 4, height, width), dtype=np.float32)
    available = np.zeros((size, 4), dtype=bool)
    cycle_available = np.zeros((size, 4), dtype=bool)
    ints = {name: np.zeros(size, dtype=np.int64) for name in ("target", "cycle_target", "target_class", "cycle_class")}
    floats = {name: np.zeros(size, dtype=np.float32) for name in ("intensity", "cycle_intensity")}
    labels = np.empty((size, height, width), dtype=np.uint8)
    brains = np.empty((size, height, width), dtype=bool)
    for b, (case_index, z) in enumerate(items):
        case = cases[case_index]
        for channel, sequence in enumerate(order):
            images[b, channel] = case.scaled[sequence][z]
        target = SEQUENCES[int(rng.integers(len(SEQUENCES)))] if targets is None else targets[b]
        sources = sample_pattern(rng, target, patterns)
        if len(sources) > 1:  # re-synthesise one input from the others plus the synthetic target
            redo = sources[int(rng.integers(len(sources)))]
            cycle_sources = [s for s in SEQUENCES if s != redo]
        else:  # re-synthesise the single input from the synthetic target alone
            redo, cycle_sources = sources[0], [target]
        available[b, [order.index(s) for s in sources]] = True
        cycle_available[b, [order.index(s) for s in cycle_sources]] = True
        ints["target"][b], ints["cycle_target"][b] = order.index(target), order.index(redo)
        ints["target_class"][b], ints["cycle_class"][b] = SEQUENCES.index(target), SEQUENCES.index(redo)
        floats["intensity"][b], floats["cycle_intensity"][b] = case.intensity[target], case.intensity[redo]
        labels[b] = case.label[z]
        brains[b] = case.brain[z]
    return Stage1Batch(images=images, available=available, cycle_available=cycle_available, label=labels,
                       brain=brains, items=[tuple(i) for i in items], **ints, **floats)


class SliceSampler:
    """Draws stage-1 batches from the eligible slices of the training cases, epoch by epoch.

    Each epoch visits the slices in a fresh random order (repeating the order when an
    epoch has more steps than slices per batch), so a run resumed at an epoch boundary with
    the same RNG state draws the same batches. ``tumour_fraction`` of every batch (rounded)
    comes from the slices that hold tumour core instead: enhancement and necrosis fill
    about a quarter of BraTS-like slices and a few percent of their pixels, too little
    for a short run to learn them (0, the default, samples every slice alike, as HF-GAN).
    ``targets`` is ``random`` (one random target per item) or ``all`` (each group of slices
    is yielded four times, once per target, as the HF-GAN reference trains).
    """

    def __init__(self, cases: SequenceT[PreparedCase], order: SequenceT[Sequence], batch_size: int,
                 area_mm2: float = MIN_BRAIN_AREA_MM2, patterns: str = "hfgan", tumour_fraction: float = 0.0,
                 targets: str = "random") -> None:
        check_slice_targets(targets)
        self.cases = list(cases)
        self.order = tuple(order)
        self.batch_size = int(batch_size)
        self.patterns = patterns
        self.targets = targets
        self.index = [(ci, int(z)) for ci, case in enumerate(self.cases)
                      for z in eligible_slices(case.brain, case.pixel_area_mm2, area_mm2)]
        if not self.index:
            raise TrainingError(f"no training slice has {area_mm2:g} mm^2 of brain")
        self.tumour_core_index = [(ci, z) for ci, z in self.index
                                  if np.isin(self.cases[ci].label[z], TUMOUR_CORE_LABELS).any()]
        self.tumour_per_batch = tumour_items_per_batch(tumour_fraction, self.batch_size)
        if self.tumour_per_batch and not self.tumour_core_index:
            raise TrainingError(f"--tumour-fraction {tumour_fraction:g}: no training slice holds tumour core "
                                f"(label 1 or 3)")

    @property
    def passes_per_group(self) -> int:
        """Batches made of each group of slices: 1 (``random``) or one per target (``all``)."""
        return len(SEQUENCES) if self.targets == "all" else 1

    @property
    def full_epoch_steps(self) -> int:
        """Steps that visit every eligible slice once (with every target, for ``all``)."""
        return max(1, len(self.index) // self.batch_size) * self.passes_per_group

    def epoch(self, steps: int, rng: np.random.Generator) -> Iterator[Stage1Batch]:
        """``steps`` batches in a random order drawn from ``rng`` at the start of the epoch."""
        passes = self.passes_per_group
        yielded = 0
        for chosen in self._groups(-(-steps // passes), rng):
            if passes == 1:
                yield make_stage1_batch(self.cases, chosen, self.order, rng, self.patterns)
                yielded += 1
                continue
            first = rng.integers(len(SEQUENCES), size=len(chosen))  # each item's first target
            for shift in range(passes):
                if yielded == steps:
                    return
                targets = [SEQUENCES[(int(f) + shift) % len(SEQUENCES)] for f in first]
                yield make_stage1_batch(self.cases, chosen, self.order, rng, self.patterns, targets)
                yielded += 1

    def _groups(self, groups: int, rng: np.random.Generator) -> Iterator[list]:
        """``groups`` lists of ``batch_size`` (case, slice) items, ``tumour_per_batch`` from tumour core."""
        from_tumour = self.tumour_per_batch
        from_anywhere = self.batch_size - from_tumour
        anywhere = _epoch_order(len(self.index), groups * from_anywhere, rng)
        tumour = _epoch_order(len(self.tumour_core_index), groups * from_tumour, rng) if from_tumour else None
        for group in range(groups):
            chosen = [self.index[i] for i in anywhere[group * from_anywhere:(group + 1) * from_anywhere]]
            if tumour is not None:
                chosen += [self.tumour_core_index[i] for i in tumour[group * from_tumour:(group + 1) * from_tumour]]
            yield chosen


def tumour_items_per_batch(fraction: float, batch_size: int) -> int:
    """Items of a batch drawn from tumour-core slices: ``fraction`` of it, rounded (a fraction in [0, 1])."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise TrainingError(f"--tumour-fraction must be between 0 and 1, got {fraction:g}")
    items = int(round(float(fraction) * int(batch_size)))
    if fraction > 0 and items == 0:
        raise TrainingError(f"--tumour-fraction {fraction:g} draws no slice of a batch of {batch_size}; "
                            f"use at least {0.5 / batch_size:.3g}")
    return items


def _epoch_order(population: int, needed: int, rng: np.random.Generator) -> np.ndarray:
    """``needed`` indices into ``population`` items: whole random permutations, repeated as needed."""
    if needed <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rng.permutation(population) for _ in range(int(math.ceil(needed / population)))])[:needed]
