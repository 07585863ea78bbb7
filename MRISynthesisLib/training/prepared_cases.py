"""Prepared training cases: each case on the model grid exactly as the inference code prepares it,
cached as memory-mapped ``.npy`` arrays in the run folder.

:func:`MRISynthesisLib.core.model_grid_inputs.prepare_model_grid_inputs` (the inference code) with all four sequences
gives the [-1, 1] stage-1 arrays, the raw model-grid arrays (for the stage-2 z-score) and the
brain on the model grid; the label goes through the same grid (the BraTS 2021 enhancing label 4
becomes 3).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence as SequenceT

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.io import CaseFiles, read_case, read_case_label, resample_to, same_grid, write_text
from ..core.preprocessing import ZScore, fit_zscore, intensity_encoding_value
from ..sequences import SEQUENCES, Sequence
from .crops import take_crop
from .options import TrainingError
from .run_files import LogCallback

__all__ = ["PREPARED_CACHE_VERSION", "GridSpec", "PreparedCase", "prepare_case", "PreparedCaseStore"]

#: Bumped when the cached arrays' meaning changes, so old caches are rebuilt.
PREPARED_CACHE_VERSION = 2  # 2: cubic B-spline resampling to the model grid
#: The enhancing-tumour label of BraTS 2021 and the one of BraTS 2023 it becomes.
_LEGACY_ENHANCING, _ENHANCING = 4, 3


@dataclasses.dataclass(frozen=True)
class _GridConfig:
    image_size: int


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """Stands in for a generator where only its model grid matters (``model_grid_inputs.model_grid_for``)."""

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
        """The sequence's z-score over the brain, fitted as ``stages.refine_on_model_grid`` does (memoised)."""
        key = f"zscore-{sequence.value}"
        if key not in self._memo:
            self._memo[key] = fit_zscore(self.raw[sequence], self.brain)
        return self._memo[key]

    def zscored(self, sequence: Sequence) -> np.ndarray:
        """The raw sequence z-scored over the brain, exactly as ``stages.refine_on_model_grid`` does."""
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
    from ..core.model_grid_inputs import prepare_model_grid_inputs

    images = read_case(files.folder)
    prepared = prepare_model_grid_inputs(images, [], GridSpec.of_size(image_size))
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
