"""``mrisynth reproduce``: train and evaluate everything behind the paper's Tables 1-4, resumably."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.devices import DEVICE_CHOICES
from .common import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reproduce``."""
    parser = subparsers.add_parser(
        "reproduce", help="reproduce the paper: every stage and Table 1 ablation, evaluated, Tables 1-4",
        description="Train the three stage-1 models of Table 1 (HF-GAN, +SSIM loss, +intensity encoding), the "
        "segmenter and the Refiner with the paper's recipe (--config paper), evaluate them on held-out cases with "
        "the BraSyn scoring protocol (intensity encoding with the prior mean, a 2-sigma draw and the true target's "
        "value; Dice against pseudo-labels of the four acquired sequences) and write tables.md: Tables 1-4 with "
        "the paper's number and the difference beside every cell, and reproduction.json with each step's time and "
        "the time the full recipe takes on this device. Each step runs as its own mrisynth command; run the same "
        "command again after an interruption and it continues where it stopped.",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of BraTS-style training case folders")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for runs, evaluations, tables")
    parser.add_argument("--held-out", type=Path, default=None, metavar="DIR",
                        help="cases to evaluate on (e.g. the BraSyn validation set; labels optional). Default: the "
                        "last fifth of --data, kept out of training")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--config", choices=("paper", "small"), default="paper",
                        help="network sizes and recipe (default paper: the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the 2-sigma draws (default 0)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="a segmenter checkpoint for the Refiner's training and the pseudo-labels (e.g. "
                        "FeTS-compatible weights converted to the project's format); default: train one")
    budgets = parser.add_argument_group("smaller budgets (tests, quick looks; default: the --config recipe)")
    budgets.add_argument("--stage1-epochs", type=int, default=None)
    budgets.add_argument("--segmenter-epochs", type=int, default=None)
    budgets.add_argument("--stage2-epochs", type=int, default=None)
    budgets.add_argument("--steps-per-epoch", type=int, default=None)
    budgets.add_argument("--batch-size", type=int, default=None, help="stage-1 batch size")
    budgets.add_argument("--image-size", type=int, default=None, help="stage-1 slice size")
    budgets.add_argument("--crop-size", type=int, default=None, help="segmenter and Refiner crop size")
    budgets.add_argument("--val-cases", type=int, default=None)
    budgets.add_argument("--evaluation-cases", type=int, default=None, help="evaluate only the first N held-out cases")
    parser.set_defaults(handler=run_reproduce)


def _options(args: argparse.Namespace):
    from ..training.reproduction import ReproductionOptions

    for name in ("stage1_epochs", "segmenter_epochs", "stage2_epochs", "steps_per_epoch", "batch_size",
                 "image_size", "crop_size", "val_cases", "evaluation_cases"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.seed < 0:
        raise UsageError("--seed must be a non-negative integer")
    if args.segmenter is not None and not args.segmenter.exists():
        raise UsageError(f"--segmenter {args.segmenter}: no such file or folder")
    if args.held_out is not None and not args.held_out.is_dir():
        raise UsageError(f"--held-out {args.held_out}: not a folder")
    return ReproductionOptions(
        data_dir=args.data, output_dir=args.output_dir, held_out_dir=args.held_out, device=args.device,
        config=args.config, seed=args.seed, stage1_epochs=args.stage1_epochs, segmenter_epochs=args.segmenter_epochs,
        stage2_epochs=args.stage2_epochs, steps_per_epoch=args.steps_per_epoch, image_size=args.image_size,
        crop_size=args.crop_size, batch_size=args.batch_size, val_cases=args.val_cases, segmenter=args.segmenter,
        evaluation_cases=args.evaluation_cases)


def run_reproduce(args: argparse.Namespace) -> int:
    """Split, train, evaluate (skipping what is done), then write the tables and the time record."""
    from ..core.io import write_text
    from ..training.reproduction import (changed_budgets, full_recipe_estimate, reproduction_plan, run_plan,
                                         split_cases, write_tables)

    options = _options(args)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train, held_out = split_cases(options)
    steps = run_plan(reproduction_plan(options, train, held_out), output / "logs")
    estimate = full_recipe_estimate(output, options.config, options)
    changed = changed_budgets(options)
    notes = [f"Device: {args.device}; recipe: --config {options.config}"
             + (f", changed by {' '.join(changed)}: not the recipe's budgets, so not comparable with the paper"
                if changed else "") + "."]
    tables = write_tables(output, notes)
    record = {"config": options.config, "device": args.device, "train_cases": str(train), "held_out": str(held_out),
              "steps": [{"name": step.name, "minutes": None if step.seconds is None else round(step.seconds / 60, 2)}
                        for step in steps],
              "full_recipe_estimate": estimate}
    write_text(json.dumps(record, indent=2) + "\n", output / "reproduction.json")
    print(f"wrote {tables}")
    print(f"wrote {output / 'reproduction.json'}")
    for name, entry in estimate.items():
        if entry.get("why"):
            print(f"{name}: {entry['seconds_per_step']:.3g} s/step measured; no estimate of the full recipe "
                  f"({entry['why']})")
        elif entry.get("full_recipe_hours") is not None:
            print(f"{name}: {entry['seconds_per_step']:.3g} s/step measured; the full recipe is "
                  f"{entry['full_recipe_steps']} steps, about {entry['full_recipe_hours']:.1f} h on this device")
    return 0
