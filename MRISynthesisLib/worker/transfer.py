"""Images and results across the process boundary: NRRD files plus one JSON manifest.

The module writes the selected volumes with :func:`write_input_images`; the worker writes
what it made with :func:`save_results` and the module reads it back with :func:`load_results`,
as the same :class:`~MRISynthesisLib.core.pipeline.SynthesisResult` objects the in-process
path returns, so the scene code cannot tell the two paths apart. NRRD, uncompressed: it
keeps the voxel type, spacing, origin and direction exactly, and writing it costs no
compression time (the files live only until the job ends).
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Mapping

import SimpleITK as sitk

from ..core.pipeline import TARGET_IMAGE_ROLES, SynthesisResult, TargetResult
from ..sequences import SEQUENCES, Sequence, parse_sequence

__all__ = ["IMAGE_ROLES", "MANIFEST_NAME", "TransferError", "write_input_images", "save_results", "load_results"]

#: Image fields of a TargetResult that travel (all optional but ``synthetic``).
IMAGE_ROLES = TARGET_IMAGE_ROLES
#: The manifest the worker writes last: its presence means every image before it is complete.
MANIFEST_NAME = "results.json"
_IMAGE_SUFFIX = ".nrrd"
#: Names the worker gives result images; nothing else is read back (no path can point elsewhere).
_RESULT_NAME = re.compile(r"^result\d+-[a-z0-9]+-[a-z0-9_]+\.nrrd$")
#: Largest manifest read back (a real one is a few kB).
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class TransferError(RuntimeError):
    """Results that cannot be read back (missing or unreadable file, bad manifest): names the file."""


def _write(image: sitk.Image, path: Path) -> str:
    sitk.WriteImage(image, str(path), False)
    return path.name


def write_input_images(images: Mapping[Sequence, sitk.Image], folder: Path) -> dict:
    """Write each input image as ``input-<seq>.nrrd`` into ``folder``; returns ``{Sequence: file name}``."""
    folder = Path(folder)
    return {Sequence(key): _write(image, folder / f"input-{Sequence(key).value}{_IMAGE_SUFFIX}")
            for key, image in images.items()}


def _number(value: Any) -> Any:
    """A JSON-safe number: NaN and infinities as strings (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _from_number(value: Any) -> Any:
    return float(value) if value in ("nan", "inf", "-inf") else value


def save_results(results: list, folder: Path) -> Path:
    """Write every result's images and facts into ``folder``; the manifest is written last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, result in enumerate(results):
        targets = {}
        for sequence, target in result.targets.items():
            sequence = Sequence(sequence)
            files = {}
            for role in IMAGE_ROLES:
                image = getattr(target, role)
                if image is not None:
                    files[role] = _write(image, folder / f"result{index}-{sequence.value}-{role}{_IMAGE_SUFFIX}")
            targets[sequence.value] = {
                "files": files,
                "metrics": {k: _number(v) for k, v in target.metrics.items()},
                "stage1_metrics": {k: _number(v) for k, v in target.stage1_metrics.items()},
                "sources": [Sequence(s).value for s in target.sources],
                "intensity": _number(float(target.intensity)),
                "tumour_region_source": target.tumour_region_source,
                "uncertainty": {k: _number(v) if isinstance(v, float) else v
                                for k, v in (getattr(target, "uncertainty", None) or {}).items()},
            }
        extras = {}
        if getattr(result, "brain_mask", None) is not None:
            extras["brain_mask"] = _write(result.brain_mask, folder / f"result{index}-mask-brain_mask{_IMAGE_SUFFIX}")
        entries.append({
            "extras": extras,
            "preparation": getattr(result, "preparation", None),
            "distribution_check": getattr(result, "distribution_check", None),
            "targets": targets,
            "inputs": [Sequence(s).value for s in result.inputs],
            "model_name": str(result.model_name),
            "device": str(result.device),
            "timings": {k: float(v) for k, v in result.timings.items()},
            "messages": [str(m) for m in result.messages],
            "reference": None if result.reference is None else Sequence(result.reference).value,
        })
    manifest = folder / MANIFEST_NAME
    manifest.write_text(json.dumps({"results": entries}, indent=1), encoding="utf-8")
    return manifest


def _regular_file(path: Path, limit: int = 0) -> bytes:
    """The bytes of ``path`` if it is a regular file of this folder (no link, FIFO or device; at most ``limit``)."""
    try:
        info = os.lstat(path)
    except OSError:
        raise TransferError(f"{path}: result file missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise TransferError(f"{path}: not a regular file (a link, FIFO or device is never read back)")
    if limit and info.st_size > limit:
        raise TransferError(f"{path}: {info.st_size} bytes, more than a results file holds")
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read(limit + 1 if limit else -1)


def _read(folder: Path, name: Any) -> sitk.Image:
    """A result image the worker wrote: named as it names them, a regular file, its voxels inside it."""
    if not isinstance(name, str) or not _RESULT_NAME.match(name):
        raise TransferError(f"{folder / MANIFEST_NAME}: bad image file entry {name!r}")
    path = folder / name
    header = _regular_file(path)[:4096].split(b"\n\n", 1)[0]
    if re.search(rb"(?im)^data ?file\s*:", header):
        raise TransferError(f"{path}: names a separate data file; result images hold their own voxels")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError:
        raise TransferError(f"{path}: result image missing or unreadable") from None


def load_results(folder: Path) -> list:
    """The results a worker saved in ``folder``, as :class:`SynthesisResult` objects (images in memory)."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    try:
        data = json.loads(_regular_file(manifest, _MAX_MANIFEST_BYTES).decode("utf-8"))
        entries = data["results"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise TransferError(f"{manifest}: no readable results manifest ({error})") from None
    try:
        return [_result_from_entry(folder, entry) for entry in entries]
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as error:
        raise TransferError(f"{manifest}: malformed results manifest ({type(error).__name__}: {error})") from None


def _result_from_entry(folder: Path, entry: Mapping) -> SynthesisResult:
    """One SynthesisResult from its manifest entry (its images read from ``folder``)."""
    targets = {}
    for key, info in entry["targets"].items():
        sequence = parse_sequence(key)
        images = dict.fromkeys(IMAGE_ROLES[1:])  # stage 1 travels only when asked for
        images.update({role: _read(folder, name) for role, name in info["files"].items() if role in IMAGE_ROLES})
        targets[sequence] = TargetResult(
            sequence=sequence, **images,
            metrics={k: _from_number(v) for k, v in info.get("metrics", {}).items()},
            stage1_metrics={k: _from_number(v) for k, v in info.get("stage1_metrics", {}).items()},
            sources=[parse_sequence(s) for s in info.get("sources", [])],
            intensity=float(_from_number(info.get("intensity", "nan"))),
            tumour_region_source=str(info.get("tumour_region_source", "")),
            uncertainty={k: _from_number(v) for k, v in (info.get("uncertainty") or {}).items()})
    reference = entry.get("reference")
    extras = entry.get("extras") or {}
    preparation = entry.get("preparation")
    return SynthesisResult(
        brain_mask=_read(folder, extras["brain_mask"]) if "brain_mask" in extras else None,
        preparation=preparation if isinstance(preparation, dict) else None,
        distribution_check=entry.get("distribution_check") if isinstance(entry.get("distribution_check"), dict)
        else None,
        targets={s: targets[s] for s in SEQUENCES if s in targets},
        inputs=[parse_sequence(s) for s in entry["inputs"]], model_name=entry["model_name"],
        device=entry["device"], timings=dict(entry.get("timings", {})), messages=list(entry.get("messages", [])),
        reference=None if reference is None else parse_sequence(reference))
