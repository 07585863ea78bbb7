"""What the Slicer module and the worker process say to each other: the request file and the event lines.

The module writes ``request.json`` into a private folder beside the input volumes and starts
``python -m MRISynthesisLib.worker request.json``. The worker answers on its standard output
with one JSON object per line (:func:`event_line`): ``progress`` (fraction, message), ``log``
(message), ``failed`` (one-line reason, details) and ``result`` (the folder its results are
in). Anything else it prints goes to standard error, which the module keeps as the log's
last lines. JSON lines rather than pickles: the two sides may run different Python builds,
and a line that is not ours is simply not an event.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, Optional

from ..metrics.protocols import PROTOCOLS as METRICS_PROTOCOLS
from ..sequences import SEQUENCES, Sequence, UnknownSequenceError, parse_sequence

__all__ = ["PROTOCOL_VERSION", "JOB_KINDS", "RequestError", "WorkerRequest", "read_request", "write_request",
           "event_line", "parse_event_line", "EVENT_KINDS"]

#: Changes whenever a field's meaning changes; the worker refuses a request of another version.
PROTOCOL_VERSION = 1
#: What a worker can be asked to do.
JOB_KINDS = ("synthesis", "validation")
#: Event kinds a worker prints.
EVENT_KINDS = ("progress", "log", "failed", "result")
#: More CPU threads than any machine this runs on has.
MAX_CPU_THREADS = 1024
#: Most uncertainty samples a request may ask for (each costs about one refinement).
MAX_UNCERTAINTY_SAMPLES = 64
#: Key that marks a line as one of ours.
_MARK = "mrisynth"


class RequestError(ValueError):
    """A request file the worker cannot run: names the file and the field."""


@dataclasses.dataclass
class WorkerRequest:
    """One job for a worker process: which input files, what to make of them, with which model where.

    ``inputs`` maps each acquired sequence to an image file name inside the request's folder
    (the module writes NRRD, which keeps the geometry exactly). ``model`` is a catalogue name
    or a path (None: the default bundle). ``cpu_threads`` caps torch's CPU threads (the module
    leaves one core to Slicer); None lets the engine choose.
    """

    kind: str
    inputs: dict
    model: Optional[str] = None
    device: str = "auto"
    tumour_maps: bool = True
    targets: Optional[list] = None
    cpu_threads: Optional[int] = None
    results_folder: str = "results"
    #: Prepare the study first (clinical studies): brain mask file in the folder (or None), backend, N4.
    prepare: bool = False
    brain_mask: Optional[str] = None
    brain_extraction: str = "mask"
    bias_correction: bool = False
    #: Send the stage-1 volumes back too (the module asks only when it shows them: less to write and read).
    keep_stage1: bool = True
    #: Scoring protocol of a validation's metrics (``brain`` or ``brasyn``; see ``metrics.protocols``).
    metrics_protocol: str = "brain"
    #: Samples of the uncertainty map per target (0: no map; see ``core.uncertainty``).
    uncertainty_samples: int = 0

    def to_json(self) -> dict:
        """The request as written to the file (sequences by their BraTS suffix)."""
        return {
            "version": PROTOCOL_VERSION,
            "kind": self.kind,
            "inputs": {Sequence(key).value: str(name) for key, name in self.inputs.items()},
            "model": None if self.model is None else str(self.model),
            "device": self.device,
            "tumour_maps": bool(self.tumour_maps),
            "targets": None if self.targets is None else [parse_sequence(t).value for t in self.targets],
            "cpu_threads": self.cpu_threads,
            "results_folder": self.results_folder,
            "prepare": bool(self.prepare),
            "brain_mask": None if self.brain_mask is None else Path(self.brain_mask).name,
            "brain_extraction": self.brain_extraction,
            "bias_correction": bool(self.bias_correction),
            "keep_stage1": bool(self.keep_stage1),
            "metrics_protocol": self.metrics_protocol,
            "uncertainty_samples": int(self.uncertainty_samples),
        }


def write_request(request: WorkerRequest, path: Path) -> Path:
    """Write ``request`` as JSON to ``path`` (the worker reads exactly this)."""
    path = Path(path)
    path.write_text(json.dumps(request.to_json(), indent=2), encoding="utf-8")
    return path


def read_request(path: Path) -> WorkerRequest:
    """The request in ``path``, every field checked; a bad one is a one-line :class:`RequestError`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RequestError(f"{str(path)!r}: cannot read the request ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:
        raise RequestError(f"{path}: not a JSON request ({type(error).__name__})") from None
    if not isinstance(data, Mapping):
        raise RequestError(f"{path}: a request is a JSON object, got {type(data).__name__}")

    def bad(field: str, what: str) -> RequestError:
        return RequestError(f"{path}: field {field!r} {what}")

    version = data.get("version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise bad("version", f"is {data.get('version')!r}; this worker reads version {PROTOCOL_VERSION}")
    kind = data.get("kind")
    if kind not in JOB_KINDS:
        raise bad("kind", f"is {kind!r}; expected one of {', '.join(JOB_KINDS)}")
    inputs = _read_inputs(data.get("inputs"), path.parent, bad)
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise bad("model", "must be a catalogue name, a path or null")
    device = data.get("device", "auto")
    if not isinstance(device, str) or not device.strip():
        raise bad("device", "must be a device name such as 'auto', 'cpu', 'cuda' or 'mps'")
    tumour_maps = data.get("tumour_maps", True)
    if not isinstance(tumour_maps, bool):
        raise bad("tumour_maps", f"must be true or false, got {tumour_maps!r}")
    targets = data.get("targets")
    if targets is not None:
        if not isinstance(targets, list) or not targets:
            raise bad("targets", "must be a non-empty list of sequence names or null")
        try:
            targets = [parse_sequence(t) for t in targets]
        except (UnknownSequenceError, TypeError, ValueError) as error:
            raise bad("targets", f"holds an unknown sequence ({error})") from None
    threads = data.get("cpu_threads")
    if threads is not None and (type(threads) is not int or not 1 <= threads <= MAX_CPU_THREADS):
        raise bad("cpu_threads", f"must be a whole number from 1 to {MAX_CPU_THREADS} or null, got {threads!r}")
    results_folder = data.get("results_folder", "results")
    if not _plain_name(results_folder) or results_folder == path.name or \
            any(results_folder == p.name for p in inputs.values()):
        raise bad("results_folder", "must be a plain folder name inside the request's folder, not a file of it")
    flags = {}
    for field in ("prepare", "bias_correction", "keep_stage1"):
        flags[field] = data.get(field, field == "keep_stage1")
        if not isinstance(flags[field], bool):
            raise bad(field, f"must be true or false, got {flags[field]!r}")
    extraction = data.get("brain_extraction", "mask")
    if extraction not in ("mask", "hd-bet"):
        raise bad("brain_extraction", f"is {extraction!r}; expected mask or hd-bet")
    metrics_protocol = data.get("metrics_protocol", "brain")
    if metrics_protocol not in METRICS_PROTOCOLS:
        raise bad("metrics_protocol", f"is {metrics_protocol!r}; expected {' or '.join(METRICS_PROTOCOLS)}")
    samples = data.get("uncertainty_samples", 0)
    if type(samples) is not int or samples < 0 or samples == 1 or samples > MAX_UNCERTAINTY_SAMPLES:
        raise bad("uncertainty_samples", f"must be 0 or a whole number from 2 to {MAX_UNCERTAINTY_SAMPLES}, "
                                         f"got {samples!r}")
    mask = data.get("brain_mask")
    if mask is not None and not _plain_name(mask):
        raise bad("brain_mask", "must be a file name inside the request's folder or null")
    return WorkerRequest(kind=kind, inputs=inputs, model=model, device=device, tumour_maps=tumour_maps,
                         targets=targets, cpu_threads=threads, results_folder=results_folder,
                         prepare=flags["prepare"], brain_mask=None if mask is None else str(path.parent / mask),
                         brain_extraction=extraction, bias_correction=flags["bias_correction"],
                         keep_stage1=flags["keep_stage1"], metrics_protocol=metrics_protocol,
                         uncertainty_samples=samples)


def _plain_name(name: Any) -> bool:
    """A file or folder name inside one folder: no separator, no ``.``/``..``, no control character."""
    return (isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..")
            and not any(ord(c) < 32 for c in name))


def _read_inputs(value: Any, folder: Path, bad) -> dict:
    """``{Sequence: path}`` of the request's input files; each must be a plain name inside its folder."""
    if not isinstance(value, Mapping) or not value:
        raise bad("inputs", "must map sequence names to image files")
    inputs: dict = {}
    for key, name in value.items():
        try:
            sequence = parse_sequence(key)
        except (UnknownSequenceError, TypeError, ValueError) as error:
            raise bad("inputs", f"names an unknown sequence ({error})") from None
        if sequence in inputs:
            raise bad("inputs", f"gives {sequence.display_name} twice")
        if not _plain_name(name):
            raise bad(f"inputs.{sequence.value}", "must be a file name inside the request's folder")
        inputs[sequence] = folder / name
    return {s: inputs[s] for s in SEQUENCES if s in inputs}


def event_line(kind: str, **fields: Any) -> str:
    """One event as the single JSON line the worker prints (no newline inside)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return json.dumps({_MARK: PROTOCOL_VERSION, "event": kind, **fields}, ensure_ascii=True)


def parse_event_line(line: str) -> Optional[dict]:
    """The event a worker line holds, or None when the line is not one of ours (stray library output).

    A ``progress`` event's fraction is clipped to [0, 1]; an event missing its fields is not
    an event.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get(_MARK) != PROTOCOL_VERSION or data.get("event") not in EVENT_KINDS:
        return None
    kind = data["event"]
    if kind == "progress":
        fraction = data.get("fraction")
        if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not math.isfinite(fraction):
            return None
        data["fraction"] = min(max(float(fraction), 0.0), 1.0)
    for field in {"progress": ("message",), "log": ("message",), "failed": ("reason",),
                  "result": ("folder",)}[kind]:
        if not isinstance(data.get(field), str):
            return None
    return data
