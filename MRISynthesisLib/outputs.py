"""Writing a synthesis result to disk: NIfTI volumes by role, a JSON report, metric tables.

All files of one run are first written into a hidden staging folder inside the output
folder and moved into place only when every one of them was written, so an interrupted
run leaves the output folder as it was.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Optional

import SimpleITK as sitk

from . import __version__
from .io import write_image, write_text
from .sequences import Sequence

#: Output roles, their file-name suffixes and the attribute of TargetResult that holds them.
ROLES: tuple[tuple[str, str, str], ...] = (
    ("synthetic", "", "synthetic"),
    ("stage1", "-stage1", "stage1"),
    ("refinement_map", "-refinement", "refinement_map"),
    ("tumour_map", "-tumor-map", "tumour_map"),
    ("error_map", "-error-map", "error_map"),
)

METRIC_COLUMNS = ("ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume")


@contextlib.contextmanager
def staged_output(output_dir: Path) -> Iterator[Path]:
    """Yield a staging folder; on success move its files into ``output_dir``, else delete it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mrisynth-staging-", dir=output_dir))
    try:
        yield staging
        for entry in sorted(staging.iterdir()):
            os.replace(entry, output_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
            name = f"{case_id}-{sequence.value}{suffix}.nii.gz"
            write_image(image, folder / name, description_for(role, sequence, result.model_name, target.sources))
            files[role] = str((final_dir or folder) / name)
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
