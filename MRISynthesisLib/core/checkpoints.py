"""Checkpoint files: one format for every network, written atomically and read defensively.

A checkpoint is a plain dict of config, state dict, sequence order, normalisation, intensity
priors and training provenance, loadable with ``torch.load(weights_only=True)``. Reading one
checks the zip archive's index, the config against limits and the stored weights (on the meta
device) before a network is built, so a broken or hostile file fails in one line and allocates
nothing. HF-GAN state dicts in the public reference layout load here too.
"""
from __future__ import annotations

import json
import math
import numbers
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from ..sequences import SEQUENCES, Sequence

CHECKPOINT_FORMAT = "mrisynthesis-checkpoint"
CHECKPOINT_VERSION = 1
KINDS = ("stage1", "refiner", "segmenter")

#: Most values (parameters + buffers) a checkpoint's network may declare: 5x the paper's
#: 80.0 M-parameter HF-GAN generator, 1.6 GB as float32. Room for wider variants, and a
#: bound on what the loader allocates whatever a (hostile or broken) file's config says.
MAX_PARAMETERS = 400_000_000
#: Largest total uncompressed size of a zip-format checkpoint's members, checked before
#: ``torch.load`` reads any of them: :data:`MAX_PARAMETERS` float32 values (4 bytes each,
#: 1.6 GB) four times over (the weights, an Adam optimiser's two moment buffers and one spare
#: copy, such as an EMA generator, as a reference training checkpoint may carry) plus 64 MiB for
#: the pickle and small members: about 6.5 GB.
MAX_CHECKPOINT_BYTES = 4 * 4 * MAX_PARAMETERS + (64 << 20)
#: Most a zip member may grow on decompression once it is over :data:`MAX_INFLATED_MEMBER_BYTES`:
#: ``torch.save`` stores members uncompressed (ratio 1) and re-zipped float weights shrink by
#: well under 2x, so a big member 20x its compressed size is a zip bomb (zeros deflate ~1000x).
MAX_COMPRESSION_RATIO = 20
#: Members up to this size uncompressed are not judged by their ratio: a small pickle or
#: tensor of zeros may deflate far better than 20x and inflating it costs little.
MAX_INFLATED_MEMBER_BYTES = 64 << 20
#: Largest integer a checkpoint's network config may hold (a width, depth, head count, slice
#: side or block count). The paper's networks top out at 640 channels and 240-pixel slices;
#: anything far above is a broken or hostile file, refused before a network is built.
MAX_CONFIG_SIZE = 4096


#: Stage-1 normalisation recorded in checkpoints so that a bundle states what it expects.
STAGE1_NORMALISATION = {"stage1": "linear [0, p99.5 of brain] -> [-1, 1], background -1",
                        "stage2": "z-score over non-zero voxels"}


class CheckpointError(ValueError):
    """A checkpoint or bundle that cannot be used; the message names the file and the problem."""


def raise_if_interrupted(error: BaseException) -> None:
    """Re-raise a Ctrl-C (or SIGTERM) that reached us wrapped in another exception.

    An interrupt that lands while Python builds a class comes back as a ``RuntimeError`` from
    ``__set_name__``; a broad ``except`` would then report a broken checkpoint instead of exit 130.
    """
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            raise seen
        seen = seen.__cause__ or seen.__context__


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
        "provenance": jsonable(dict(provenance or {})),
    }
    payload.update(jsonable(dict(extra or {})))
    from .io import atomic_path

    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def _model_order(model: Any) -> tuple[Sequence, ...]:
    order = getattr(model, "modality_order", None)
    return tuple(order) if order else SEQUENCES


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so only plain types reach torch.save (weights_only loading)."""
    return json.loads(json.dumps(value, default=str))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``); corrupt files get a one-line error.

    A zip archive is first checked by :func:`check_checkpoint_archive`, so a deflated member
    cannot make ``torch.load`` inflate gigabytes before the network's checks run.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    check_checkpoint_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean the same to the user
        raise_if_interrupted(error)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: checkpoint holds a {type(payload).__name__}, expected a dict")
    return payload


def check_checkpoint_archive(path: str | Path) -> None:
    """Refuse a zip-format checkpoint whose members would inflate past what a checkpoint holds.

    ``torch.load`` allocates each member at the size the archive's central directory states
    and inflates compressed members into it, so a few MB re-zipped with ``ZIP_DEFLATED`` can
    make it allocate and fill gigabytes. Read from the central directory alone (nothing is
    decompressed), one line naming the file and the member refuses: a corrupt archive, a
    member extending past the end of the file, a member over :data:`MAX_INFLATED_MEMBER_BYTES`
    that grows more than :data:`MAX_COMPRESSION_RATIO`-fold, and members totalling more than
    :data:`MAX_CHECKPOINT_BYTES`. Files that are not zip archives (legacy pickled checkpoints,
    read by ``torch.load`` as a stream) pass unchecked.
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except Exception as error:  # BadZipFile, or OSError/ValueError/EOFError from a mangled directory
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt zip archive: "
                              f"{type(error).__name__}: {' '.join(str(error).split())[:200]})") from error
    total = 0
    for member in members:
        name = repr(member.filename[:200])
        if member.header_offset + member.compress_size > size:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt zip archive: member {name} "
                                  f"claims {member.compress_size:,} bytes from offset {member.header_offset:,} "
                                  f"of a {size:,}-byte file)")
        if (member.file_size > MAX_INFLATED_MEMBER_BYTES
                and member.file_size > MAX_COMPRESSION_RATIO * member.compress_size):
            raise CheckpointError(f"{path}: archive member {name} would inflate from {member.compress_size:,} to "
                                  f"{member.file_size:,} bytes, more than {MAX_COMPRESSION_RATIO}x "
                                  "(MAX_COMPRESSION_RATIO): torch.save stores tensors uncompressed, so this is a "
                                  "zip bomb, refused before it is read")
        total += member.file_size
    if total > MAX_CHECKPOINT_BYTES:
        largest = max(members, key=lambda member: member.file_size)
        raise CheckpointError(f"{path}: archive members total {total:,} bytes uncompressed, more than the "
                              f"{MAX_CHECKPOINT_BYTES:,} this software loads (MAX_CHECKPOINT_BYTES); largest member "
                              f"{largest.filename[:200]!r} ({largest.file_size:,} bytes)")


def is_project_checkpoint(payload: Mapping[str, Any]) -> bool:
    """True for files written by :func:`save_checkpoint`."""
    return payload.get("format") == CHECKPOINT_FORMAT


def build_model(payload: Mapping[str, Any], path: str | Path) -> Any:
    """Rebuild the network of a project checkpoint and load its weights strictly.

    Everything is checked before a real parameter is allocated: the header, the config's
    types and sizes, the network's size (counted on PyTorch's ``meta`` device, which allocates
    nothing) against :data:`MAX_PARAMETERS`, every tensor's name and shape against the network,
    and that every weight is finite. A file therefore cannot make the loader allocate more
    than its own tensors, and NaN/Inf weights never reach synthesis.
    """
    kind = _check_header(payload, path)
    config = _read_config(payload, path, kind)
    state = _state_tensors(payload.get("state_dict"), path, "state_dict")
    layout = _meta_layout(kind, config, path)
    _check_size(sum(tensor.numel() for tensor in layout.values()), path, f"{kind} config declares a network of")
    _check_layout(layout, state, path, kind)
    check_finite(state, path)
    priors = _read_intensity_priors(payload, path) if kind == "stage1" else None
    model = _network_factory(kind)[1](config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # checked above; kept so that a torch-side refusal stays one line
        first = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{path}: {kind} checkpoint does not match its network ({first})") from error
    if priors:
        model.intensity_priors = priors
    model.eval()
    return model


def _check_header(payload: Mapping[str, Any], path: str | Path) -> str:
    """The checkpoint's kind, after checking its ``kind`` and ``version`` fields."""
    version = payload.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: field 'version' must be an integer, found {json_type_name(version)}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this software")
    kind = payload.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {kind!r}")
    return kind


def _network_factory(kind: str) -> tuple[Any, Callable[[Any], Any]]:
    """The config class of a network kind and the function that builds the network from a config."""
    if kind == "stage1":
        from ..models.hfgan import HFGANConfig, HFGANGenerator

        return HFGANConfig, HFGANGenerator
    if kind == "refiner":
        from ..models.refiner import Refiner, RefinerConfig

        return RefinerConfig, Refiner
    from ..models.segmenter import SegmenterConfig, build_segmenter

    return SegmenterConfig, build_segmenter


def _read_config(payload: Mapping[str, Any], path: str | Path, kind: str) -> Any:
    """The network config of a checkpoint; one-line error naming the field for a wrong type or absurd size.

    Types are checked first (the size check needs numbers), then every integer against
    :data:`MAX_CONFIG_SIZE`, then the config class's own rules.
    """
    data = payload.get("config")
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: field 'config' must be an object of network sizes, found {json_type_name(data)}")
    config_class = _network_factory(kind)[0]
    try:
        config_class.check_dict(data)
    except ValueError as error:
        raise _config_error(path, kind, error) from error
    _check_config_sizes(data, path)
    try:
        return config_class.from_dict(data)
    except (ValueError, TypeError) as error:  # every config class raises a ValueError (HFGANError, ...)
        raise _config_error(path, kind, error) from error


def _config_error(path: str | Path, kind: str, error: Exception) -> CheckpointError:
    """One-line error for a config its class refuses (the class's message names the field)."""
    return CheckpointError(f"{path}: invalid {kind} config ({' '.join(str(error).split())[:300]})")


def _check_config_sizes(data: Mapping[str, Any], path: str | Path) -> None:
    """Refuse any integer in a config outside ``0..MAX_CONFIG_SIZE`` (lists included), naming the field."""
    for key, value in data.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, numbers.Integral) and not isinstance(item, bool) and not 0 <= item <= MAX_CONFIG_SIZE:
                raise CheckpointError(
                    f"{path}: field 'config.{key}' holds {item}, outside 0..{MAX_CONFIG_SIZE} (MAX_CONFIG_SIZE)")


def _meta_layout(kind: str, config: Any, path: str | Path) -> dict[str, Any]:
    """Every tensor of the network ``config`` makes, by name, built on the meta device (shapes and dtypes only).

    ``torch.device("meta")`` makes the constructors allocate nothing, so a config declaring a
    huge network costs nothing to inspect.
    """
    import torch

    try:
        with torch.device("meta"):
            model = _network_factory(kind)[1](config)
    except Exception as error:  # a config that passed its own checks but cannot build: any cause, one line
        raise_if_interrupted(error)
        raise CheckpointError(f"{path}: invalid {kind} config ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:200]})") from error
    return dict(model.state_dict())


def _check_size(values: int, path: str | Path, what: str) -> None:
    """Refuse a network of more than :data:`MAX_PARAMETERS` values."""
    if values > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: {what} {values:,} values, more than the {MAX_PARAMETERS:,} "
                              "this software loads (MAX_PARAMETERS)")


def _state_tensors(state: Any, path: str | Path, field: str) -> dict[str, Any]:
    """``state`` as a dict of plain CPU tensors by name; one-line error naming the first entry that is not."""
    import torch

    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: field '{field}' must map tensor names to tensors, found {json_type_name(state)}")
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: field '{field}' has a {type(name).__name__} key, not a tensor name")
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry '{name[:200]}' of field '{field}' is {json_type_name(tensor)}, "
                                  "not a tensor")
        if tensor.layout != torch.strided or tensor.device.type != "cpu":
            raise CheckpointError(f"{path}: tensor '{name[:200]}' in '{field}' is a {tensor.layout} tensor on "
                                  f"{tensor.device.type}, not a plain CPU tensor")
    return dict(state)


def _check_layout(layout: Mapping[str, Any], state: Mapping[str, Any], path: str | Path, kind: str) -> None:
    """Refuse a state dict whose tensor names or shapes differ from the network's (``layout``), naming the first.

    Floating-point tensors of the network must be floating point in the file too (an integer
    or complex tensor there would be silently converted by ``load_state_dict``).
    """
    missing = [name for name in layout if name not in state]
    unexpected = [name for name in state if name not in layout]
    misshaped = [name for name in layout if name in state and state[name].shape != layout[name].shape]
    wrong_type = [name for name in layout if name in state and layout[name].is_floating_point()
                  and not state[name].is_floating_point()]
    if misshaped:
        name = misshaped[0]
        first = (f"tensor '{name}' has shape {list(state[name].shape)} in the file, "
                 f"the config makes {list(layout[name].shape)}")
    elif missing:
        first = f"tensor '{missing[0]}' of the network is not in the file"
    elif unexpected:
        first = f"tensor '{unexpected[0]}' in the file is not in the network"
    elif wrong_type:
        first = f"tensor '{wrong_type[0]}' holds {state[wrong_type[0]].dtype} values, not floating point"
    else:
        return
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} wrongly shaped"
    raise CheckpointError(f"{path}: {kind} checkpoint does not match its network ({counts}; first: {first})")


def check_finite(state: Mapping[str, Any], path: str | Path) -> None:
    """Refuse weights holding NaN or Inf: such a network only ever produces blank or garbage volumes.

    One line naming the file, how many tensors and values are not finite, and the first tensor.
    """
    import torch

    bad_tensors, bad_values, first = 0, 0, None
    for name, tensor in state.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue  # integers cannot be NaN or Inf
        count = tensor.numel() - int(torch.isfinite(tensor).sum())
        if count:
            bad_tensors, bad_values = bad_tensors + 1, bad_values + count
            first = first or name
    if bad_tensors:
        raise CheckpointError(f"{path}: weights are not finite: {bad_values:,} NaN/Inf values in {bad_tensors} of "
                              f"{len(state)} tensors, first in '{first}'")


def _read_intensity_priors(payload: Mapping[str, Any], path: str | Path) -> dict[Sequence, tuple[float, float]]:
    """A stage-1 checkpoint's intensity priors {sequence: (mean, std)} (empty when it has none), checked."""
    priors = payload.get("intensity_priors")
    if not priors:
        return {}
    if not isinstance(priors, Mapping):
        raise CheckpointError(f"{path}: field 'intensity_priors' must be an object {{sequence: [mean, std]}}, "
                              f"found {json_type_name(priors)}")
    checked = {}
    for key, value in priors.items():
        try:
            sequence = Sequence(key)
        except ValueError:
            raise CheckpointError(f"{path}: field 'intensity_priors' names an unknown sequence {str(key)[:40]!r}"
                                  ) from None
        numbers = list(value) if isinstance(value, (list, tuple)) else []
        if len(numbers) != 2 or not all(_is_finite_number(n) for n in numbers):
            raise CheckpointError(f"{path}: field 'intensity_priors.{sequence.value}' must be two finite numbers "
                                  f"[mean, std], found {str(value)[:60]}")
        checked[sequence] = (float(numbers[0]), float(numbers[1]))
    return checked


def _is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_reference_generator(payload: Mapping[str, Any], path: str | Path) -> Any:
    """An HF-GAN generator from a state dict in the public reference layout (optionally nested).

    The tensors are checked before the network is built: at most :data:`MAX_PARAMETERS`
    values and all finite (the layout itself is checked on the meta device by
    :meth:`HFGANGenerator.from_reference_state_dict`).
    """
    from ..models.hfgan import HFGANGenerator

    state = find_state_dict(payload)
    if state is None:
        raise CheckpointError(f"{path}: neither an MRISynthesis checkpoint nor an HF-GAN state dict")
    state = _state_tensors(state, path, "state dict")
    _check_size(sum(tensor.numel() for tensor in state.values()), path, "HF-GAN state dict holds")
    check_finite(state, path)
    try:
        model = HFGANGenerator.from_reference_state_dict(state)
    except ValueError as error:
        raise CheckpointError(f"{path}: {' '.join(str(error).split())}") from error
    model.eval()
    return model


#: Where training code usually keeps the generator's tensors inside a checkpoint.
GENERATOR_STATE_KEYS = ("generator", "G", "netG", "gen", "model", "state_dict", "model_state_dict")
#: How deep :func:`find_state_dict` looks: training checkpoints nest the tensors one or two
#: levels down; the bound also stops a self-referencing dict (pickle allows them) from recursing forever.
STATE_DICT_DEPTH = 8


def find_state_dict(payload: Mapping[str, Any], keys: tuple[str, ...] = GENERATOR_STATE_KEYS,
                    depth: int = STATE_DICT_DEPTH) -> Mapping[str, Any] | None:
    """The tensor dict inside a checkpoint: the payload itself, or found under ``keys`` (depth first)."""
    import torch

    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    if depth <= 0:
        return None
    for key in keys:
        value = payload.get(key)
        if isinstance(value, Mapping):
            found = find_state_dict(value, keys, depth - 1)
            if found is not None:
                return found
    return None


def json_type_name(value: Any) -> str:
    """What a value is, in the words of JSON (``"a list"``, ``"null"``, ...), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"
