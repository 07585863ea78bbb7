"""What the uncertainty map costs, as a ratio to the plain synthesis, measured in one run.

On the demo case (the full-size phantom ``mrisynth demo`` makes, T1c missing, bundled demo model, the CPU
by default) this times ``pipeline.synthesize`` without the map and, for each ``--samples`` N, the extra
time the N samples take (the pipeline's ``uncertainty_t1c_s``). Plain runs and runs with samples alternate
``--repeat`` times and the fastest of each counts (shared machines are noisy). The ratio is the samples'
time over the plain synthesis's total time; the Slicer panel's default N is the largest N whose ratio
stays within 2 (and at least 4).

    python benchmarks/uncertainty.py --output-dir out/uncertainty [--samples 4 6 8] [--repeat 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from MRISynthesisLib.core.bundles import load_bundle  # noqa: E402
from MRISynthesisLib.core.pipeline import synthesize  # noqa: E402
from MRISynthesisLib.evaluation.demo_case import demo_seed  # noqa: E402
from MRISynthesisLib.phantom import generate_case  # noqa: E402
from MRISynthesisLib.sequences import SEQUENCES, Sequence  # noqa: E402

#: The cost the issue allows for the map to be on by default in Slicer: N samples within 2 x the synthesis.
DEFAULT_RATIO_LIMIT = 2.0


def measure(samples: list, repeat: int, device: str, model: str) -> dict:
    """Fastest plain synthesis and fastest sample time per N, on the demo case."""
    bundle = load_bundle(model)
    seed, _ = demo_seed(bundle)
    case = generate_case(seed)
    images = {s: case.images[s] for s in SEQUENCES if s is not Sequence.T1C}
    synthesize(images, bundle, targets=["t1c"], device=device)  # warm-up (first-call costs)
    plain, extra = [], {n: [] for n in samples}
    for _ in range(repeat):
        started = time.perf_counter()
        result = synthesize(images, bundle, targets=["t1c"], device=device)
        plain.append(result.timings["total_s"])
        for n in samples:
            result = synthesize(images, bundle, targets=["t1c"], device=device, uncertainty=n)
            extra[n].append(result.timings["uncertainty_t1c_s"])
        print(f"round done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    base = min(plain)
    rows = {n: {"samples_s": min(times), "ratio": min(times) / base} for n, times in extra.items()}
    within = [n for n, row in rows.items() if row["ratio"] <= DEFAULT_RATIO_LIMIT]
    return {"case_seed": seed, "device": device, "model": bundle.name, "synthesis_s": base, "samples": rows,
            "largest_within_2x": max(within) if within else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("out/uncertainty"))
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="demo")
    args = parser.parse_args(argv)
    report = measure(sorted(set(args.samples)), max(1, args.repeat), args.device, args.model)
    print(f"plain synthesis: {report['synthesis_s']:.1f} s ({report['device']}, model {report['model']})")
    print(f"{'samples':>8} {'extra s':>9} {'ratio':>7}")
    for n, row in report["samples"].items():
        print(f"{n:>8} {row['samples_s']:>9.1f} {row['ratio']:>7.2f}")
    print(f"largest N within {DEFAULT_RATIO_LIMIT:g}x: {report['largest_within_2x']}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
