"""Writing a synthesis result to disk: NIfTI volumes by role, a JSON report, metric tables.

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

from . import __version__
from .io import InputError, write_image, write_text
from .sequences import SEQUENCES, Sequence

#: Output roles, their file-name suffixes and the attribute of TargetResult that holds them.
ROLES: tuple[tuple[str, str, str], ...] = (
    ("synthetic", "", "synthetic"),
    ("stage1", "-stage1", "stage1"),
    ("refinement_map", "-refinement", "refinement_map"),
    ("tumour_map", "-tumor-map", "tumour_map"),
    ("error_map", "-error-map", "error_map"),
)

METRIC_COLUMNS = ("ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume")


class OutputConflict(InputError):
    """The output folder holds an earlier run's files, or an output would replace an input."""


#: Characters a case name may not contain: it becomes part of file names inside the output folder.
_FORBIDDEN_IN_NAMES = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_case_name(case_id: str, source: str = "case name") -> str:
    """Return ``case_id`` if it can name files inside one folder, else raise naming ``source``.

    Case names come from users (``--case``) and from files; ``../x`` or an absolute path would
    put the results outside the output folder, a leading dot would hide them.
    """
    text = str(case_id)
    if not text.strip():
        raise InputError(f"{source}: empty case name")
    if _FORBIDDEN_IN_NAMES.search(text) or (os.altsep and os.altsep in text):
        raise InputError(f"{source} {text!r}: a case name may not contain path separators or control characters")
    if text.startswith("."):
        raise InputError(f"{source} {text!r}: a case name may not start with '.' (files would be hidden, or "
                         "'..' would leave the output folder)")
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


@dataclasses.dataclass
class OutputPlan:
    """Where one run writes, checked before the run starts and again when its files are committed.

    The run's files are written into a hidden staging folder and committed together: with
    ``overwrite`` the earlier files of the same set (``family``) are swapped out in the same
    step, so the folder never mixes two runs; without it, an earlier set is refused. Inputs
    are never replaced and never written into, whatever the output folder is.
    """

    output_dir: Path
    family: Callable[[str], bool]
    inputs: Tuple[Path, ...] = ()
    overwrite: bool = False
    what: str = "results"

    def check(self, names: Iterable[str] = ()) -> None:
        """Refuse before any work: outputs into an input folder, onto an input, or over an earlier set."""
        folder = Path(self.output_dir)
        for source in self.inputs:
            if source.is_dir() and (same_file(folder, source) or source.resolve() in folder.resolve().parents):
                raise OutputConflict(f"{folder}: is inside the input folder {source}; choose another --output-dir")
        for name in names:
            self._refuse_input(output_path(folder, name))
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
        """Files of an earlier run in the folder: this set's family or the given names, never an input."""
        folder = Path(self.output_dir)
        if not folder.is_dir():
            return []
        wanted = set(names)
        found = []
        for entry in sorted(folder.iterdir()):
            if not (entry.name in wanted or self.family(entry.name)) or entry.is_dir():
                continue
            if any(same_file(entry, source) for source in self.inputs):
                continue
            found.append(entry)
        return found

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """Yield a staging folder; on success commit its files as one set, else delete it."""
        folder = Path(self.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".mrisynth-staging-", dir=folder))
        try:
            yield staging
            self._commit(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, staging: Path) -> None:
        """Swap the earlier set out and the new one in, with SIGINT/SIGTERM held until it is done."""
        names = [entry.name for entry in sorted(staging.iterdir())]
        with deferred_signals():
            self.check(names)
            folder = Path(self.output_dir)
            trash = Path(tempfile.mkdtemp(prefix=".mrisynth-replaced-", dir=folder))
            moved_out: List[str] = []
            moved_in: List[str] = []
            try:
                for path in self.stale(names):
                    os.replace(path, trash / path.name)
                    moved_out.append(path.name)
                for name in names:
                    os.replace(staging / name, folder / name)
                    moved_in.append(name)
            except BaseException:
                for name in moved_in:  # put the folder back as it was
                    os.replace(folder / name, staging / name)
                for name in moved_out:
                    os.replace(trash / name, folder / name)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during a short critical step (the commit); they arrive right after it.

    Only the main thread can hold signals (elsewhere, and on Windows, this does nothing).
    """
    held = {signal.SIGINT, signal.SIGTERM}
    can_hold = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held) if can_hold else None
    try:
        yield
    finally:
        if can_hold:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def staged_output(output_dir: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder whose files replace those of the same names in ``output_dir`` on success."""
    plan = OutputPlan(Path(output_dir), family=lambda name: False, overwrite=overwrite)
    with plan.staged() as staging:
        yield staging


def description_for(role: str, sequence: Sequence, model_name: str, inputs: list) -> str:
    """Header description: says SYNTHETIC, what the volume is, the model and the inputs."""
    sources = "+".join(s.short_name for s in inputs)
    what = {"synthetic": "", "stage1": " stage1", "refinement_map": " refinement map",
            "tumour_map": " tumour map", "error_map": " error map"}[role]
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
            "intensity_encoding": target.intensity,
            "tumour_region": target.tumour_region_source or None,
            "outputs": written.get(sequence.value, {}),
            "metrics": _clean(target.metrics) or None,
            "stage1_metrics": _clean(target.stage1_metrics) or None,
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
    }


def _clean(values: Mapping) -> dict:
    """Metrics with NaN/inf as None so the JSON is standard."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def write_report(report: Mapping, path: Path) -> Path:
    """Write the JSON report atomically."""
    return write_text(json.dumps(report, indent=2) + "\n", path)


def metrics_table_markdown(rows: list, columns: tuple = METRIC_COLUMNS) -> str:
    """Markdown table of per-target metrics (rows: dicts with ``target`` and metric keys)."""
    header = "| target | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    lines = []
    for row in rows:
        cells = [_format(row.get(c)) for c in columns]
        lines.append(f"| {row['target']} | " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
