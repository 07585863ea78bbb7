"""Checkpoints, model bundles and the catalogue of named bundles.

One checkpoint format for every network (a plain dict of config, state dict, sequence
order, normalisation, intensity priors and training provenance, loadable with
``torch.load(weights_only=True)``); a *bundle* is stage 1 + optional refiner + optional
segmenter with a ``bundle.json`` that names the files. Bundles come from the packaged
catalogue (``MRISynthesisLib/data/models/<name>/``), from a folder, from a checkpoint file,
or from a reference-layout HF-GAN state dict (stage 1 only).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any, Mapping

from .sequences import SEQUENCES, Sequence

CHECKPOINT_FORMAT = "mrisynthesis-checkpoint"
CHECKPOINT_VERSION = 1
BUNDLE_FILE = "bundle.json"
KINDS = ("stage1", "refiner", "segmenter")
DEFAULT_BUNDLE_NAME = "demo"
CATALOGUE_DIR = Path(__file__).resolve().parent / "data" / "models"

#: Stage-1 normalisation recorded in checkpoints so that a bundle states what it expects.
STAGE1_NORMALISATION = {"stage1": "linear [0, p99.5 of brain] -> [-1, 1], background -1",
                        "stage2": "z-score over non-zero voxels"}


class CheckpointError(ValueError):
    """A checkpoint or bundle that cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- checkpoint files


def save_checkpoint(path: str | Path, kind: str, model: Any, provenance: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (an HF-GAN, Refiner or segmenter) as a checkpoint file, atomically."""
    import torch

    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {kind!r}; expected one of {', '.join(KINDS)}")
    from .preprocessing import INTENSITY_PRIORS

    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "sequence_order": [s.value for s in _model_order(model)],
        "normalisation": dict(STAGE1_NORMALISATION),
        "intensity_priors": {s.value: list(v) for s, v in
                             (getattr(model, "intensity_priors", None) or INTENSITY_PRIORS).items()},
        "provenance": _jsonable(dict(provenance or {})),
    }
    payload.update(_jsonable(dict(extra or {})))
    from .io import atomic_path

    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def _model_order(model: Any) -> tuple[Sequence, ...]:
    order = getattr(model, "modality_order", None)
    return tuple(order) if order else SEQUENCES


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so only plain types reach torch.save (weights_only loading)."""
    return json.loads(json.dumps(value, default=str))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``); corrupt files get a one-line error."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean the same to the user
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: checkpoint holds a {type(payload).__name__}, expected a dict")
    return payload


def is_project_checkpoint(payload: Mapping[str, Any]) -> bool:
    """True for files written by :func:`save_checkpoint`."""
    return payload.get("format") == CHECKPOINT_FORMAT


def build_model(payload: Mapping[str, Any], path: str | Path) -> Any:
    """Rebuild the network of a project checkpoint and load its weights strictly."""
    kind = payload.get("kind")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is newer than this software")
    try:
        if kind == "stage1":
            from .models.hfgan import HFGANConfig, HFGANGenerator

            model = HFGANGenerator(HFGANConfig.from_dict(payload["config"]))
        elif kind == "refiner":
            from .models.refiner import Refiner, RefinerConfig

            model = Refiner(RefinerConfig.from_dict(payload["config"]))
        elif kind == "segmenter":
            from .models.segmenter import SegmenterConfig, build_segmenter

            model = build_segmenter(SegmenterConfig.from_dict(payload["config"]))
        else:
            raise CheckpointError(f"{path}: unknown checkpoint kind {kind!r}")
        model.load_state_dict(payload["state_dict"], strict=True)
        if kind == "stage1" and payload.get("intensity_priors"):
            model.intensity_priors = {Sequence(k): (float(v[0]), float(v[1]))
                                      for k, v in payload["intensity_priors"].items()}
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{path}: {kind} checkpoint does not match its network ({first})") from error
    model.eval()
    return model


def load_reference_generator(payload: Mapping[str, Any], path: str | Path) -> Any:
    """An HF-GAN generator from a state dict in the public reference layout (optionally nested)."""
    from .models.hfgan import HFGANGenerator

    state = find_state_dict(payload)
    if state is None:
        raise CheckpointError(f"{path}: neither an MRISynthesis checkpoint nor an HF-GAN state dict")
    try:
        model = HFGANGenerator.from_reference_state_dict(state)
    except ValueError as error:
        raise CheckpointError(f"{path}: {' '.join(str(error).split())}") from error
    model.eval()
    return model


#: Where training code usually keeps the generator's tensors inside a checkpoint.
GENERATOR_STATE_KEYS = ("generator", "G", "netG", "gen", "model", "state_dict", "model_state_dict")


def find_state_dict(payload: Mapping[str, Any], keys: tuple[str, ...] = GENERATOR_STATE_KEYS
                    ) -> Mapping[str, Any] | None:
    """The tensor dict inside a checkpoint: the payload itself, or found under ``keys`` (depth first)."""
    import torch

    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    for key in keys:
        value = payload.get(key)
        if isinstance(value, Mapping):
            found = find_state_dict(value, keys)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------- bundles


@dataclasses.dataclass
class ModelBundle:
    """Networks for a whole synthesis: stage 1, optional refiner and segmenter, and what they are."""

    name: str
    stage1: Any
    refiner: Any = None
    segmenter: Any = None
    description: str = ""
    source: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def stages(self) -> str:
        """Short human summary, e.g. ``"HF-GAN + Refiner + segmenter"``."""
        parts = ["HF-GAN"] + (["Refiner"] if self.refiner is not None else [])
        return " + ".join(parts) + (" + segmenter" if self.segmenter is not None else "")

    def to(self, device: Any) -> "ModelBundle":
        """Move every network to ``device`` (in place) and return self."""
        for model in (self.stage1, self.refiner, self.segmenter):
            if model is not None:
                model.to(device)
        return self


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    """A catalogue entry: name, one-line description and the folder that holds it."""

    name: str
    description: str
    path: Path


def save_bundle(folder: str | Path, name: str, stage1: Any, refiner: Any = None, segmenter: Any = None,
                description: str = "", provenance: Mapping[str, Any] | None = None,
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a bundle folder: one checkpoint per network and ``bundle.json`` naming them."""
    folder = Path(folder)
    files: dict[str, str] = {}
    for kind, model in (("stage1", stage1), ("refiner", refiner), ("segmenter", segmenter)):
        if model is not None:
            save_checkpoint(folder / f"{kind}.pt", kind, model, provenance)
            files[kind] = f"{kind}.pt"
    manifest = {
        "name": name,
        "description": description,
        "files": files,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metadata": _jsonable(dict(metadata or {})),
    }
    from .io import write_text

    write_text(json.dumps(manifest, indent=2) + "\n", folder / BUNDLE_FILE)
    return folder


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / BUNDLE_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable bundle manifest ({type(error).__name__})") from error
    if not isinstance(manifest, dict) or "stage1" not in manifest.get("files", {}):
        raise CheckpointError(f"{path}: bundle manifest names no stage1 checkpoint")
    return manifest


def load_bundle_folder(folder: str | Path) -> ModelBundle:
    """Load a bundle folder (``bundle.json`` + checkpoints, or just ``stage1.pt`` ...)."""
    folder = Path(folder)
    if (folder / BUNDLE_FILE).is_file():
        manifest = _read_manifest(folder)
    elif (folder / "stage1.pt").is_file():
        files = {k: f"{k}.pt" for k in KINDS if (folder / f"{k}.pt").is_file()}
        manifest = {"name": folder.name, "description": "", "files": files, "metadata": {}}
    else:
        raise CheckpointError(f"{folder}: not a model bundle (no {BUNDLE_FILE} and no stage1.pt)")
    models: dict[str, Any] = {}
    for kind, filename in manifest["files"].items():
        if kind not in KINDS:
            raise CheckpointError(f"{folder / BUNDLE_FILE}: unknown network kind {kind!r}")
        path = folder / filename
        payload = read_checkpoint(path)
        if not is_project_checkpoint(payload):
            if kind != "stage1":
                raise CheckpointError(f"{path}: not an MRISynthesis {kind} checkpoint")
            models[kind] = load_reference_generator(payload, path)
            continue
        if payload.get("kind") != kind:
            raise CheckpointError(f"{path}: holds a {payload.get('kind')} checkpoint, listed as {kind}")
        models[kind] = build_model(payload, path)
    return ModelBundle(
        name=str(manifest.get("name") or folder.name),
        stage1=models["stage1"], refiner=models.get("refiner"), segmenter=models.get("segmenter"),
        description=str(manifest.get("description", "")), source=str(folder),
        metadata=dict(manifest.get("metadata", {})),
    )


def load_bundle_file(path: str | Path) -> ModelBundle:
    """A stage-1-only bundle from one checkpoint file (project format or reference layout)."""
    path = Path(path)
    payload = read_checkpoint(path)
    if is_project_checkpoint(payload):
        if payload.get("kind") != "stage1":
            raise CheckpointError(f"{path}: a {payload.get('kind')} checkpoint cannot synthesise on its own; "
                                  "give the bundle folder")
        model = build_model(payload, path)
        description = "stage-1 checkpoint"
    else:
        model = load_reference_generator(payload, path)
        description = "HF-GAN state dict in the reference layout (stage 1 only)"
    return ModelBundle(name=path.stem, stage1=model, description=description, source=str(path))


def list_bundles(catalogue: str | Path | None = None) -> list[BundleInfo]:
    """Bundles in the packaged catalogue, default first."""
    folder = Path(catalogue) if catalogue else CATALOGUE_DIR
    infos = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if (entry / BUNDLE_FILE).is_file():
                try:
                    manifest = _read_manifest(entry)
                except CheckpointError:
                    continue
                infos.append(BundleInfo(entry.name, str(manifest.get("description", "")), entry))
    infos.sort(key=lambda info: (info.name != DEFAULT_BUNDLE_NAME, info.name))
    return infos


def default_bundle_name() -> str | None:
    """Name of the default bundle (the demo bundle once it is packaged), or None when there is none."""
    bundles = list_bundles()
    return bundles[0].name if bundles else None


def load_bundle(name_or_path: str | Path | None = None) -> ModelBundle:
    """Load a bundle by catalogue name, folder or file; ``None`` means the default bundle."""
    if name_or_path is None:
        name_or_path = default_bundle_name()
        if name_or_path is None:
            raise CheckpointError("no model bundle is installed; give one with --model PATH")
    if isinstance(name_or_path, ModelBundle):
        return name_or_path
    path = Path(name_or_path)
    if path.is_dir():
        return load_bundle_folder(path)
    if path.is_file():
        return load_bundle_file(path)
    for info in list_bundles():
        if info.name == str(name_or_path):
            return load_bundle_folder(info.path)
    known = ", ".join(info.name for info in list_bundles()) or "none installed"
    raise CheckpointError(f"{name_or_path}: no such model file, folder or catalogue bundle (catalogue: {known})")
