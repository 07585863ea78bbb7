"""What running the synthesis in a worker process costs on top of running it in Slicer's own process.

The Slicer module runs every synthesis in a worker process (crash isolation, hard cancel,
memory returned). This measures, in one run on the demo case (full-size phantom, T1c
missing, bundled demo model):

* **in-process**: what the module's in-process path does, in this process after a warm-up run (a
  Slicer session where torch is already imported): the inputs' precondition check, then
  ``pipeline.synthesize`` (the model bundle is loaded on every call either way);
* **worker process**: what the module's default does: a
  :class:`~MRISynthesisLib.worker.supervisor.ProcessJob` handed to a standby worker (started
  ahead, Python and torch loaded), stage-1 volumes not sent back (the panel's default), from
  ``start()`` until the result is in memory; split into writing the inputs, the worker's check and
  synthesis, and saving plus reading back the results. ``--no-standby`` starts a fresh worker.

The two alternate ``--repeat`` times and the fastest of each counts (shared machines are
noisy). The overhead is reported as a share of the in-process synthesis time; the goal the
project set is under 15 %.

    python benchmarks/worker_overhead.py --output-dir out/worker-overhead [--repeat 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from MRISynthesisLib.core.pipeline import synthesize  # noqa: E402
from MRISynthesisLib.phantom import generate_case  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402
from MRISynthesisLib.worker.supervisor import ProcessJob, discard_standby, prestart_worker  # noqa: E402

#: Same case as ``mrisynth demo`` uses by default is not needed: any unseen full-size phantom costs the same.
CASE_SEED = 1


def time_in_process(images: dict, model: str, device: str) -> dict:
    from MRISynthesisLib.clinical.study_run import StudyOptions, model_ready_inputs

    started = time.perf_counter()
    ready, _, _ = model_ready_inputs(images, None, StudyOptions())
    result = synthesize(ready, model, device=device)
    return {"total_s": time.perf_counter() - started, "synthesis_s": result.timings["total_s"]}


def time_worker(images: dict, model: str, device: str, threads: int, standby: bool) -> dict:
    """Wall time of a worker-process job and its phases, from the moments its log lines arrive."""
    marks: dict = {}
    if standby:
        prestart_worker(None, threads, model)  # as the panel does when it opens, with its model
        time.sleep(15)  # the module starts it when the panel opens, long before a click
    started = time.perf_counter()
    job = ProcessJob(images, model, device=device, cpu_threads=threads, use_standby=standby, keep_stage1=False).start()
    while not job.wait(0.01):
        for event in job.poll():
            now = time.perf_counter() - started
            for key, text in (("launch", "synthesis process"), ("worker_up", "reading"),
                              ("model", "loading model"), ("done", "done")):
                if text in event.message and key not in marks:
                    marks[key] = now
    total = time.perf_counter() - started
    job.poll()
    result = job.take_result()
    if result is None:
        raise SystemExit(f"worker job {job.state.value}: {job.error.reason if job.error else ''}")
    return {"total_s": total, "synthesis_s": result.timings["total_s"], "write_inputs_s": marks.get("launch", 0.0),
            "python_start_s": marks.get("worker_up", 0.0) - marks.get("launch", 0.0),
            "engine_import_s": marks.get("model", 0.0) - marks.get("worker_up", 0.0),
            "check_and_synthesis_s": marks.get("done", total) - marks.get("model", 0.0),
            "after_synthesis_s": total - marks.get("done", total)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("out/worker-overhead"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--no-standby", action="store_true", help="start a fresh worker for each job")
    args = parser.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or None
    case = generate_case(CASE_SEED, small=False)
    images = {s: image for s, image in case.images.items() if s is not Sequence.T1C}
    print(f"case {case.case_id}: {images[Sequence.T1N].GetSize()}, model {args.model}, device {args.device}")
    time_in_process(images, args.model, args.device)  # warm-up: torch and MONAI imported, as in a Slicer session
    runs: dict = {"in_process": [], "worker": []}
    for index in range(args.repeat):
        runs["worker"].append(time_worker(images, args.model, args.device, threads, not args.no_standby))
        time.sleep(15)  # the next standby worker loads now, as it would between two clicks; not during a timing
        runs["in_process"].append(time_in_process(images, args.model, args.device))
        print(f"run {index + 1}: worker {runs['worker'][-1]['total_s']:.2f} s, "
              f"in-process {runs['in_process'][-1]['total_s']:.2f} s")
    discard_standby()
    best_worker = min(runs["worker"], key=lambda r: r["total_s"])
    best_in = min(runs["in_process"], key=lambda r: r["total_s"])
    overhead = best_worker["total_s"] - best_in["total_s"]
    share = overhead / best_in["total_s"]
    lines = [
        f"in-process synthesis (warm, fastest of {args.repeat}): {best_in['total_s']:.2f} s",
        f"worker-process job (fastest of {args.repeat}, {'fresh worker' if args.no_standby else 'standby worker'}): "
        f"{best_worker['total_s']:.2f} s",
        f"  writing the inputs (NRRD):             {best_worker['write_inputs_s']:.2f} s",
        f"  starting Python:                       {best_worker['python_start_s']:.2f} s",
        f"  importing torch and the engine:        {best_worker['engine_import_s']:.2f} s",
        f"  the worker's check and synthesis:      {best_worker['check_and_synthesis_s']:.2f} s "
        f"(synthesis {best_worker['synthesis_s']:.2f} s; in-process {best_in['synthesis_s']:.2f} s)",
        f"  saving and reading back the results:   {best_worker['after_synthesis_s']:.2f} s",
        f"overhead: {overhead:.2f} s = {100 * share:.1f} % of the in-process synthesis (goal: < 15 %)",
        f"load average during the run: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "",
    ]
    text = "\n".join(line for line in lines if line)
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "worker_overhead.txt").write_text(text + "\n", encoding="utf-8")
    (args.output_dir / "worker_overhead.json").write_text(json.dumps(
        {"runs": runs, "overhead_s": overhead, "overhead_share": share, "device": args.device, "model": args.model},
        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
