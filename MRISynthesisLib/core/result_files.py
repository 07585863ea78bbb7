"""Writing a synthesis result to disk: NIfTI volumes by role and a JSON report.

All files of one run are first written into a hidden staging folder inside the output
folder and moved into place only when every one of them was written, so an interrupted
run leaves the output folder as it was.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Tuple

import SimpleITK as sitk

from .. import __version__
from .io import InputError, write_image, write_text
from .ood_check import report_fields
from ..sequences import SEQUENCES, Sequence

#: Output roles, their file-name suffixes and the attribute of TargetResult that holds them.
ROLES: tuple[tuple[str, str, str], ...] = (
    ("synthetic", "", "synthetic"),
    ("stage1", "-stage1", "stage1"),
    ("refinement_map", "-refinement", "refinement_map"),
    ("tumour_map", "-tumor-map", "tumour_map"),
    ("error_map", "-error-map", "error_map"),
    ("uncertainty_map", "-uncertainty", "uncertainty_map"),
)


class OutputConflict(InputError):
    """The output folder holds an earlier run's files, or an output would replace an input."""


#: Characters a case name may not contain: it becomes part of file names inside the output folder.
_FORBIDDEN_IN_NAMES = re.compile(r"[/\\\x00-\x1f\x7f]")


#: Longest case name in bytes: it prefixes file names ("-t1c-tumor-map.nii.gz") that also get
#: staging prefixes and suffixes, and file names stop at 255 bytes on common file systems.
MAX_CASE_NAME_BYTES = 128


def check_case_name(case_id: str, source: str = "case name") -> str:
    """Return ``case_id`` if it can name files inside one folder, else raise naming ``source``.

    Case names come from users (``--case``) and from files; ``../x`` or an absolute path would
    put the results outside the output folder, a leading dot would hide them, and a very long
    one would fail only when the files are written, after the whole synthesis.
    """
    text = str(case_id)
    if not text.strip():
        raise InputError(f"{source}: empty case name")
    if _FORBIDDEN_IN_NAMES.search(text) or (os.altsep and os.altsep in text):
        raise InputError(f"{source} {text!r}: a case name may not contain path separators or control characters")
    if text.startswith("."):
        raise InputError(f"{source} {text!r}: a case name may not start with '.' (files would be hidden, or "
                         "'..' would leave the output folder)")
    if len(text.encode("utf-8")) > MAX_CASE_NAME_BYTES:
        raise InputError(f"{source} {text[:20]!r}...: a case name may be at most {MAX_CASE_NAME_BYTES} bytes long "
                         "(it prefixes every output file name)")
    return text


def output_path(folder: Path, name: str) -> Path:
    """``folder / name`` for a plain file name; a name that would leave ``folder`` is refused."""
    candidate = Path(name)
    if (candidate.name != name or name in ("", ".", "..") or candidate.is_absolute()
            or _FORBIDDEN_IN_NAMES.search(name)):
        raise InputError(f"{name!r}: not a plain file name; outputs stay inside {folder}")
    return Path(folder) / name


def case_family(case_id: str) -> Callable[[str], bool]:
    """File names that belong to one case's result set (volumes by role, report, validation tables)."""
    sequences = "|".join(s.value for s in SEQUENCES)
    roles = "|".join(re.escape(suffix) for _, suffix, _ in ROLES if suffix)
    pattern = re.compile(rf"{re.escape(case_id)}-(?:(?:{sequences})(?:{roles})?\.nii\.gz|report\.json|"
                         rf"validation\.(?:csv|md))")
    return lambda name: pattern.fullmatch(name) is not None


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name one file or folder (same real path, or hard links to one inode)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


#: Header/metadata text by which this tool recognises its own earlier files (never an acquired scan).
OWN_MARKS = ("SYNTHETIC", "MRISynthesis")


def png_metadata() -> dict:
    """PNG text chunks that mark a figure as made by this tool (see :func:`is_own_output`)."""
    return {"Software": f"{OWN_MARKS[1]} {__version__}"}


def is_own_output(path: Path) -> bool:
    """True only for a file this tool wrote: an image whose header description says SYNTHETIC or
    MRISynthesis, a JSON report of MRISynthesis, a PNG made by it, or a table it marked.

    Only such files may be replaced as "an earlier run's results"; an acquired scan that happens
    to match an output name is never one of them.
    """
    from .io import image_description, is_image_file

    path = Path(path)
    name = path.name.lower()
    try:
        if is_image_file(name):
            description = image_description(path)
            return description.startswith(OWN_MARKS[0]) or OWN_MARKS[1] in description
        if name.endswith(".json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and str(data.get("software", "")).startswith(OWN_MARKS[1])
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as image:
                return str(image.info.get("Software", "")).startswith(OWN_MARKS[1])
        if name.endswith(".md"):
            return OWN_MARKS[1] in path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
        if name.endswith(".csv"):  # a CSV has no room for a mark: its Markdown twin carries it
            return is_own_output(path.with_suffix(".md"))
    except (OSError, ValueError, IndexError, RuntimeError):
        return False
    return False


@dataclasses.dataclass
class OutputPlan:
    """Where one run writes, checked before the run starts and again when its files are committed.

    The run's files are written into a hidden staging folder and committed together. An earlier
    run's files of the same set (names in ``family`` that this tool wrote, see
    :func:`is_own_output`) are replaced in the same step with ``overwrite`` and refused without
    it, so the folder never mixes two runs. Inputs, and any file this tool did not write, are
    never replaced or deleted, whatever the output folder and with or without ``overwrite``.

    A set whose file names follow no pattern of their own (an evaluation's volumes, a demo's
    case) names a ``manifest``: a hidden JSON file, committed with the set, that lists its
    files, so the next run replaces exactly that set and leaves other runs' files alone.
    """

    output_dir: Path
    family: Callable[[str], bool]
    inputs: Tuple[Path, ...] = ()
    overwrite: bool = False
    what: str = "results"
    manifest: str = ""

    def check(self, names: Iterable[str] = ()) -> None:
        """Refuse before any work: outputs into an input folder, onto an input or a foreign file, or
        over an earlier set without ``overwrite``."""
        folder = Path(self.output_dir)
        for source in self.inputs:
            if source.is_dir() and (same_file(folder, source) or source.resolve() in folder.resolve().parents):
                raise OutputConflict(f"{folder}: is inside the input folder {source}; choose another --output-dir")
        for name in names:
            path = output_path(folder, name)
            self._refuse_input(path)
            if path.exists() and not is_own_output(path):
                raise OutputConflict(f"{path}: exists and was not written by MRISynthesis; it is never replaced "
                                     "(choose another --output-dir)")
        stale = self.stale(names)
        if stale and not self.overwrite:
            listed = ", ".join(sorted(path.name for path in stale)[:4]) + (", ..." if len(stale) > 4 else "")
            raise OutputConflict(f"{folder}: already holds {self.what} of an earlier run ({listed}); use --overwrite "
                                 "to replace that set, or choose another --output-dir")

    def _refuse_input(self, path: Path) -> None:
        for source in self.inputs:
            if same_file(path, source):
                raise OutputConflict(f"{path}: is an input of this run; outputs never replace inputs (choose "
                                     "another --output-dir)")

    def stale(self, names: Iterable[str] = ()) -> List[Path]:
        """An earlier run's files in the folder: this set's family or the given names, written by this
        tool (never an input, never a file this tool did not write)."""
        folder = Path(self.output_dir)
        if not folder.is_dir():
            return []
        wanted = set(names) | set(self._listed_in_manifest())
        found = []
        for entry in sorted(folder.iterdir()):
            if not (entry.name in wanted or self.family(entry.name)) or not entry.is_file():
                continue
            if any(same_file(entry, source) for source in self.inputs) or not is_own_output(entry):
                continue
            found.append(entry)
        return found

    def _listed_in_manifest(self) -> List[str]:
        """Plain file names the earlier set's manifest lists (none without a readable manifest of ours)."""
        if not self.manifest:
            return []
        path = Path(self.output_dir) / self.manifest
        if not path.is_file() or not is_own_output(path):
            return []
        try:
            files = json.loads(path.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [name for name in files if isinstance(name, str) and Path(name).name == name and name not in (".", "..")]

    def _write_manifest(self, staging: Path, names: List[str]) -> None:
        data = {"software": f"{OWN_MARKS[1]} {__version__}", "set": self.what, "files": sorted(names)}
        (staging / self.manifest).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """Yield a staging folder; on success commit its files as one set, else delete it (and the
        output folder too when this run created it and it stayed empty)."""
        folder = Path(self.output_dir)
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        committed = False
        try:
            staging = Path(tempfile.mkdtemp(prefix=".mrisynth-staging-", dir=folder))
            try:
                yield staging
                self._commit(staging)
                committed = True
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            if created and not committed:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # succeeds only when empty

    def _commit(self, staging: Path) -> None:
        """Swap the earlier set out and the new one in, with SIGINT/SIGTERM held until it is done."""
        names = [entry.name for entry in sorted(staging.iterdir())]
        if self.manifest:
            self._write_manifest(staging, names)
            names.append(self.manifest)
        with deferred_signals():
            self.check(names)
            folder = Path(self.output_dir)
            trash = Path(tempfile.mkdtemp(prefix=".mrisynth-replaced-", dir=folder))
            moved_out: List[str] = []
            moved_in: List[str] = []
            try:
                for path in self.stale(names):
                    moved_out.append(path.name)
                    os.replace(path, trash / path.name)
                for name in names:
                    moved_in.append(name)
                    os.replace(staging / name, folder / name)
            except BaseException:
                _roll_back(folder, staging, trash, moved_in, moved_out)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)


def _roll_back(folder: Path, staging: Path, trash: Path, moved_in: List[str], moved_out: List[str]) -> None:
    """Put the output folder back as it was after a failed commit (names are recorded before each move)."""
    for name in moved_in:
        if (folder / name).exists() and not (staging / name).exists():
            os.replace(folder / name, staging / name)
    for name in moved_out:
        if (trash / name).exists():
            os.replace(trash / name, folder / name)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP during a short critical step (the commit); they are raised right after.

    Blocking the signal mask would hold them in the calling thread only: torch's worker threads
    would still take a process-directed signal, and Python then runs the handler in the main
    thread at once. So the handlers themselves are swapped for ones that only remember the
    signal. Only the main thread may set handlers (elsewhere this does nothing).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[int] = []
    held = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
    previous = {number: signal.signal(number, lambda signum, frame: pending.append(signum)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(pending):
            signal.raise_signal(number)


def description_for(role: str, sequence: Sequence, model_name: str, inputs: list) -> str:
    """Header description: says SYNTHETIC, what the volume is, the model and the inputs."""
    sources = "+".join(s.short_name for s in inputs)
    what = {"synthetic": "", "stage1": " stage1", "refinement_map": " refinement map",
            "tumour_map": " tumour map", "error_map": " error map", "uncertainty_map": " uncertainty map"}[role]
    return f"SYNTHETIC {sequence.short_name}{what} from {sources} by MRISynthesis {model_name}"


def write_result(result, folder: Path, case_id: str, final_dir: Optional[Path] = None) -> dict:
    """Write every image of ``result`` into ``folder``; returns ``{sequence: {role: file name}}``."""
    written: dict = {}
    for sequence, target in result.targets.items():
        files = {}
        for role, suffix, attribute in ROLES:
            image: Optional[sitk.Image] = getattr(target, attribute)
            if image is None:
                continue
            name = f"{check_case_name(case_id)}-{sequence.value}{suffix}.nii.gz"
            write_image(image, output_path(folder, name),
                        description_for(role, sequence, result.model_name, target.sources))
            files[role] = str(output_path(final_dir or folder, name))
        written[sequence.value] = files
    return written


def build_report(result, case_id: str, input_files: Mapping, written: Mapping, bundle) -> dict:
    """The JSON report: inputs, model, device, timings, outputs by role, metrics and log lines."""
    targets = {}
    for sequence, target in result.targets.items():
        targets[sequence.value] = {
            "sequence": sequence.display_name,
            "synthesised_from": [s.value for s in target.sources],
            "intensity_encoding": target.intensity if math.isfinite(target.intensity) else None,  # None: no code
            "tumour_region": target.tumour_region_source or None,
            "outputs": written.get(sequence.value, {}),
            "metrics": _clean(target.metrics) or None,
            "stage1_metrics": _clean(target.stage1_metrics) or None,
            "uncertainty": _clean(getattr(target, "uncertainty", None) or {}) or None,
        }
    return {
        "software": f"MRISynthesis {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "case": case_id,
        "synthetic": True,
        "notice": "Synthetic images: not acquired data, not for diagnosis.",
        "inputs": {s.value: str(p) for s, p in input_files.items()},
        "reference_grid": result.reference.value if result.reference else None,
        "model": {"name": bundle.name, "stages": bundle.stages, "source": bundle.source,
                  "description": bundle.description},
        "device": result.device,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "targets": targets,
        "messages": list(result.messages),
        **report_fields(getattr(result, "distribution_check", None)),
    }


def _clean(values: Mapping) -> dict:
    """Metrics with NaN/inf as None so the JSON is standard."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def write_report(report: Mapping, path: Path) -> Path:
    """Write the JSON report atomically."""
    return write_text(json.dumps(report, indent=2) + "\n", path)
