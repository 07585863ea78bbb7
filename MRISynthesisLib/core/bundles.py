"""Model bundles and the catalogue of named bundles.

A *bundle* is stage 1 + optional refiner + optional segmenter in a folder whose ``bundle.json``
names the checkpoint files. Bundles come from the packaged catalogue
(``MRISynthesisLib/data/models/<name>/``), from a folder, from one checkpoint file, or from a
reference-layout HF-GAN state dict (stage 1 only). Names in a manifest never lead outside the
bundle's folder.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path, PureWindowsPath
from typing import Any, Mapping

from .checkpoints import (
    KINDS,
    CheckpointError,
    jsonable,
    build_model,
    is_project_checkpoint,
    json_type_name,
    load_reference_generator,
    read_checkpoint,
    save_checkpoint,
)

BUNDLE_FILE = "bundle.json"
DEFAULT_BUNDLE_NAME = "demo"
CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
#: Largest ``bundle.json`` read: the demo bundle's is ~5 KB, so 1 MiB leaves room for any
#: training record while a huge file is refused before it is read into memory.
MAX_MANIFEST_BYTES = 1 << 20
#: ``bundle.json`` fields that must be strings when present.
MANIFEST_TEXT_FIELDS = ("name", "description")


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
        "metadata": jsonable(dict(metadata or {})),
    }
    from .io import write_text

    write_text(json.dumps(manifest, indent=2) + "\n", folder / BUNDLE_FILE)
    return folder


def set_bundle_metadata(folder: str | Path, key: str, value: Any) -> Path:
    """Set ``metadata[key]`` in a bundle folder's ``bundle.json`` (checked first), keeping every other field;
    written atomically. Used to add facts learnt after training, such as the training statistics."""
    from .io import write_text

    folder = Path(folder)
    manifest = _read_manifest(folder)
    manifest.setdefault("metadata", {})[key] = jsonable(value)
    return write_text(json.dumps(manifest, indent=2) + "\n", folder / BUNDLE_FILE)


def _read_manifest(folder: Path) -> dict[str, Any]:
    """A bundle folder's ``bundle.json``, read and checked by :func:`check_manifest`.

    The manifest itself must be a regular file inside the folder (no link out), no larger
    than :data:`MAX_MANIFEST_BYTES`.
    """
    path = folder / BUNDLE_FILE
    real = resolve_bundle_file(folder, BUNDLE_FILE, f"{folder}: file '{BUNDLE_FILE}'")
    try:
        size = real.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"{path}: bundle manifest is {size:,} bytes, more than the "
                                  f"{MAX_MANIFEST_BYTES:,} this software reads (MAX_MANIFEST_BYTES)")
        manifest = json.loads(real.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable bundle manifest ({type(error).__name__})") from error
    except RecursionError as error:  # deeply nested JSON
        raise CheckpointError(f"{path}: unreadable bundle manifest (nested too deeply)") from error
    check_manifest(manifest, path)
    return manifest


def check_manifest(manifest: Any, path: str | Path) -> None:
    """Refuse a ``bundle.json`` of the wrong shape, naming the field and what was found.

    The top level is an object; ``files`` an object mapping known network kinds (stage1 is
    required) to file names that stay inside the folder (:func:`file_name_problem`);
    ``name`` and ``description`` strings and ``metadata`` an object when present.
    """
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: bundle manifest must be a JSON object at the top level, "
                              f"found {json_type_name(manifest)}")
    if "files" not in manifest:
        raise CheckpointError(f"{path}: field 'files' is missing; it must be an object {{kind: file name}}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise CheckpointError(f"{path}: field 'files' must be an object {{kind: file name}}, found {json_type_name(files)}")
    for kind, name in files.items():
        if kind not in KINDS:
            raise CheckpointError(f"{path}: field 'files.{kind[:40]}' names an unknown network kind {kind[:40]!r}; "
                                  f"expected {', '.join(KINDS)}")
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: field 'files.{kind}' must be a file name, found {json_type_name(name)}")
        problem = file_name_problem(name)
        if problem:
            raise CheckpointError(f"{path}: field 'files.{kind}' {problem}")
    if "stage1" not in files:
        raise CheckpointError(f"{path}: bundle manifest names no stage1 checkpoint")
    for field in MANIFEST_TEXT_FIELDS:
        if field in manifest and not isinstance(manifest[field], str):
            raise CheckpointError(f"{path}: field '{field}' must be a string, found {json_type_name(manifest[field])}")
    if "metadata" in manifest and not isinstance(manifest["metadata"], dict):
        raise CheckpointError(f"{path}: field 'metadata' must be an object, found {json_type_name(manifest['metadata'])}")


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain relative file name inside a bundle folder, or None when it is.

    Looks at the text only (the folder is :func:`resolve_bundle_file`'s job): refuses empty
    names, NUL bytes, absolute paths (POSIX or Windows, drive letters included) and ``..``.
    Sub-folders (``weights/stage1.pt``) are fine.
    """
    if not name:
        return "must be a file name, found an empty string"
    if "\0" in name:
        return "must be a file name, found a NUL byte in it"
    windows = PureWindowsPath(name)  # splits on both / and \ and knows drive letters
    if name.startswith("/") or windows.drive or windows.root:
        return f"must be a file name relative to the bundle folder, found the absolute path {name[:200]!r}"
    if ".." in windows.parts:
        return f"must stay inside the bundle folder, found '..' in {name[:200]!r}"
    return None


def resolve_bundle_file(folder: str | Path, name: str, field: str) -> Path:
    """The real path of a file a bundle names, refusing anything that is not a regular file inside ``folder``.

    ``field`` says where the name came from (e.g. ``".../bundle.json: field 'files.stage1'"``)
    and starts every error. Besides :func:`file_name_problem`'s rules, links are followed and
    the real path must lie inside the folder's real path, so a symlink in a downloaded bundle
    cannot make the loader read a file elsewhere; directories, devices and pipes are refused.
    The returned path is the resolved one, so what was checked is what gets opened.
    """
    problem = file_name_problem(name)
    if problem:
        raise CheckpointError(f"{field} {problem}")
    try:
        root = Path(folder).resolve()
        real = (root / name).resolve()
    except (OSError, RuntimeError) as error:  # symlink loops: RuntimeError before Python 3.13, OSError after
        raise CheckpointError(f"{field} names {name[:200]!r}, which cannot be resolved "
                              f"({type(error).__name__})") from error
    if real != root and root not in real.parents:
        raise CheckpointError(f"{field} names {name[:200]!r}, a link to {str(real)[:200]!r} outside the bundle folder")
    if real.is_dir():
        raise CheckpointError(f"{field} names {name[:200]!r}, which is a directory, not a checkpoint file")
    if not real.exists():
        raise CheckpointError(f"{field} names {name[:200]!r}, which is not in {root}")
    if not real.is_file():
        raise CheckpointError(f"{field} names {name[:200]!r}, which is not a regular file")
    return real


def load_bundle_folder(folder: str | Path) -> ModelBundle:
    """Load a bundle folder (``bundle.json`` + checkpoints, or just ``stage1.pt`` ...).

    Every file is resolved by :func:`resolve_bundle_file`: nothing outside the folder is read.
    """
    folder = Path(folder)
    if (folder / BUNDLE_FILE).is_file():
        manifest = _read_manifest(folder)
        fields = {kind: f"{folder / BUNDLE_FILE}: field 'files.{kind}'" for kind in manifest["files"]}
    elif (folder / "stage1.pt").is_file():
        files = {k: f"{k}.pt" for k in KINDS if (folder / f"{k}.pt").is_file()}
        manifest = {"name": folder.name, "description": "", "files": files, "metadata": {}}
        fields = {kind: f"{folder}: file '{kind}.pt'" for kind in files}
    else:
        raise CheckpointError(f"{folder}: not a model bundle (no {BUNDLE_FILE} and no stage1.pt)")
    paths = {kind: resolve_bundle_file(folder, name, fields[kind]) for kind, name in manifest["files"].items()}
    models = {kind: _load_bundle_network(kind, path) for kind, path in paths.items()}
    return ModelBundle(
        name=manifest.get("name") or folder.name,
        stage1=models["stage1"], refiner=models.get("refiner"), segmenter=models.get("segmenter"),
        description=manifest.get("description", ""), source=str(folder),
        metadata=dict(manifest.get("metadata", {})),
    )


def _load_bundle_network(kind: str, path: Path) -> Any:
    """The ``kind`` network of a bundle from its checkpoint file (stage 1 may be in the reference layout)."""
    payload = read_checkpoint(path)
    if not is_project_checkpoint(payload):
        if kind != "stage1":
            raise CheckpointError(f"{path}: not an MRISynthesis {kind} checkpoint")
        return load_reference_generator(payload, path)
    if payload.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {payload.get('kind')} checkpoint, listed as {kind}")
    return build_model(payload, path)


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


def load_segmenter(path: str | Path) -> Any:
    """A tumour segmenter on its own (``mrisynth evaluate --segmenter``): an MRISynthesis segmenter
    checkpoint file, or a folder holding one (a bundle folder whose ``bundle.json`` lists a segmenter,
    or a folder with ``segmenter.pt``).

    Other formats (a MONAI bundle's ``configs/``, FeTS weights, a bare state dict) are refused in one
    line: their network, channel order and output regions are not described anywhere this loader reads.
    """
    path = Path(path)
    if path.is_dir():
        if (path / BUNDLE_FILE).is_file():
            name = _read_manifest(path)["files"].get("segmenter")
            if name is None:
                raise CheckpointError(f"{path / BUNDLE_FILE}: the bundle lists no segmenter (field 'files.segmenter')")
            real = resolve_bundle_file(path, name, f"{path / BUNDLE_FILE}: field 'files.segmenter'")
        elif (path / "segmenter.pt").exists():
            real = resolve_bundle_file(path, "segmenter.pt", f"{path}: file 'segmenter.pt'")
        else:
            raise CheckpointError(f"{path}: no segmenter in this folder (neither {BUNDLE_FILE} nor segmenter.pt)")
        return _load_bundle_network("segmenter", real)
    if not path.exists():
        raise CheckpointError(f"{path}: no such segmenter checkpoint file or folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file or folder")
    payload = read_checkpoint(path)
    if not is_project_checkpoint(payload):
        raise CheckpointError(f"{path}: not an MRISynthesis segmenter checkpoint (MONAI bundle configs, FeTS and "
                              "other foreign weights cannot be read)")
    if payload.get("kind") != "segmenter":
        raise CheckpointError(f"{path}: holds a {str(payload.get('kind'))[:40]} checkpoint, not a segmenter")
    return build_model(payload, path)


def list_bundles(catalogue: str | Path | None = None) -> list[BundleInfo]:
    """Bundles in the packaged catalogue, default first; entries with a broken ``bundle.json`` are skipped."""
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
