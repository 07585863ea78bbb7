"""Training data: BraTS case folders prepared exactly as at inference, split, sampled and cached.

* **Cases**: every sub-folder of the data folder with images is a case; it must hold the
  four sequences and a label map (BraTS 2023+ ``t1n t1c t2w t2f seg`` or BraTS 2021
  ``t1 t1ce t2 flair seg`` names; the 2021 enhancing label 4 becomes 3).
* **Split**: train/validation by case, drawn from the seed and written to ``split.json`` so
  every command of a run folder (stage 1, segmenter, stage 2) uses the same one.
* **Preparation**: :func:`MRISynthesisLib.core.pipeline.prepare_inputs` (the inference code)
  with all four sequences gives the [-1, 1] stage-1 arrays, the raw model-grid arrays (for
  the stage-2 z-score) and the brain on the model grid; the label goes through the same
  grid. Arrays are cached as ``.npy`` in the run folder and memory-mapped.
* **Stage 1**: axial slices with at least 2000 mm^2 of brain (2000 pixels at 1 mm), a random
  target and a random missing-sequence pattern (one to three inputs, never the target).
* **Stage 2 / segmenter**: random 3D crops centred on brain or tumour voxels.
* **Stage-1 outputs** for stage 2 are computed once per (case, target, inputs) with the
  inference code and cached on disk under the SHA-256 of the stage-1 checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from itertools import combinations
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence as SequenceT

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.io import (
    CaseFiles,
    atomic_path,
    find_case_files,
    is_image_file,
    read_case,
    read_case_label,
    resample_to,
    same_grid,
    write_text,
)
from ..metrics import BRATS_REGIONS
from ..core.preprocessing import ZScore, fit_zscore, intensity_encoding_value, prior_intensity
from ..sequences import SEQUENCES, Sequence
from .common import LogCallback, TrainingError, check_input_patterns, file_sha256

#: Slices with less brain than this are not used for stage-1 training (paper: 2000 pixels at 1 mm).
MIN_BRAIN_AREA_MM2 = 2000.0
#: Bumped when the cached arrays' meaning changes, so old caches are rebuilt.
PREPARED_CACHE_VERSION = 1
SPLIT_FILE = "split.json"
_LEGACY_ENHANCING, _ENHANCING = 4, 3
#: BraTS 2023 labels of the tumour core (necrosis and enhancing tumour), which stage 1 can oversample.
TUMOUR_CORE_LABELS = BRATS_REGIONS["TC"]


# --------------------------------------------------------------------------- cases and split


def find_cases(data_dir: str | Path) -> list:
    """The complete cases (four sequences and a label) of a data folder, sorted by case id.

    Sub-folders without any image are ignored; a case folder that lacks a sequence or the
    label map is an error naming the folder.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir}: data folder does not exist")
    cases = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(is_image_file(entry) for entry in folder.iterdir() if entry.is_file()):
            continue  # not a case folder (notes, outputs, ...)
        files = find_case_files(folder)
        reason = files.incomplete_reason("training")
        if reason:
            raise TrainingError(reason)
        cases.append(files)
    if not cases:
        raise TrainingError(f"{data_dir}: no case folders (one sub-folder per case, BraTS names)")
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise TrainingError(f"{data_dir}: case id {duplicates[0]} appears in two folders")
    return sorted(cases, key=lambda c: c.case_id)


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """Case ids used for training and for validation, and the seed that drew them."""

    train: tuple
    validation: tuple
    seed: int

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"train": list(self.train), "validation": list(self.validation), "seed": self.seed}


def default_val_cases(n_cases: int) -> int:
    """10 % of the cases for validation (at least one when there are two or more cases)."""
    return 0 if n_cases < 2 else max(1, round(0.1 * n_cases))


def split_cases(case_ids: SequenceT[str], val_cases: Optional[int], seed: int) -> DataSplit:
    """Draw ``val_cases`` validation cases (default :func:`default_val_cases`) from the seed."""
    ids = sorted(case_ids)
    count = default_val_cases(len(ids)) if val_cases is None else int(val_cases)
    if count >= len(ids):
        raise TrainingError(f"--val-cases {count} leaves no training case ({len(ids)} cases in the data folder)")
    order = np.random.default_rng(int(seed)).permutation(len(ids))
    validation = sorted(ids[i] for i in order[:count])
    return DataSplit(train=tuple(i for i in ids if i not in validation), validation=tuple(validation),
                     seed=int(seed))


def load_or_create_split(run_dir: Path, case_ids: SequenceT[str], val_cases: Optional[int], seed: int,
                         log: Optional[LogCallback] = None) -> DataSplit:
    """The run folder's split (``split.json``), drawn and written on first use.

    Later commands reuse it so that no validation case is ever trained on by another stage;
    a split naming cases that are no longer in the data folder is an error.
    """
    path = Path(run_dir) / SPLIT_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            split = DataSplit(tuple(data["train"]), tuple(data["validation"]), int(data["seed"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainingError(f"{path}: unreadable case split ({type(error).__name__})") from error
        unknown = sorted(set(split.train + split.validation) - set(case_ids))
        if unknown:
            raise TrainingError(f"{path}: split names case {unknown[0]} that is not in the data folder")
        if val_cases is not None and val_cases != len(split.validation) and log:
            log(f"keeping the run folder's split ({len(split.validation)} validation cases); "
                f"--val-cases {val_cases} ignored")
        return split
    split = split_cases(case_ids, val_cases, seed)
    write_text(json.dumps(split.to_dict(), indent=2) + "\n", path)
    if log:
        log(f"case split: {len(split.train)} training, {len(split.validation)} validation -> {path}")
    return split


# --------------------------------------------------------------------------- prepared cases


@dataclasses.dataclass(frozen=True)
class _GridConfig:
    image_size: int


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """Stands in for a generator where only its model grid matters (``pipeline.model_grid_for``)."""

    config: _GridConfig

    @classmethod
    def of_size(cls, image_size: int) -> "GridSpec":
        """The model grid of a generator built for ``image_size`` x ``image_size`` slices."""
        return cls(_GridConfig(int(image_size)))


@dataclasses.dataclass
class PreparedCase:
    """One case on the model grid, as the pipeline prepares it: arrays are ``[Z, H, W]``.

    ``scaled``: stage-1 [-1, 1] arrays; ``raw``: model-grid intensities (background 0) for
    the z-score; ``brain``: bool; ``label``: BraTS 2023 labels 0-3; ``spacing``: (x, y, z) mm;
    ``intensity``: the intensity-encoding value (median brain intensity) of each sequence.
    """

    case_id: str
    scaled: dict
    raw: dict
    brain: np.ndarray
    label: np.ndarray
    spacing: tuple
    intensity: dict
    _memo: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def pixel_area_mm2(self) -> float:
        """Area of one axial pixel on the model grid."""
        return float(self.spacing[0] * self.spacing[1])

    def unit(self, sequence: Sequence) -> np.ndarray:
        """The sequence on the [0, 1] scale of stage-1 outputs (0 outside the brain)."""
        scaled = np.asarray(self.scaled[sequence], dtype=np.float32)
        return np.where(self.brain, np.clip((scaled + 1.0) / 2.0, 0.0, 1.0), 0.0).astype(np.float32)

    def zscore(self, sequence: Sequence) -> ZScore:
        """The sequence's z-score over the brain, fitted as ``pipeline.refine_on_model_grid`` does (memoised)."""
        key = f"zscore-{sequence.value}"
        if key not in self._memo:
            self._memo[key] = fit_zscore(self.raw[sequence], self.brain)
        return self._memo[key]

    def zscored(self, sequence: Sequence) -> np.ndarray:
        """The raw sequence z-scored over the brain, exactly as ``pipeline.refine_on_model_grid`` does."""
        return self.zscore(sequence).forward(self.raw[sequence], self.brain)

    def zscored_crop(self, sequence: Sequence, box: tuple, size: SequenceT[int]) -> np.ndarray:
        """A crop of :meth:`zscored` (whole-volume statistics), zero-padded to ``size``."""
        brain = take_crop(self.brain, box, size, fill=0).astype(bool)
        return self.zscore(sequence).forward(take_crop(self.raw[sequence], box, size), brain)

    def bounding_box(self, which: str) -> Optional[tuple]:
        """Bounding box (slices) of ``"brain"`` or ``"tumour"``; None when empty."""
        key = f"box-{which}"
        if key not in self._memo:
            mask = self.brain if which == "brain" else (np.asarray(self.label) > 0)
            found = ndimage.find_objects(mask.astype(np.uint8))
            self._memo[key] = found[0] if found else None
        return self._memo[key]


def prepare_case(files: CaseFiles, image_size: int) -> PreparedCase:
    """Read a case folder and prepare it with the inference code for ``image_size`` slices."""
    from ..core.pipeline import prepare_inputs

    images = read_case(files.folder)
    prepared = prepare_inputs(images, [], GridSpec.of_size(image_size))
    label_image = read_case_label(files.folder)
    if not same_grid(label_image, prepared.reference):
        label_image = resample_to(label_image, prepared.reference, sitk.sitkNearestNeighbor)
    label = np.rint(prepared.grid.to_model(label_image, nearest=True)).astype(np.uint8)
    label[label == _LEGACY_ENHANCING] = _ENHANCING
    if label.max(initial=0) > _ENHANCING:
        raise TrainingError(f"{files.label}: label values above 4 are not BraTS labels")
    brain = np.asarray(prepared.brain, dtype=bool)
    intensity = {s: intensity_encoding_value(prepared.scaled[s], brain) for s in SEQUENCES}
    return PreparedCase(case_id=files.case_id, scaled=dict(prepared.scaled), raw=dict(prepared.raw), brain=brain,
                        label=label, spacing=tuple(float(v) for v in prepared.grid.model_spacing),
                        intensity=intensity)


def _fingerprint(files: CaseFiles) -> list:
    paths = [files.folder / p.name for p in [*files.sequences.values(), files.label]]
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths)


class PreparedCaseStore:
    """Prepared cases cached as ``.npy`` under ``RUN_DIR/cache/prepared-<size>/<case>/``.

    A cache entry is rebuilt when a source file's size or modification time changes;
    loaded arrays are memory-mapped (read-only) and kept per case for the run.
    """

    def __init__(self, run_dir: Path, image_size: int, log: Optional[LogCallback] = None) -> None:
        self.root = Path(run_dir) / "cache" / f"prepared-{int(image_size)}"
        self.image_size = int(image_size)
        self.log = log
        self._loaded: dict = {}

    def get(self, files: CaseFiles) -> PreparedCase:
        """The prepared case, from memory, from the disk cache, or computed and cached."""
        if files.case_id not in self._loaded:
            self._loaded[files.case_id] = self._load_or_prepare(files)
        return self._loaded[files.case_id]

    def get_all(self, cases: SequenceT[CaseFiles], progress: Optional[Callable[[float, str], None]] = None) -> list:
        """Prepared versions of ``cases`` in order, reporting ``progress(fraction, message)``."""
        out = []
        for index, files in enumerate(cases):
            out.append(self.get(files))
            if progress:
                progress((index + 1) / len(cases), f"prepared {files.case_id}")
        return out

    def _load_or_prepare(self, files: CaseFiles) -> PreparedCase:
        folder = self.root / files.case_id
        meta_path = folder / "meta.json"
        fingerprint = _fingerprint(files)
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if meta.get("version") == PREPARED_CACHE_VERSION and meta.get("sources") == fingerprint:
                    return _read_prepared(folder, meta)
            except (OSError, ValueError, KeyError):
                pass
        case = prepare_case(files, self.image_size)
        _write_prepared(case, folder, fingerprint)
        if self.log:
            self.log(f"prepared {files.case_id}: {case.brain.shape} voxels of "
                     f"{' x '.join(f'{v:g}' for v in case.spacing)} mm")
        return _read_prepared(folder, json.loads(meta_path.read_text(encoding="utf-8")))


def _write_prepared(case: PreparedCase, folder: Path, fingerprint: list) -> None:
    """Write the arrays and ``meta.json`` (last, so a half-written folder is never used)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    np.save(folder / "brain.npy", case.brain)
    np.save(folder / "label.npy", case.label)
    for sequence in SEQUENCES:
        np.save(folder / f"scaled-{sequence.value}.npy", np.asarray(case.scaled[sequence], dtype=np.float32))
        np.save(folder / f"raw-{sequence.value}.npy", np.asarray(case.raw[sequence], dtype=np.float32))
    meta = {"version": PREPARED_CACHE_VERSION, "case_id": case.case_id, "sources": fingerprint,
            "spacing": list(case.spacing), "intensity": {s.value: v for s, v in case.intensity.items()}}
    write_text(json.dumps(meta, indent=2) + "\n", folder / "meta.json")


def _read_prepared(folder: Path, meta: Mapping) -> PreparedCase:
    def load(name: str) -> np.ndarray:
        return np.load(folder / f"{name}.npy", mmap_mode="r")

    return PreparedCase(
        case_id=str(meta["case_id"]),
        scaled={s: load(f"scaled-{s.value}") for s in SEQUENCES},
        raw={s: load(f"raw-{s.value}") for s in SEQUENCES},
        brain=np.asarray(load("brain")), label=np.asarray(load("label")),
        spacing=tuple(meta["spacing"]), intensity={Sequence(k): float(v) for k, v in meta["intensity"].items()},
    )


# --------------------------------------------------------------------------- stage 1 slices


def min_brain_pixels(pixel_area_mm2: float, area_mm2: float = MIN_BRAIN_AREA_MM2) -> int:
    """Brain pixels a slice needs: ``area_mm2`` over the pixel area (2000 at 1 mm, 500 at 2 mm)."""
    if not pixel_area_mm2 > 0:
        raise TrainingError(f"pixel area must be positive, got {pixel_area_mm2}")
    return int(math.ceil(area_mm2 / pixel_area_mm2 - 1e-9))


def eligible_slices(brain: np.ndarray, pixel_area_mm2: float, area_mm2: float = MIN_BRAIN_AREA_MM2) -> np.ndarray:
    """Indices of axial slices (axis 0) with at least :func:`min_brain_pixels` brain pixels."""
    counts = np.asarray(brain).reshape(brain.shape[0], -1).sum(axis=1)
    return np.flatnonzero(counts >= min_brain_pixels(pixel_area_mm2, area_mm2))


#: Input patterns of more than one sequence for each target (pairs and the triple).
def _multi_patterns(target: Sequence) -> list:
    others = [s for s in SEQUENCES if s != target]
    return [c for size in (2, 3) for c in combinations(others, size)]


def sample_pattern(rng: np.random.Generator, target: Sequence, scheme: str = "hfgan",
                   single_fraction: float = 0.5) -> tuple:
    """Random available inputs for ``target``: one to three other sequences, in canonical order.

    ``hfgan`` (HF-GAN training): half the samples have a single input and half two or three
    (each of the three pairs and the triple equally likely). ``missing-one``: the other three.
    """
    others = [s for s in SEQUENCES if s != target]
    check_input_patterns(scheme)
    if scheme == "missing-one":
        return tuple(others)
    if rng.random() < single_fraction:
        return (others[int(rng.integers(len(others)))],)
    patterns = _multi_patterns(target)
    return patterns[int(rng.integers(len(patterns)))]


def all_patterns(target: Sequence) -> list:
    """The seven non-empty input sets for ``target`` (canonical order)."""
    others = [s for s in SEQUENCES if s != target]
    return [c for size in (1, 2, 3) for c in combinations(others, size)]


def input_sets(target: Sequence, scheme: str = "hfgan") -> list:
    """The input sets a scheme trains ``target`` from: all seven (``hfgan``) or the other three."""
    check_input_patterns(scheme)
    patterns = all_patterns(target)
    return patterns if scheme == "hfgan" else patterns[-1:]


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
                      rng: np.random.Generator, patterns: str = "hfgan") -> Stage1Batch:
    """Build a batch from ``(case index, slice index)`` items with random targets and ``patterns`` inputs."""
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
        target = SEQUENCES[int(rng.integers(len(SEQUENCES)))]
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
    """

    def __init__(self, cases: SequenceT[PreparedCase], order: SequenceT[Sequence], batch_size: int,
                 area_mm2: float = MIN_BRAIN_AREA_MM2, patterns: str = "hfgan", tumour_fraction: float = 0.0) -> None:
        self.cases = list(cases)
        self.order = tuple(order)
        self.batch_size = int(batch_size)
        self.patterns = patterns
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
    def full_epoch_steps(self) -> int:
        """Steps that visit every eligible slice once."""
        return max(1, len(self.index) // self.batch_size)

    def epoch(self, steps: int, rng: np.random.Generator) -> Iterator[Stage1Batch]:
        """``steps`` batches in a random order drawn from ``rng`` at the start of the epoch."""
        from_tumour = self.tumour_per_batch
        from_anywhere = self.batch_size - from_tumour
        anywhere = _epoch_order(len(self.index), steps * from_anywhere, rng)
        tumour = _epoch_order(len(self.tumour_core_index), steps * from_tumour, rng) if from_tumour else None
        for step in range(steps):
            chosen = [self.index[i] for i in anywhere[step * from_anywhere:(step + 1) * from_anywhere]]
            if tumour is not None:
                chosen += [self.tumour_core_index[i] for i in tumour[step * from_tumour:(step + 1) * from_tumour]]
            yield make_stage1_batch(self.cases, chosen, self.order, rng, self.patterns)


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


# --------------------------------------------------------------------------- 3D crops


def crop_size_for(requested: SequenceT[int], factor: int) -> tuple:
    """Check a crop size: three positive multiples of the network's downsampling factor."""
    size = tuple(int(v) for v in requested)
    if len(size) == 1:
        size = size * 3
    if len(size) != 3 or any(v <= 0 or v % factor for v in size):
        raise TrainingError(f"--crop-size {list(requested)} must be 1 or 3 positive multiples of {factor}")
    return size


def random_centre(case: PreparedCase, rng: np.random.Generator, tumour_fraction: float = 0.5) -> tuple:
    """A random voxel of the tumour (with probability ``tumour_fraction``, when there is one) or the brain."""
    use_tumour = rng.random() < tumour_fraction and case.bounding_box("tumour") is not None
    which = "tumour" if use_tumour else "brain"
    box = case.bounding_box(which)
    if box is None:
        return tuple(s // 2 for s in case.brain.shape)
    mask = (case.label > 0) if use_tumour else case.brain
    for _ in range(1000):  # rejection sampling inside the bounding box; masks fill a good part of it
        point = tuple(int(rng.integers(sl.start, sl.stop)) for sl in box)
        if mask[point]:
            return point
    return tuple((sl.start + sl.stop) // 2 for sl in box)


def crop_box(shape: SequenceT[int], size: SequenceT[int], centre: SequenceT[int]) -> tuple:
    """Slices of a ``size`` crop around ``centre``, kept inside the volume where it fits."""
    box = []
    for dim, length, middle in zip(shape, size, centre):
        start = min(max(int(middle) - length // 2, 0), max(dim - length, 0))
        box.append(slice(start, min(start + length, dim)))
    return tuple(box)


def take_crop(array: np.ndarray, box: tuple, size: SequenceT[int], fill: float = 0.0) -> np.ndarray:
    """``array[..., box]`` zero-padded at the end of each axis up to ``size`` (volumes smaller than the crop)."""
    cropped = np.asarray(array[(Ellipsis,) + tuple(box)])
    lead = cropped.ndim - len(size)
    pad = [(0, 0)] * lead + [(0, s - c) for s, c in zip(size, cropped.shape[lead:])]
    if any(after for _, after in pad):
        cropped = np.pad(cropped, pad, mode="constant", constant_values=fill)
    return np.ascontiguousarray(cropped)


# --------------------------------------------------------------------------- stage-1 outputs for stage 2


def stage1_volume(generator, case: PreparedCase, target: Sequence, sources: SequenceT[Sequence], device) -> np.ndarray:
    """Stage-1 output of ``target`` from ``sources`` on [0, 1], exactly as the pipeline makes it.

    Calls ``pipeline.stage1_on_model_grid`` (the inference code: slice batches, empty slices skipped,
    prior-mean intensity encoding), so stage 2 trains on what it will see at inference.
    """
    from ..core.pipeline import stage1_on_model_grid
    from ..core.weights import ModelBundle

    bundle = ModelBundle(name="training", stage1=generator)
    intensity = prior_intensity(target, priors=generator.intensity_priors)
    return stage1_on_model_grid(case, bundle, target, list(sources), intensity, device, None, None, None, [])


class Stage1OutputCache:
    """Stage-1 volumes on disk under ``root/<sha256 of the stage-1 checkpoint>/``.

    Entries are computed on first use per (case, target, inputs); a different checkpoint
    file gives a different key, and folders of other keys are deleted (they are stale).
    """

    def __init__(self, root: Path, checkpoint: Path, generator, device, log: Optional[LogCallback] = None) -> None:
        self.key = file_sha256(checkpoint)
        self.root = Path(root)
        self.folder = self.root / self.key
        self.generator = generator
        self.device = device
        self.hits = 0
        self.misses = 0
        self._remove_stale(log)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _remove_stale(self, log: Optional[LogCallback]) -> None:
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name != self.key:
                shutil.rmtree(entry, ignore_errors=True)
                if log:
                    log(f"stage-1 checkpoint changed: removed stale stage-1 cache {entry.name[:12]}")

    def path(self, case: PreparedCase, target: Sequence, sources: SequenceT[Sequence]) -> Path:
        """File of one entry."""
        inputs = "-".join(s.value for s in sorted(sources, key=SEQUENCES.index))
        return self.folder / f"{case.case_id}__{target.value}__{inputs}.npy"

    def get(self, case: PreparedCase, target: Sequence, sources: SequenceT[Sequence]) -> np.ndarray:
        """The cached stage-1 volume [Z, H, W] on [0, 1], computing it when missing."""
        path = self.path(case, target, sources)
        if path.is_file():
            self.hits += 1
            return np.load(path, mmap_mode="r")
        self.misses += 1
        volume = stage1_volume(self.generator, case, target, sources, self.device).astype(np.float32)
        with atomic_path(path) as temporary:
            np.save(temporary, volume)
        return volume
