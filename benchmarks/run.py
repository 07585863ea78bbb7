"""Speed and memory benchmark of the synthesis engine: ``python benchmarks/run.py --output-dir out/bench``.

On a full-size phantom case (240 x 240 x 155 at 1 mm, T1c missing) and for two model
configurations (the demo model, and the paper's model with random weights) it times stage 1
with the naive baseline and with the fast path, stage 2, and (demo) the whole pipeline.
Every task runs in a fresh process so that its peak resident memory is its own. The
fast-path outputs are checked against the naive outputs (max abs difference, float32).
Prints a table and writes ``benchmark.json``.

By default the paper configuration's stage 1 runs on an evenly spaced subset of brain
slices (the same slices for naive and fast) and its stage 2 on one window; the table says
so and extrapolates to the whole case. ``--full`` runs everything.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

#: Tolerance of the fast path against the naive path (float32). On CUDA the fast path runs under bf16/fp16
#: autocast, which keeps 8 (10) mantissa bits, so the difference is reported there but not held to this.
TOLERANCE = 1e-4
#: Stage-1 slices timed per mode for the paper configuration unless --full.
PAPER_SUBSET = 24
#: glibc settings that keep freed memory in the process instead of returning it (and faulting it back in).
GLIBC_REUSE = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36)}


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("out/bench"), help="results folder")
    parser.add_argument("--demo-model", default=None,
                        help="demo bundle (folder or checkpoint); default: random weights of HFGANConfig.small at "
                             "the packaged demo model's slice size and RefinerConfig.small()")
    parser.add_argument("--configs", default="demo,paper", help="comma-separated: demo, paper (default both)")
    parser.add_argument("--full", action="store_true",
                        help="paper config: every slice and every window, and the whole pipeline (slow on a CPU)")
    parser.add_argument("--subset", type=int, default=PAPER_SUBSET,
                        help=f"paper stage-1 slices timed per mode unless --full (default {PAPER_SUBSET})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every available core)")
    parser.add_argument("--seed", type=int, default=1, help="phantom case seed (default 1)")
    parser.add_argument("--compile", action="store_true", help="also time stage 1 with torch.compile")
    parser.add_argument("--sweep-batch", default="",
                        help="also time the fast stage 1 at these batch sizes, e.g. 1,2,4,8")
    parser.add_argument("--no-stage2", action="store_true", help="skip the stage-2 tasks")
    parser.add_argument("--glibc-reuse", action="store_true",
                        help="also time stage 2 with glibc told to keep freed memory for reuse "
                             "(MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2^36; Linux, set for the whole process)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each stage-1 and pipeline task, alternating the order of naive and fast; "
                             "the fastest run counts (default 2: a shared machine's load comes and goes)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- plan


def plan_tasks(args: argparse.Namespace) -> list:
    """Task specs (without case path and device) in the order they run."""
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - {"demo", "paper"})
    if unknown:
        raise SystemExit(f"--configs: unknown configuration {unknown[0]!r}; expected demo and/or paper")
    tasks = []
    for config in configs:
        model = {"config": config}
        if config == "demo" and args.demo_model:
            model["path"] = str(Path(args.demo_model).resolve())
        subset = None if (config == "demo" or args.full) else args.subset
        stage1 = {"task": "stage1", "model": model, "subset": subset}
        tasks.append(dict(stage1, name=f"{config}-stage1-naive", mode="naive"))
        tasks.append(dict(stage1, name=f"{config}-stage1-fast", mode="fast"))
        tasks.append(dict(stage1, name=f"{config}-stage1-fast-channels-last", mode="fast",
                          options={"channels_last": True}))
        for batch in [int(b) for b in args.sweep_batch.split(",") if b.strip()]:
            tasks.append(dict(stage1, name=f"{config}-stage1-fast-b{batch}", mode="fast",
                              options={"batch_size": batch}))
        if args.compile:
            tasks.append(dict(stage1, name=f"{config}-stage1-fast-compile", mode="fast", options={"compile": True}))
        if not args.no_stage2:
            windows = None if (config == "demo" or args.full) else 1
            tasks.append({"task": "stage2", "model": model, "name": f"{config}-stage2", "max_windows": windows})
            if args.glibc_reuse:
                tasks.append({"task": "stage2", "model": model, "name": f"{config}-stage2-glibc-reuse",
                              "max_windows": windows, "env": GLIBC_REUSE})
        if config == "demo" or args.full:
            tasks.append({"task": "pipeline", "model": model, "name": f"{config}-pipeline"})
    return tasks


def prepare_case(folder: Path, seed: int) -> Path:
    """The full-size phantom case folder, generated once and reused."""
    from MRISynthesisLib import phantom

    case_dir = folder / phantom.case_id_for_seed(seed)
    if not (case_dir / phantom.case_files(case_dir.name)["t2f"]).is_file():
        print(f"generating the full-size phantom case (seed {seed}) ...", flush=True)
        phantom.write_case(phantom.generate_case(seed, small=False), folder)
    return case_dir


# --------------------------------------------------------------------------- running


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_one(spec: dict, folder: Path, threads: Optional[int]) -> dict:
    """Run one task in a fresh Python process; returns its result (or the error)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "stage1.npy", "stage1_slices.npy"):
        (folder / stale).unlink(missing_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    env = dict(os.environ, **spec.get("env", {}))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    load_before = load_average()
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, str(HERE / "tasks.py"), str(folder / "spec.json")], env=env,
                               capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    (folder / "stderr.txt").write_text(completed.stderr)
    result_path = folder / "result.json"
    if completed.returncode != 0 or not result_path.is_file():
        last = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"name": spec["name"], "task": spec["task"], "config": spec["model"]["config"],
                "error": f"exit {completed.returncode}: {last[0]}", "process_s": elapsed}
    result = json.loads(result_path.read_text())
    result.update(process_s=elapsed, load_before=load_before, load_after=load_average())
    return result


def schedule(tasks: list, repeat: int) -> list:
    """(spec, run number) in running order: each config's stage-1 tasks ``repeat`` times, every other
    round reversed so naive and fast see the machine alike; pipelines ``repeat`` times; stage 2 once."""
    order = []
    for config in dict.fromkeys(t["model"]["config"] for t in tasks):
        mine = [t for t in tasks if t["model"]["config"] == config]
        stage1 = [t for t in mine if t["task"] == "stage1"]
        for run in range(max(1, repeat)):
            order += [(t, run) for t in (stage1 if run % 2 == 0 else stage1[::-1])]
        order += [(t, 0) for t in mine if t["task"] == "stage2"]
        order += [(t, run) for t in mine if t["task"] == "pipeline" for run in range(max(1, repeat))]
    return order


def merge_runs(runs: list) -> dict:
    """One result from repeated runs: the fastest run, with every run's time and the highest peak memory."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return runs[-1]
    best = dict(min(done, key=lambda r: r["wall_s"]))
    best["runs_wall_s"] = [r["wall_s"] for r in done]
    best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in done)
    loads = [r.get(k) for r in done for k in ("load_before", "load_after") if r.get(k) is not None]
    best["load_range"] = [min(loads), max(loads)] if loads else None
    return best


def compare_outputs(folder: Path, naive: str, fast: str, autocast: bool = False) -> Optional[dict]:
    """Max and mean abs difference of the fast stage-1 output against the naive one, on the slices both ran;
    ``autocast``: the fast path ran in bf16/fp16 (CUDA), so the float32 tolerance does not apply."""
    try:
        naive_out, naive_idx = np.load(folder / naive / "stage1.npy"), np.load(folder / naive / "stage1_slices.npy")
        fast_out, fast_idx = np.load(folder / fast / "stage1.npy"), np.load(folder / fast / "stage1_slices.npy")
    except OSError:
        return None
    common, in_naive, in_fast = np.intersect1d(naive_idx, fast_idx, return_indices=True)
    difference = np.abs(naive_out[in_naive] - fast_out[in_fast])
    diff = float(difference.max()) if common.size else float("nan")
    return {"slices_compared": int(common.size), "max_abs_diff": diff,
            "mean_abs_diff": float(difference.mean()) if common.size else float("nan"),
            "within_tolerance": None if autocast else diff <= TOLERANCE, "autocast": autocast,
            "output_range": [float(naive_out.min()), float(naive_out.max())]}


# --------------------------------------------------------------------------- summarising


def stage1_full_case_s(result: dict, mode: str) -> float:
    """Seconds for the whole case: naive runs every slice, fast the brain slices (extrapolated from a subset)."""
    per_slice = result["wall_s"] / result["slices_run"]
    slices = result["case_slices"] if mode == "naive" else result["case_brain_slices"]
    return per_slice * slices


def summarise(results: dict, folder: Path, device: str = "cpu") -> dict:
    """Ratios, checks and goals from the task results (``device``: where the tasks ran)."""
    summary: dict = {}
    for config in ("demo", "paper"):
        naive, fast = results.get(f"{config}-stage1-naive"), results.get(f"{config}-stage1-fast")
        if not naive or not fast or "error" in naive or "error" in fast:
            continue
        entry: dict = {
            "extrapolated": naive["slices_run"] != naive["case_slices"],
            "naive_case_s": stage1_full_case_s(naive, "naive"),
            "fast_case_s": stage1_full_case_s(fast, "fast"),
        }
        entry["speedup"] = entry["naive_case_s"] / entry["fast_case_s"]
        autocast = device == "cuda"   # Stage1Options' default on CUDA
        entry["check"] = compare_outputs(folder, f"{config}-stage1-naive", f"{config}-stage1-fast", autocast)
        channels_last = results.get(f"{config}-stage1-fast-channels-last")
        if channels_last and "error" not in channels_last:
            entry["channels_last_speedup"] = (fast["wall_s"] / fast["slices_run"]) / (
                channels_last["wall_s"] / channels_last["slices_run"])
            entry["channels_last_check"] = compare_outputs(folder, f"{config}-stage1-naive",
                                                           f"{config}-stage1-fast-channels-last", autocast)
        summary[f"{config}_stage1"] = entry
    for config in ("demo", "paper"):
        stage2 = results.get(f"{config}-stage2")
        if stage2 and "error" not in stage2 and stage2["windows_run"]:
            summary[f"{config}_stage2_case_s"] = stage2["wall_s"] / stage2["windows_run"] * stage2["windows_total"]
        pipeline = results.get(f"{config}-pipeline")
        if pipeline and "error" not in pipeline:
            summary[f"{config}_pipeline_s"] = pipeline["wall_s"]
        reuse = results.get(f"{config}-stage2-glibc-reuse")
        if reuse and "error" not in reuse and reuse["windows_run"]:
            summary[f"{config}_stage2_glibc_case_s"] = reuse["wall_s"] / reuse["windows_run"] * reuse["windows_total"]
            summary[f"{config}_stage2_glibc_peak_rss_mib"] = reuse["peak_rss_mib"]
        peaks = [r["peak_rss_mib"] for n, r in results.items()
                 if n.startswith(config) and "error" not in r and "naive" not in n and not r.get("env")]
        if peaks:
            summary[f"{config}_peak_rss_mib"] = max(peaks)
    if "paper_stage1" in summary and "paper_stage2_case_s" in summary:
        summary["paper_case_estimate_s"] = summary["paper_stage1"]["fast_case_s"] + summary["paper_stage2_case_s"]
    return summary


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def task_rows(results: dict) -> list:
    """One table row per task: config, what, units run, seconds, rates, memory, notes."""
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([r["config"], name, "-", "-", "-", "-", "-", "-", "-", f"FAILED: {r['error']}"])
            continue
        if r["task"] == "stage1":
            slices = r["slices_run"]
            height, width = r["slice_shape"]
            notes = f"batch {r['batch_size']}, {'channels-last' if r['channels_last'] else 'contiguous'}"
            if "naive" in name:
                notes = "batch 1, every slice, float32, autograd on"
            if r["compile"]:
                notes += ", torch.compile"
            if slices != r["case_slices"] and slices != r["case_brain_slices"]:
                notes += f"; subset of {r['case_brain_slices']} brain / {r['case_slices']} slices"
            if r.get("log"):
                notes += "; " + " | ".join(r["log"])
            units, rate = f"{slices} sl", slices / r["wall_s"]
            voxels = slices * height * width / r["wall_s"] / 1e6
            faults = r["minor_faults"] / slices
        elif r["task"] == "stage2":
            units = f"{r['windows_run']}/{r['windows_total']} win"
            rate = r["windows_run"] / r["wall_s"]
            voxels = float(np.prod(r["roi"])) * r["windows_run"] / r["wall_s"] / 1e6
            faults = r["minor_faults"] / max(1, r["windows_run"])
            roi, volume = "x".join(map(str, r["roi"])), "x".join(map(str, r["volume_shape"]))
            notes = f"roi {roi}, overlap {r['overlap']:g}, volume {volume}"
            if r.get("env"):
                notes += "; env " + " ".join(f"{k}={v}" for k, v in r["env"].items())
            if r["windows_run"] != r["windows_total"]:
                notes += f"; 1 window timed, whole volume ~{r['wall_s'] / r['windows_run'] * r['windows_total']:.0f} s"
        else:
            t = r["timings"]
            units, rate, voxels, faults = "1 case", 1.0 / r["wall_s"], None, r["minor_faults"]
            notes = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in t.items() if k != "total_s") + " s"
        if len(r.get("runs_wall_s", [])) > 1:
            notes += "; runs " + ", ".join(f"{t:.1f}" for t in r["runs_wall_s"]) + " s"
        gpu = _fmt(r.get("peak_gpu_mib"), 0)
        rows.append([r["config"], name, units, _fmt(r["wall_s"]), _fmt(rate, 2), _fmt(voxels, 2),
                     _fmt(r["peak_rss_mib"] / 1024.0, 2), gpu, f"{faults / 1000:.0f}", notes])
    return rows


def format_table(header: list, rows: list) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    widths[-1] = len(header[-1])  # notes: not padded
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def summary_lines(summary: dict) -> list:
    lines = []
    for config in ("demo", "paper"):
        entry = summary.get(f"{config}_stage1")
        if not entry:
            continue
        how = " (extrapolated from the subset)" if entry["extrapolated"] else ""
        check = entry["check"] or {}
        verdict = ("bf16/fp16 autocast: not held to it" if check.get("autocast")
                   else "OK" if check.get("within_tolerance") else "FAILED")
        lines.append(f"{config}: stage 1 whole case naive {entry['naive_case_s']:.1f} s, "
                     f"fast {entry['fast_case_s']:.1f} s -> {entry['speedup']:.2f}x{how}; "
                     f"max |fast - naive| {check.get('max_abs_diff', float('nan')):.2e} "
                     f"(mean {check.get('mean_abs_diff', float('nan')):.1e}) over {check.get('slices_compared', 0)} "
                     f"slices (float32 tolerance {TOLERANCE:g}: {verdict})")
        if "channels_last_speedup" in entry:
            cl_check = entry.get("channels_last_check") or {}
            lines.append(f"{config}: channels-last (not the default) vs the fast path, per slice: "
                         f"{entry['channels_last_speedup']:.2f}x, max |channels-last - naive| "
                         f"{cl_check.get('max_abs_diff', float('nan')):.2e}")
    for config in ("demo", "paper"):
        if f"{config}_stage2_case_s" in summary:
            lines.append(f"{config}: stage 2 whole volume {summary[f'{config}_stage2_case_s']:.1f} s")
        if f"{config}_stage2_glibc_case_s" in summary:
            lines.append(f"{config}: stage 2 whole volume with glibc keeping freed memory "
                         f"{summary[f'{config}_stage2_glibc_case_s']:.1f} s, peak RSS "
                         f"{summary[f'{config}_stage2_glibc_peak_rss_mib'] / 1024:.2f} GiB (not the default)")
        if f"{config}_pipeline_s" in summary:
            lines.append(f"{config}: whole pipeline {summary[f'{config}_pipeline_s']:.1f} s per case")
        if f"{config}_peak_rss_mib" in summary:
            lines.append(f"{config}: peak resident memory of the default (fast) tasks "
                         f"{summary[f'{config}_peak_rss_mib'] / 1024:.2f} GiB")
    if "paper_case_estimate_s" in summary:
        minutes = summary["paper_case_estimate_s"] / 60
        lines.append(f"paper: whole case estimate (fast stage 1 + stage 2) {minutes:.1f} min")
    return lines


def machine_info(device: str) -> dict:
    """CPU, cores, torch version and GPU of the machine (asked in a child process: torch stays out of this one)."""
    code = ("import json, torch; from MRISynthesisLib.core.devices import available_cpu_cores as c; "
            "print(json.dumps({'torch': torch.__version__, 'cores': c(), 'cuda': torch.cuda.is_available(), "
            "'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
    info = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                     env=env).stdout)
    info.update(python=platform.python_version(), processor=_cpu_name(), platform=platform.platform(),
                device_requested=device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info(args.device)
    if args.device == "cuda" and not info["cuda"]:
        print("benchmark: --device cuda requested but no CUDA GPU is available", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if info["cuda"] else "cpu")
    threads = args.threads or None
    case_dir = prepare_case(out / "case", args.seed)
    tasks = plan_tasks(args)
    gpu_line = (f"GPU: {info['gpu']}" if info["cuda"]
                else "GPU: none (no CUDA GPU here: GPU rows and GPU memory not measured)")
    print(f"CPU: {info['processor']}, {info['cores']} cores; torch {info['torch']}; {gpu_line}", flush=True)
    runs: dict = {}
    started = datetime.datetime.now().isoformat(timespec="seconds")
    for spec, number in schedule(tasks, args.repeat):
        spec = dict(spec, case_dir=str(case_dir.resolve()), device=device)
        print(f"running {spec['name']} (run {number + 1}) ...", flush=True)
        result = run_one(spec, out / "tasks" / spec["name"], threads)
        runs.setdefault(spec["name"], []).append(result)
        print(f"  {'FAILED: ' + result['error'] if 'error' in result else _fmt(result['wall_s']) + ' s'}", flush=True)
    results = {name: merge_runs(found) for name, found in runs.items()}
    summary = summarise(results, out / "tasks", device)
    header = ["config", "task", "ran", "wall s", "per s", "Mvox/s", "peak RSS GiB", "peak GPU MiB", "kfaults/unit",
              "notes"]
    table = format_table(header, task_rows(results))
    loads = [r.get(k) for found in runs.values() for r in found for k in ("load_before", "load_after")]
    loads = [x for x in loads if x is not None]
    load_line = (f"load average (1 min) during the run: {min(loads):.2f} - {max(loads):.2f} on {info['cores']} cores"
                 if loads else "load average: unknown")
    text = "\n".join([
        f"MRISynthesis benchmark, {started}; case {case_dir.name} (240 x 240 x 155, 1 mm), T1c missing; "
        f"device {device}",
        f"CPU: {info['processor']}, {info['cores']} cores, {threads or info['cores']} threads; torch {info['torch']}",
        gpu_line, load_line, "", table, "", *summary_lines(summary),
        f"Times: fastest of {max(1, args.repeat)} runs (stage 1, pipeline; naive and fast alternate), stage 2 one run. "
        "'per s': slices/s (stage 1), windows/s (stage 2), cases/s (pipeline); peak RSS: highest of the runs; "
        "the naive runs are left out of the peak-memory summary; kfaults/unit: thousands of minor page faults "
        "(fresh memory pages) per slice, window or case.",
    ])
    print("\n" + text)
    report = {"started": started, "machine": info, "device": device, "threads": threads or info["cores"],
              "case": case_dir.name, "args": {k: str(v) for k, v in vars(args).items()}, "results": results,
              "summary": summary, "table": text}
    (out / "benchmark.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "benchmark.txt").write_text(text + "\n")
    print(f"\nwritten: {out / 'benchmark.json'}, {out / 'benchmark.txt'}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
