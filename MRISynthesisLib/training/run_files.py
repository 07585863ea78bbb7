"""The files of a run folder: the log, the metrics (CSV and JSON), resumable training checkpoints,
the best epoch's weights and the model bundle that ``mrisynth synthesize --model RUN_DIR`` loads.

A *run folder* (``RUN_DIR``) holds one training project: the case split, caches, a log per
command, ``<command>-metrics.csv``/``.json``, checkpoints under ``checkpoints/`` and the bundle
(``stage1.pt``, ``segmenter.pt``, ``refiner.pt``, ``bundle.json``); the synthesis stages also
write ``<command>-recipe.json``, the resolved ``--config`` recipe and ablation switches of the run.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .. import __version__
from ..core.io import atomic_path, write_text
from .options import TrainingError

__all__ = ["LogCallback", "TRAINING_STATE_FORMAT", "CHECKPOINT_DIR", "RunLog", "write_metrics", "json_number",
           "training_state_path", "best_weights_path", "save_training_state", "load_training_state", "file_sha256",
           "load_run_model", "write_run_bundle", "write_recipe", "recipe_line"]

#: Written into resumable training checkpoints so foreign files are refused.
TRAINING_STATE_FORMAT = "mrisynthesis-training-state"
#: Sub-folder of the run folder that holds the training checkpoints.
CHECKPOINT_DIR = "checkpoints"
#: Receives one log line (a :class:`RunLog`, the terminal, a test's list).
LogCallback = Callable[[str], None]


# --------------------------------------------------------------------------- log and metrics


class RunLog:
    """Timestamped lines appended to ``RUN_DIR/<name>.log`` and echoed to ``echo`` (the terminal)."""

    def __init__(self, path: Path, echo: Optional[LogCallback] = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
        if self.echo is not None:
            self.echo(message)


def write_metrics(run_dir: Path, name: str, history: list) -> tuple:
    """Write the per-epoch ``history`` as ``<name>-metrics.csv`` and ``.json``; returns both paths."""
    json_path = run_dir / f"{name}-metrics.json"
    write_text(json.dumps(history, indent=2, default=json_number) + "\n", json_path)
    from ..evaluation.tables import rows_to_csv  # the project's one CSV writer

    columns: list = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    csv_path = run_dir / f"{name}-metrics.csv"
    write_text(rows_to_csv([{k: _csv_value(v) for k, v in row.items()} for row in history], columns), csv_path)
    return csv_path, json_path


def write_recipe(run_dir: Path, name: str, recipe: Mapping) -> Path:
    """Write the resolved recipe (preset, values, overrides, ablation switches) as ``<name>-recipe.json``."""
    path = Path(run_dir) / f"{name}-recipe.json"
    write_text(json.dumps(dict(recipe), indent=2, default=json_number) + "\n", path)
    return path


def recipe_line(recipe: Mapping) -> str:
    """The recipe as one log line: ``name value`` pairs, explicit ones marked ``(given)``."""
    given = set(recipe.get("overrides", ()))
    parts = [f"{name} {value}" + (" (given)" if name in given else "")
             for name, value in recipe.get("values", {}).items()]
    parts += [f"{name} {value}" for name, value in recipe.get("ablation", {}).items()]
    parts += [f"{name} {value:g}" for name, value in recipe.get("extra_terms", {}).items()]
    return ", ".join(parts)


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def json_number(value: Any) -> Any:
    """``json.dumps`` default: numpy numbers as Python numbers, anything else as its string."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


# --------------------------------------------------------------------------- training checkpoints


def training_state_path(run_dir: Path, name: str) -> Path:
    """Where the resumable state of command ``name`` lives."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}-last.pt"


def best_weights_path(run_dir: Path, name: str) -> Path:
    """Where the weights of command ``name``'s best-validated epoch live."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}-best.pt"


def save_training_state(path: Path, state: Mapping) -> Path:
    """Write a resumable training state atomically (a crash mid-write keeps the previous one)."""
    import torch

    payload = dict(state)
    payload["format"] = TRAINING_STATE_FORMAT
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_training_state(path: Path, kind: str) -> dict:
    """Read a state written by :func:`save_training_state` for command ``kind``."""
    import torch

    if not path.is_file():
        raise TrainingError(f"{path}: no training checkpoint to resume from (train without --resume first)")
    from ..core.checkpoints import CheckpointError, check_checkpoint_archive

    try:
        check_checkpoint_archive(path)  # sizes from the zip index before anything is inflated
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as error:
        raise TrainingError(str(error)) from error
    except Exception as error:  # torch, zip and pickle errors all mean an unusable file
        raise TrainingError(f"{path}: not a readable training checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT or state.get("kind") != kind:
        raise TrainingError(f"{path}: not a {kind} training checkpoint")
    return state


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- bundle in the run folder


def load_run_model(run_dir: Path, kind: str):
    """The ``kind`` network saved in the run folder, or None when there is none."""
    from ..core.checkpoints import build_model, read_checkpoint

    path = Path(run_dir) / f"{kind}.pt"
    if not path.is_file():
        return None
    return build_model(read_checkpoint(path), path)


def write_run_bundle(run_dir: Path, kind: str, model, info: Mapping, log: Optional[LogCallback] = None) -> Path:
    """Save ``model`` as ``RUN_DIR/<kind>.pt`` and rewrite ``bundle.json`` listing every network there.

    The other networks' files are left byte for byte as they are (the stage-2 cache is keyed
    by the stage-1 file's SHA-256). Without a stage-1 model the checkpoint is written but no
    ``bundle.json`` (a bundle cannot synthesise without stage 1).
    """
    from ..core.bundles import BUNDLE_FILE, save_bundle
    from ..core.checkpoints import save_checkpoint

    run_dir = Path(run_dir)
    provenance = {"software": f"MRISynthesis {__version__}", "run_dir": str(run_dir), "command": f"train {kind}",
                  **dict(info)}
    models = {k: load_run_model(run_dir, k) for k in ("stage1", "refiner", "segmenter") if k != kind}
    models[kind] = model
    metadata = _bundle_metadata(run_dir, kind, provenance)
    if models.get("stage1") is None:
        save_checkpoint(run_dir / f"{kind}.pt", kind, model, provenance)
        if log:
            log(f"wrote {run_dir / f'{kind}.pt'}; no bundle.json yet (train stage1 into this folder)")
        return run_dir
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=run_dir))
    try:
        save_bundle(staging, name=run_dir.name, description=_bundle_description(models),
                    provenance=provenance, metadata=metadata, **models)
        os.replace(staging / f"{kind}.pt", run_dir / f"{kind}.pt")
        os.replace(staging / BUNDLE_FILE, run_dir / BUNDLE_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if log:
        listed = ", ".join(f"{k}.pt" for k in ("stage1", "refiner", "segmenter") if models.get(k) is not None)
        log(f"bundle written to {run_dir} ({listed})")
    return run_dir


def _bundle_metadata(run_dir: Path, kind: str, provenance: Mapping) -> dict:
    """Earlier ``bundle.json`` metadata with this command's training record added."""
    from ..core.bundles import BUNDLE_FILE

    metadata: dict = {}
    path = run_dir / BUNDLE_FILE
    if path.is_file():
        try:
            metadata = dict(json.loads(path.read_text(encoding="utf-8")).get("metadata", {}))
        except (OSError, json.JSONDecodeError, AttributeError):
            metadata = {}
    training = dict(metadata.get("training", {}))
    training[kind] = dict(provenance,
                          trained=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    metadata["training"] = training
    return metadata


def _bundle_description(models: Mapping) -> str:
    parts = ["HF-GAN"] + (["Refiner"] if models.get("refiner") is not None else [])
    parts += ["segmenter"] if models.get("segmenter") is not None else []
    return f"trained with mrisynth train ({' + '.join(parts)})"
