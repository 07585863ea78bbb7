#!/usr/bin/env python
"""Is the uncertainty map calibrated? Its Spearman correlation with the error and its AUROC for the worst
voxels, on held-out cases with ground truth, against two baselines.

For every complete case under ``--data`` and every target (``--targets``, default all four), the target is
synthesised from the other three acquired sequences with ``--samples`` uncertainty samples and scored over the
brain voxels by :mod:`MRISynthesisLib.evaluation.calibration`: Spearman's correlation between the uncertainty
and |synthetic - acquired|, and the AUROC of the uncertainty for finding the 10 % worst-error voxels; the same
for the refinement magnitude |final - stage 1| and for a constant map (0.5). Writes ``calibration.csv``,
``calibration.md`` and ``reliability.png`` into ``--output-dir`` and prints the table.

Usage:
    mrisynth phantom -o /tmp/unc-eval --cases 5 --seed 5000 --small
    python scripts/uncertainty_calibration.py --data /tmp/unc-eval --model demo --samples 4 -o /tmp/unc-calibration
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from MRISynthesisLib.core.bundles import load_bundle  # noqa: E402
from MRISynthesisLib.core.io import write_text  # noqa: E402
from MRISynthesisLib.core.uncertainty import check_samples  # noqa: E402
from MRISynthesisLib.evaluation.calibration import (  # noqa: E402
    CALIBRATION_COLUMNS, calibrate_case, save_reliability_diagram)
from MRISynthesisLib.evaluation.cases import find_evaluation_cases  # noqa: E402
from MRISynthesisLib.evaluation.tables import calibration_markdown, rows_to_csv  # noqa: E402
from MRISynthesisLib.evaluation.writing import reliability_curves  # noqa: E402


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of complete case folders (held out)")
    parser.add_argument("--model", default="demo", help="bundle name, folder or checkpoint (default: demo)")
    parser.add_argument("--samples", type=int, default=4, help="uncertainty samples per target (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    parser.add_argument("--targets", default=None, help="comma-separated targets (default: all four)")
    parser.add_argument("--cases", type=int, default=None, help="only the first N cases")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("out/uncertainty-calibration"))
    args = parser.parse_args(argv)
    samples = check_samples(args.samples, "--samples")
    if samples == 0:
        parser.error("--samples must be at least 2")
    bundle = load_bundle(args.model)
    rows = []
    for files in find_evaluation_cases(args.data, args.cases):
        found = calibrate_case(files, bundle, samples, args.seed, args.device,
                               args.targets.split(",") if args.targets else None)
        rows += found
        for row in found:
            print(f"{row['case']} {row['target']}: AUROC {_number(row['uncertainty_auroc'])} (refinement "
                  f"{_number(row['refinement_auroc'])}), Spearman {_number(row['uncertainty_spearman'])} "
                  f"(refinement {_number(row['refinement_spearman'])})", flush=True)
    title = f"Uncertainty calibration of {bundle.name} ({samples} samples, seed {args.seed}; MRISynthesis)"
    text = f"# {title}\n\n{len({r['case'] for r in rows})} case(s) from {args.data}.\n" + calibration_markdown(rows)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_text(rows_to_csv(rows, ["case", "target", "samples", *CALIBRATION_COLUMNS]),
               args.output_dir / "calibration.csv")
    write_text(text, args.output_dir / "calibration.md")
    save_reliability_diagram(args.output_dir / "reliability.png", reliability_curves(rows), title)
    print(text)
    print(f"wrote {args.output_dir}/calibration.csv, calibration.md, reliability.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
