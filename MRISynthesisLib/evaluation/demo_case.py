"""The demo: hide one sequence of a fresh phantom case, synthesise it, and show how close it came.

A full-size phantom case is generated from a seed outside the model's training seeds, one
sequence is withheld, the model synthesises it from the other three, and everything needed
to judge the result lands in one folder: the inputs, the hidden ground truth and its label
map, the synthetic volume with its stage-1 volume and maps, the JSON report and a montage.
Nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..core.progress import ProgressCallback, scaled
from ..sequences import SEQUENCES, Sequence, parse_sequence

__all__ = ["DEFAULT_SEED", "DEFAULT_OUTPUT_DIR", "DemoResult", "demo_seed", "run_demo", "format_table"]

#: Seed used when the bundle names no ``demo_seed`` (outside every training range used here).
DEFAULT_SEED = 90210
DEFAULT_OUTPUT_DIR = Path("mrisynth-demo")
DEFAULT_MISSING = Sequence.T1C


@dataclasses.dataclass
class DemoResult:
    """What the demo made: the case, where its files are, the metrics table and step timings."""

    case_id: str
    seed: int
    missing: Sequence
    sources: list
    output_dir: Path
    files: dict
    metrics: dict
    timings: dict
    model_name: str
    notes: list


def demo_seed(bundle, seed: Optional[int] = None) -> tuple:
    """(seed, notes): ``seed`` or the bundle's ``demo_seed`` (else :data:`DEFAULT_SEED`), and a
    note when that seed lies in the bundle's ``training_seeds`` [first, last]."""
    metadata = getattr(bundle, "metadata", None) or {}
    chosen = int(seed if seed is not None else metadata.get("demo_seed", DEFAULT_SEED))
    notes = []
    training = metadata.get("training_seeds")
    if isinstance(training, (list, tuple)) and len(training) == 2 and training[0] <= chosen <= training[1]:
        notes.append(f"seed {chosen} was used to train model {bundle.name} (training seeds "
                     f"{training[0]}-{training[1]}): the result will look better than on unseen data")
    return chosen, notes


def resolution_note(generator, image: sitk.Image) -> Optional[str]:
    """A note when the model grid is coarser in-plane than ``image``: the result cannot be sharper than it."""
    from ..core.model_grid_inputs import model_grid_for

    model_mm = float(model_grid_for(generator)[1])
    case_mm = float(min(image.GetSpacing()[:2]))
    if model_mm <= 1.2 * case_mm:
        return None
    return (f"the model works on a {model_mm:g} mm grid and this case has {case_mm:g} mm voxels: the synthetic "
            f"image carries {model_mm:g} mm detail, so its SSIM against the {case_mm:g} mm truth is capped below "
            "that of the stated evaluation (see the model card)")


def _stage_metrics(acquired: np.ndarray, synthetic: np.ndarray, brain: np.ndarray, tumour: np.ndarray,
                   computed: dict) -> dict:
    """SSIM (from the pipeline) and PSNR whole/tumour/healthy of one stage."""
    from ..metrics import region_psnr

    values = {key: computed.get(key, math.nan)
              for key in ("ssim", "ssim_tumour", "ssim_healthy", "ssim_volume", "psnr")}
    values.update(region_psnr(acquired, synthetic, brain, tumour))
    return values


def _brain(inputs: dict) -> np.ndarray:
    """The brain mask the pipeline evaluates in: from the aligned inputs."""
    from ..core.io import align_inputs
    from ..core.preprocessing import brain_mask

    aligned = align_inputs(inputs)
    return brain_mask(sitk.GetArrayViewFromImage(image) for image in aligned.images.values())


def run_demo(output_dir: Path = DEFAULT_OUTPUT_DIR, missing=DEFAULT_MISSING, seed: Optional[int] = None,
             model=None, device: str = "auto", small: bool = False,
             progress: Optional[ProgressCallback] = None) -> DemoResult:
    """Generate, hide, synthesise, write; returns a :class:`DemoResult`.

    ``model``: catalogue name, folder, file or loaded bundle (default: the catalogue default).
    ``small`` uses the 96 x 96 x 64 phantom grid (tests).
    """
    from .. import phantom
    from ..core.io import write_image
    from .montage import save_montage
    from ..core.result_files import OutputPlan, build_report, write_report, write_result
    from ..core.pipeline import synthesize
    from ..core.bundles import load_bundle

    report = progress or (lambda fraction, message: None)
    missing = parse_sequence(missing)
    output_dir = Path(output_dir)
    timings: dict = {}
    tick = time.perf_counter()
    bundle = load_bundle(model)
    seed, notes = demo_seed(bundle, seed)
    timings["load_model_s"] = time.perf_counter() - tick

    report(0.0, f"generating phantom case (seed {seed})")
    tick = time.perf_counter()
    case = phantom.generate_case(seed, small=small)
    timings["phantom_s"] = time.perf_counter() - tick
    inputs = {s: case.images[s] for s in SEQUENCES if s != missing}
    truth = case.images[missing]
    note = resolution_note(bundle.stage1, truth)
    notes = notes + ([note] if note else [])

    tick = time.perf_counter()
    result = synthesize(inputs, bundle, targets=[missing], device=device, progress=scaled(report, 0.2, 0.85),
                        ground_truth={missing: truth}, label=case.label)
    timings["synthesis_s"] = time.perf_counter() - tick
    target = result.targets[missing]

    tick = time.perf_counter()
    brain = _brain(inputs)
    tumour = (sitk.GetArrayViewFromImage(case.label) > 0) & brain
    acquired = sitk.GetArrayFromImage(truth)
    metrics = {
        "stage1": _stage_metrics(acquired, sitk.GetArrayViewFromImage(target.stage1), brain, tumour,
                                 target.stage1_metrics),
        "final": _stage_metrics(acquired, sitk.GetArrayViewFromImage(target.synthetic), brain, tumour,
                                target.metrics),
    }
    timings["metrics_s"] = time.perf_counter() - tick

    report(0.88, "writing files")
    case_id = case.case_id
    files: dict = {}
    # The demo folder is the demo's own: a new run replaces the previous demo's whole set (any seed).
    plan = OutputPlan(output_dir, is_demo_file, overwrite=True, what="a demo", manifest=DEMO_MANIFEST)
    with plan.staged() as staging:
        tick = time.perf_counter()
        for sequence, image in inputs.items():
            name = f"{case_id}-{sequence.value}.nii.gz"
            write_image(image, staging / name, f"phantom {sequence.short_name} (MRISynthesis demo input)")
            files[f"input_{sequence.value}"] = output_dir / name
        name = f"{case_id}-{missing.value}-ground-truth.nii.gz"
        write_image(truth, staging / name, f"phantom {missing.short_name} hidden, MRISynthesis demo ground truth")
        files["ground_truth"] = output_dir / name
        name = f"{case_id}-seg.nii.gz"
        write_image(case.label, staging / name, "phantom BraTS label map, MRISynthesis demo ground truth")
        files["label"] = output_dir / name
        written = write_result(result, staging, case_id, final_dir=output_dir)
        files.update({role: Path(path) for role, path in written[missing.value].items()})
        input_files = {s: output_dir / f"{case_id}-{s.value}.nii.gz" for s in inputs}
        report_data = build_report(result, case_id, input_files, written, bundle)
        report_data["demo"] = {"phantom_seed": seed, "hidden": missing.value,
                               "ground_truth": str(files["ground_truth"]), "label": str(files["label"]),
                               "metrics_vs_hidden": metrics, "notes": notes}
        write_report(_json_safe(report_data), staging / f"{case_id}-report.json")
        files["report"] = output_dir / f"{case_id}-report.json"
        timings["write_s"] = time.perf_counter() - tick

        report(0.95, "drawing montage")
        tick = time.perf_counter()
        title = (f"{case_id}: {missing.short_name} synthesised from "
                 f"{', '.join(s.short_name for s in target.sources)} by model {bundle.name}   "
                 f"SSIM {metrics['final']['ssim']:.3f}, PSNR {metrics['final']['psnr']:.1f} dB")
        save_montage(staging / "montage.png", inputs, target, ground_truth=truth, label=case.label, title=title)
        files["montage"] = output_dir / "montage.png"
        timings["montage_s"] = time.perf_counter() - tick
    report(1.0, "done")
    return DemoResult(case_id=case_id, seed=seed, missing=missing, sources=list(target.sources),
                      output_dir=output_dir, files=files, metrics=metrics,
                      timings={**timings, **{f"pipeline_{k}": v for k, v in result.timings.items()}},
                      model_name=bundle.name, notes=notes + list(result.messages))


#: Hidden list of a demo's files; the next demo in the folder replaces exactly that set.
DEMO_MANIFEST = ".mrisynth-demo.json"


def is_demo_file(name: str) -> bool:
    """The demo's one fixed file name; its case files (named by the seed) are listed in its manifest."""
    return name == "montage.png"


def _json_safe(value: object) -> object:
    """NaN/inf -> None throughout, so the report is standard JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: float, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(metrics: dict) -> str:
    """Plain-text table for stage 1 and the final result: SSIM over the brain (whole, tumour, healthy)
    and over the whole volume (the paper's way), and PSNR (whole, tumour, healthy)."""
    lines = [f"{'':<9}{'SSIM':^36}  {'PSNR (dB)':^27}",
             f"{'':<9}{'whole':>9}{'tumour':>9}{'healthy':>9}{'volume':>9}  {'whole':>9}{'tumour':>9}{'healthy':>9}"]
    for stage, name in (("stage1", "stage 1"), ("final", "final")):
        values = metrics[stage]
        ssim = "".join(f"{_cell(values[k], 4):>9}" for k in ("ssim", "ssim_tumour", "ssim_healthy", "ssim_volume"))
        psnr = "".join(f"{_cell(values[k], 2):>9}" for k in ("psnr", "psnr_tumour", "psnr_healthy"))
        lines.append(f"{name:<9}{ssim}  {psnr}")
    return "\n".join(lines) + "\n"
