"""One measured benchmark task per process, so that peak memory of one task never mixes with another's.

``python benchmarks/tasks.py SPEC.json`` reads a task spec written by ``benchmarks/run.py``,
runs it and writes ``result.json`` (and, for stage 1, the output slices as ``.npy``) into
the spec's folder. Tasks:

* ``stage1``: :func:`run_stage1` on the case's slices (or an evenly spaced subset of the
  brain slices) with the naive or the fast options; one untimed warm-up batch first.
* ``stage2``: :func:`run_refiner` on the whole model-grid volume, stopped after
  ``max_windows`` windows (all when ``None``) so one window can be timed on the real volume.
* ``pipeline``: :func:`pipeline.synthesize` of the missing T1c, end to end.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

TARGET = "t1c"


class StopMeasuring(Exception):
    """Raised from a progress callback once enough stage-2 windows were timed."""


# --------------------------------------------------------------------------- measuring


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0**2


def current_rss_mib() -> float:
    """Resident memory now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mib()
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1024.0**2


class Meter:
    """Wall time, CPU time and minor page faults between ``start`` and ``stop``."""

    def start(self) -> "Meter":
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        return self

    def stop(self) -> dict:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu,
                "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults}


# --------------------------------------------------------------------------- models and inputs


def demo_image_size() -> int:
    """Slice size of the packaged demo model (its manifest's metadata), so random weights match its cost."""
    import json

    from MRISynthesisLib.core.bundles import CATALOGUE_DIR

    manifest = json.loads((CATALOGUE_DIR / "demo" / "bundle.json").read_text())
    return int(manifest.get("metadata", {}).get("image_size", 96))


def build_bundle(spec: dict):
    """The bundle of ``spec["model"]``: a saved bundle folder, or random weights of a named config."""
    import torch

    from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator, seeded_reference_state_dict
    from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
    from MRISynthesisLib.core.bundles import ModelBundle, load_bundle

    model = spec["model"]
    if model.get("path"):
        return load_bundle(model["path"])
    if model["config"] == "paper":
        stage1_config, refiner_config = HFGANConfig.paper(), RefinerConfig.paper()
    else:
        stage1_config = HFGANConfig.small(image_size=int(model.get("image_size") or demo_image_size()))
        refiner_config = RefinerConfig.small()
    with torch.device("meta"):
        generator = HFGANGenerator(stage1_config)
    # assign=True: the seeded tensors become the parameters (one copy of an 80 M model, not two).
    generator.load_state_dict(seeded_reference_state_dict(stage1_config, seed=0), assign=True)
    torch.manual_seed(0)
    refiner = Refiner(refiner_config)
    with torch.no_grad():  # a head that is not zero, so stage 2 really changes the volume
        refiner.head.weight.normal_(0.0, 0.01)
    return ModelBundle(name=f"{model['config']}-random", stage1=generator.eval(), refiner=refiner.eval(),
                       description="random weights (benchmark)")


def read_inputs(case_dir: str) -> tuple:
    """(acquired images without the target, the target image) of the benchmark case."""
    from MRISynthesisLib.core.io import read_case
    from MRISynthesisLib.sequences import parse_sequence

    images = read_case(case_dir)
    target = parse_sequence(TARGET)
    acquired = {s: img for s, img in images.items() if s != target}
    return acquired, images[target]


def stage1_inputs(prepared, generator) -> tuple:
    """([Z, 4, H, W] channels in the generator's order, missing -1; available indices; target index)."""
    from MRISynthesisLib.sequences import parse_sequence

    order = list(generator.modality_order)
    channels = np.full((prepared.brain.shape[0], 4) + prepared.brain.shape[1:], -1.0, dtype=np.float32)
    for sequence, array in prepared.scaled.items():
        channels[:, order.index(sequence)] = array
    available = sorted(order.index(s) for s in prepared.scaled)
    return channels, available, order.index(parse_sequence(TARGET))


def subset_of(brain_slices: np.ndarray, count: Optional[int]) -> np.ndarray:
    """Indices of ``count`` evenly spaced brain slices (all brain slices when ``count`` is None)."""
    brain = np.flatnonzero(brain_slices)
    if count is None or count >= brain.size:
        return brain
    return brain[np.round(np.linspace(0, brain.size - 1, count)).astype(int)]


def stage1_options(spec: dict):
    from MRISynthesisLib.core.inference import Stage1Options

    if spec["mode"] == "naive":
        return Stage1Options.naive()
    return Stage1Options(**spec.get("options", {}))


def window_count(shape: tuple, roi: tuple, overlap: float) -> int:
    """Windows MONAI's sliding window visits on a volume of ``shape`` (padded up to ``roi``)."""
    from monai.data.utils import dense_patch_slices

    size = [max(int(s), int(r)) for s, r in zip(shape, roi)]
    interval = [r if s == r else max(int(r * (1.0 - overlap)), 1) for s, r in zip(size, roi)]
    return len(dense_patch_slices(size, roi, interval))


# --------------------------------------------------------------------------- tasks


def task_stage1(spec: dict, device, bundle, folder: Path) -> dict:
    """Time stage 1 on every slice (naive) or the brain slices (fast), or on a subset of brain slices."""
    from MRISynthesisLib.core.inference import RunHooks, auto_batch_size, run_stage1
    from MRISynthesisLib.core.model_grid_inputs import prepare_model_grid_inputs
    from MRISynthesisLib.core.preprocessing import prior_intensity
    from MRISynthesisLib.sequences import parse_sequence

    acquired, _ = read_inputs(spec["case_dir"])
    prepared = prepare_model_grid_inputs(acquired, [], bundle.stage1)
    channels, available, target = stage1_inputs(prepared, bundle.stage1)
    brain_slices = prepared.brain.reshape(prepared.brain.shape[0], -1).any(axis=1)
    options = stage1_options(spec)
    intensity = prior_intensity(parse_sequence(TARGET))
    subset = spec.get("subset")
    if subset is None:
        run_channels, run_brain = channels, brain_slices
    else:  # the same evenly spaced brain slices for every mode: all of them are run
        picked = subset_of(brain_slices, subset)
        run_channels, run_brain = channels[picked], np.ones(picked.size, dtype=bool)
    batch = options.batch_size or auto_batch_size(device, bundle.stage1)
    warm = np.zeros_like(run_brain)
    warm[np.flatnonzero(run_brain)[:batch]] = True
    run_stage1(bundle.stage1, run_channels, available, target, intensity, warm, device, options)
    lines: list = []
    rss_before = current_rss_mib()
    _reset_gpu_peak(device)
    meter = Meter().start()
    output = run_stage1(bundle.stage1, run_channels, available, target, intensity, run_brain, device, options,
                        RunHooks(log=lines.append))
    result = meter.stop()
    computed = run_brain if options.skip_empty_slices else np.ones_like(run_brain)
    np.save(folder / "stage1.npy", output[computed])
    np.save(folder / "stage1_slices.npy", np.flatnonzero(computed))
    result.update(
        slices_run=int(computed.sum()), slice_shape=list(channels.shape[2:]), batch_size=int(batch),
        case_slices=int(channels.shape[0]), case_brain_slices=int(brain_slices.sum()),
        channels_last=bool(options.channels_last), compile=bool(options.compile),
        rss_before_mib=rss_before, log=lines,
    )
    return result


def task_stage2(spec: dict, device, bundle, folder: Path) -> dict:
    """Time the refiner on the whole model-grid volume, stopping after ``max_windows`` windows."""
    from MRISynthesisLib.core.inference import RunHooks, Stage2Options, refiner_roi, run_refiner
    from MRISynthesisLib.core.model_grid_inputs import prepare_model_grid_inputs
    from MRISynthesisLib.core.preprocessing import fit_zscore
    from MRISynthesisLib.sequences import SEQUENCES, parse_sequence

    acquired, target_image = read_inputs(spec["case_dir"])
    prepared = prepare_model_grid_inputs(acquired, [], bundle.stage1)
    brain = prepared.brain
    inputs = np.zeros((4,) + brain.shape, dtype=np.float32)
    for sequence, raw in prepared.raw.items():
        inputs[SEQUENCES.index(sequence)] = fit_zscore(raw, brain).forward(raw, brain)
    # Stand-in for the stage-1 volume: the acquired T1c on the model grid (the cost does not depend on content).
    stand_in = prepared.grid.to_model(target_image)
    stand_in[~brain] = 0.0
    stage1 = fit_zscore(stand_in, brain).forward(stand_in, brain)
    target = SEQUENCES.index(parse_sequence(TARGET))
    available = sorted(SEQUENCES.index(s) for s in prepared.raw)
    options = Stage2Options(**spec.get("options", {}))
    roi = refiner_roi(options, stage1.shape, bundle.refiner.config.downsample_factor)
    overlap = options.overlap_for(device)
    total = window_count(stage1.shape, roi, overlap)
    limit = spec.get("max_windows")
    seen = {"windows": 0}

    def progress(fraction: float, message: str) -> None:
        seen["windows"] = round(fraction * total)
        if limit is not None and seen["windows"] >= limit:
            raise StopMeasuring

    lines: list = []
    rss_before = current_rss_mib()
    _reset_gpu_peak(device)
    meter = Meter().start()
    try:
        run_refiner(bundle.refiner, stage1, inputs, target, available, device, options,
                    RunHooks(progress=progress, log=lines.append))
    except StopMeasuring:
        pass
    result = meter.stop()
    result.update(windows_run=int(seen["windows"]), windows_total=int(total), roi=list(roi),
                  overlap=overlap, volume_shape=list(stage1.shape),
                  rss_before_mib=rss_before, log=lines)
    return result


def task_pipeline(spec: dict, device, bundle, folder: Path) -> dict:
    """The whole synthesis of the missing T1c: prepare, stage 1, stage 2, maps, back to the input grid."""
    from MRISynthesisLib.core.pipeline import synthesize

    acquired, _ = read_inputs(spec["case_dir"])
    rss_before = current_rss_mib()
    _reset_gpu_peak(device)
    meter = Meter().start()
    result_obj = synthesize(acquired, bundle, targets=[TARGET], device=spec["device"])
    result = meter.stop()
    result.update(timings=dict(result_obj.timings), messages=list(result_obj.messages), rss_before_mib=rss_before,
                  model_grid=list(result_obj.targets[next(iter(result_obj.targets))].synthetic.GetSize()))
    return result


TASKS: dict = {"stage1": task_stage1, "stage2": task_stage2, "pipeline": task_pipeline}


def _reset_gpu_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _gpu_peak_mib(device) -> Optional[float]:
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 1024.0**2


def run_task(spec: dict, folder: Path) -> dict:
    """Set up threads and device, build the models, run the task; add memory figures."""
    from MRISynthesisLib.core.devices import configure_cpu_threads, resolve_device

    device = resolve_device(spec["device"])
    threads = configure_cpu_threads()  # OMP_NUM_THREADS when the parent set it, else every core
    started = time.perf_counter()
    bundle = build_bundle(spec)
    bundle.to(device)
    setup_s = time.perf_counter() - started
    task: Callable[..., dict] = TASKS[spec["task"]]
    result = task(spec, device, bundle, folder)
    result.update(task=spec["task"], name=spec["name"], config=spec["model"]["config"], device=str(device),
                  env=spec.get("env", {}),
                  threads=threads, setup_s=setup_s, peak_rss_mib=peak_rss_mib(), peak_gpu_mib=_gpu_peak_mib(device))
    return result


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    result = run_task(spec, spec_path.parent)
    (spec_path.parent / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
