"""``mrisynth demo``: hide one sequence of a new phantom case, synthesise it, and compare."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..core.devices import DEVICE_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    parser = subparsers.add_parser(
        "demo", help="synthesise a hidden sequence of a new phantom case and compare",
        description="Generate a full-size phantom case the model never saw, hide one sequence, synthesise it "
        "from the other three and write the inputs, the hidden ground truth, the synthetic volume with its "
        "maps, a JSON report and montage.png; print SSIM/PSNR against the hidden sequence. No network needed.",
    )
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("mrisynth-demo"),
                        help="folder for the results (default ./mrisynth-demo)")
    parser.add_argument("--missing", default="t1c", help="sequence to hide and synthesise (default t1c)")
    parser.add_argument("--seed", type=int, default=None,
                        help="phantom seed (default: the model's demo seed, else 90210)")
    parser.add_argument("--model", default=None, help="catalogue bundle name, bundle folder or checkpoint "
                        "(default: the catalogue's default bundle)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--small", action="store_true", help=argparse.SUPPRESS)  # 96x96x64 case, for tests
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print the metrics table and where the files are."""
    from ..evaluation import demo_case as demo
    from ..core.progress import terminal_progress

    with terminal_progress(description="demo") as progress:
        result = demo.run_demo(args.output_dir, missing=args.missing, seed=args.seed, model=args.model,
                               device=args.device, small=args.small, progress=progress)
    for note in result.notes:
        print(f"note: {note}")
    sources = ", ".join(s.short_name for s in result.sources)
    print(f"Phantom case {result.case_id} (seed {result.seed}): {result.missing.display_name} hidden and "
          f"synthesised from {sources} by model {result.model_name}.")
    print(f"Compared with the hidden {result.missing.short_name}:")
    print(demo.format_table(result.metrics))
    files = result.files
    print(f"Files in {result.output_dir}:")
    rows = [("inputs", ", ".join(files[k].name for k in files if k.startswith("input_"))),
            ("ground truth", f"{files['ground_truth'].name} (hidden from the model), {files['label'].name}"),
            ("synthetic", files["synthetic"].name),
            ("maps", ", ".join(files[k].name for k in ("stage1", "refinement_map", "tumour_map", "error_map")
                               if k in files)),
            ("report", files["report"].name), ("montage", files["montage"].name)]
    for name, value in rows:
        print(f"  {name + ':':<14}{value}")
    steps = ("phantom_s", "synthesis_s", "metrics_s", "write_s", "montage_s")
    print("Time: " + ", ".join(f"{k[:-2]} {result.timings[k]:.1f} s" for k in steps))
    return 0
