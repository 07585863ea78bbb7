"""Training cases: the BraTS case folders of a data folder and their train/validation split.

* **Cases**: every sub-folder of the data folder with images is a case; it must hold the
  four sequences and a label map (BraTS 2023+ ``t1n t1c t2w t2f seg`` or BraTS 2021
  ``t1 t1ce t2 flair seg`` names).
* **Split**: train/validation by case, drawn from the seed and written to ``split.json`` so
  every command of a run folder (stage 1, segmenter, stage 2) uses the same one.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence as SequenceT

import numpy as np

from ..core.io import find_case_files, is_image_file, write_text
from .options import TrainingError
from .run_files import LogCallback

__all__ = ["SPLIT_FILE", "find_cases", "DataSplit", "default_val_cases", "split_cases", "load_or_create_split"]

#: The run folder's case split, shared by every command trained into it.
SPLIT_FILE = "split.json"


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
