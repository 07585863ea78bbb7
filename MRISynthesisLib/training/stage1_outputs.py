"""Stage-1 outputs for stage 2: volumes synthesised once per (case, target, inputs) with the
inference code and cached on disk under the SHA-256 of the stage-1 checkpoint.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional, Sequence as SequenceT

import numpy as np

from ..core.io import atomic_path
from ..core.preprocessing import prior_intensity
from ..sequences import SEQUENCES, Sequence
from .prepared_cases import PREPARED_CACHE_VERSION, PreparedCase
from .run_files import LogCallback, file_sha256

__all__ = ["stage1_volume", "Stage1OutputCache"]


def stage1_volume(generator, case: PreparedCase, target: Sequence, sources: SequenceT[Sequence], device) -> np.ndarray:
    """Stage-1 output of ``target`` from ``sources`` on [0, 1], exactly as the pipeline makes it.

    Calls ``stages.stage1_on_model_grid`` (the inference code: slice batches, empty slices skipped,
    prior-mean intensity encoding), so stage 2 trains on what it will see at inference.
    """
    from ..core.stages import stage1_on_model_grid
    from ..core.bundles import ModelBundle

    bundle = ModelBundle(name="training", stage1=generator)
    intensity = prior_intensity(target, priors=generator.intensity_priors)
    return stage1_on_model_grid(case, bundle, target, list(sources), intensity, device, None, None, None, [])


class Stage1OutputCache:
    """Stage-1 volumes on disk under ``root/v<prepared-case version>-<sha256 of the stage-1 checkpoint>/``.

    Entries are computed on first use per (case, target, inputs); a different checkpoint
    file, or inputs prepared another way (:data:`.prepared_cases.PREPARED_CACHE_VERSION`), give a
    different key, and folders of other keys are deleted (they are stale).
    """

    def __init__(self, root: Path, checkpoint: Path, generator, device, log: Optional[LogCallback] = None) -> None:
        self.key = file_sha256(checkpoint)  # recorded by stage 2 as the checkpoint's sha256
        self.root = Path(root)
        self.folder = self.root / f"v{PREPARED_CACHE_VERSION}-{self.key}"
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
            if entry.is_dir() and entry.name != self.folder.name:
                shutil.rmtree(entry, ignore_errors=True)
                if log:
                    log("stage-1 checkpoint or input preparation changed: removed stale stage-1 cache "
                        f"{entry.name[:16]}")

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
