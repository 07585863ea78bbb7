"""``mrisynth train stage1|segmenter|stage2``: train the networks of a bundle into one run folder.

Each command trains one network on BraTS-style case folders (``--data``), logs to
``RUN_DIR/train-<what>.log``, writes per-epoch metrics (CSV and JSON), a resumable checkpoint
every epoch (``--resume`` continues it) and, at the end, the network into the run folder's
model bundle, so that ``mrisynth synthesize --model RUN_DIR`` uses what was trained.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.devices import DEVICE_CHOICES

#: Paper defaults (epochs, batch size) per command; CPU demos pass smaller values.
DEFAULTS = {"stage1": (20, 8), "segmenter": (100, 2), "stage2": (100, 4)}


def _common(parser: argparse.ArgumentParser, command: str) -> None:
    epochs, batch = DEFAULTS[command]
    parser.add_argument("--data", type=Path, required=True, help="folder of BraTS case folders (2023+ or 2021 names)")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder: split, caches, logs, metrics, checkpoints and the model bundle")
    parser.add_argument("--config", choices=("small", "paper"), default="small",
                        help="network size: 'small' (CPU demo) or 'paper' (BraSyn 2024 sizes); default small")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs to train in total (default {epochs})")
    parser.add_argument("--batch-size", type=int, default=batch, help=f"samples per step (default {batch})")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="steps per epoch (default: one pass over the training data)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where to train (default auto: CUDA when present)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the sampling and the weights")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--val-cases", type=int, default=None,
                        help="validation cases (default 10%%; fixed by the run folder's split.json once written)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this many minutes, finishing the step and writing checkpoint and bundle")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate of AdamW (default 1e-4)")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps (default 100, "
                        "at most a tenth of the run)")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimiser step (default 1)")
    parser.add_argument("--log-every", type=int, default=10, help="log the losses every N steps (default 10)")
    parser.add_argument("--val-targets", default=None, metavar="SEQS",
                        help="targets validated each epoch, e.g. t1c,t2f (default all four; stage 1 and 2)")
    parser.add_argument("--keep", choices=("best", "last"), default="best",
                        help="weights the bundle holds: the epoch with the best validation score (default) or "
                             "the last epoch's")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: every core; fewer can be faster on a shared machine)")


def _input_patterns(parser: argparse.ArgumentParser, hfgan: str) -> None:
    parser.add_argument("--input-patterns", choices=("hfgan", "missing-one"), default="hfgan",
                        help=f"inputs per training sample: {hfgan} or 'missing-one' (always the other three, "
                             "the BraSyn task)")


def _crop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crop-size", type=int, nargs="+", default=[128], metavar="N",
                        help="random crop size, one or three values: multiples of 16 for stage 2, of 8 for the "
                             "segmenter (default 128)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and its three commands."""
    train = subparsers.add_parser(
        "train", help="train stage 1, the segmenter or stage 2 into a run folder",
        description="Train the networks of a model bundle on BraTS-style case folders. Typical order: "
        "'train stage1', 'train segmenter', 'train stage2' into the same --output-dir; then "
        "'mrisynth synthesize --model RUN_DIR'.")
    commands = train.add_subparsers(dest="train_command", metavar="WHAT")
    train.set_defaults(handler=lambda args: _help(train))

    parser = commands.add_parser("stage1", help="the 2D HF-GAN generator with intensity encoding",
                                 description="Train the stage-1 HF-GAN (paper equation 6) on axial slices.")
    _common(parser, "stage1")
    parser.add_argument("--image-size", type=int, default=None,
                        help="slice size of the model grid (240 mm field of view): 240 = 1 mm (default), "
                             "120 = 2 mm for a CPU demo; a multiple of the generator's downsampling")
    _input_patterns(parser, "'hfgan' (default, as HF-GAN: one input half the time, else two or three)")
    parser.add_argument("--tumour-fraction", type=float, default=0.0, metavar="F",
                        help="share of each batch drawn from slices with tumour core (necrosis or enhancing "
                             "tumour, labels 1/3), so that a short run learns enhancement (default 0: every "
                             "slice alike, as HF-GAN)")
    parser.set_defaults(handler=run_train_stage1)

    parser = commands.add_parser("segmenter", help="the SegResNet tumour segmenter (WT/TC/ET)",
                                 description="Train the tumour segmenter used by stage-2 training and the maps.")
    _common(parser, "segmenter")
    _crop(parser)
    parser.add_argument("--image-size", type=int, default=None,
                        help="model grid when the run folder has no stage1.pt yet (default 240)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from existing weights: checkpoint, state dict or MONAI bundle folder")
    _channel_orders(parser, "")
    parser.set_defaults(handler=run_train_segmenter)

    parser = commands.add_parser("stage2", help="the 3D Refiner (SSIM + Dice of the frozen segmenter)",
                                 description="Train the stage-2 Refiner (paper equation 7) on random 3D crops.")
    _common(parser, "stage2")
    _crop(parser)
    parser.add_argument("--stage1", type=Path, default=None, help="stage-1 checkpoint (default RUN_DIR/stage1.pt)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="segmenter checkpoint, state dict or MONAI bundle (default RUN_DIR/segmenter.pt)")
    _channel_orders(parser, "segmenter-")
    parser.add_argument("--ssim-weight", type=float, default=1.0, help="lambda_1 of the SSIM loss (default 1)")
    parser.add_argument("--dice-weight", type=float, default=1.0, help="lambda_2 of the Dice loss (default 1)")
    _input_patterns(parser, "'hfgan' (default: any of the seven input sets)")
    parser.set_defaults(handler=run_train_stage2)


def _channel_orders(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument(f"--{prefix}inputs", default=None, metavar="SEQS",
                        help="input channel order of foreign segmenter weights, e.g. t1c,t1n,t2w,t2f for MONAI's "
                             "brats_mri_segmentation (default: ours, t1n,t1c,t2w,t2f)")
    parser.add_argument(f"--{prefix}outputs", default=None, metavar="REGIONS",
                        help="output order of foreign segmenter weights, e.g. TC,WT,ET (default: WT,TC,ET)")


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _split(text):
    return tuple(part.strip() for part in text.split(",")) if text else None


def _common_options(args: argparse.Namespace) -> dict:
    options = dict(data_dir=args.data, run_dir=args.output_dir, config=args.config, epochs=args.epochs,
                   batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, device=args.device,
                   seed=args.seed, resume=args.resume, val_cases=args.val_cases, max_minutes=args.max_minutes,
                   warmup_steps=args.warmup_steps, accumulation=args.accumulation, log_every=args.log_every,
                   cpu_threads=args.threads, val_targets=_split(args.val_targets), keep=args.keep)
    if args.lr is not None:
        options["learning_rate"] = args.lr
    return options


def _run(train, options, description: str) -> int:
    """Run a training function with a progress bar and log lines, then print where things are."""
    from tqdm import tqdm

    from ..core.progress import terminal_progress
    from ..training.loop import is_headline

    def echo(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    with terminal_progress(description=description) as progress:
        result = train(options, progress=progress, echo=echo)
    last = result.history[-1] if result.history else {}
    headline = ", ".join(f"{k} {v:.4f}" for k, v in last.items()
                         if isinstance(v, float) and (k == "train_total" or is_headline(k)))
    print(f"{description}: {result.epochs_done} epochs, {result.global_step} steps"
          + (" (stopped by --max-minutes)" if result.stopped_early else "") + (f"; {headline}" if headline else ""))
    print(f"model bundle: {result.run_dir}")
    return 0


def run_train_stage1(args: argparse.Namespace) -> int:
    """``train stage1``."""
    from ..training.stage1 import Stage1TrainingOptions, train_stage1

    options = Stage1TrainingOptions(image_size=args.image_size, input_patterns=args.input_patterns,
                                    tumour_fraction=args.tumour_fraction, **_common_options(args))
    return _run(train_stage1, options, "train stage1")


def run_train_segmenter(args: argparse.Namespace) -> int:
    """``train segmenter``."""
    from ..training.segmenter import SegmenterTrainingOptions, train_segmenter

    options = SegmenterTrainingOptions(image_size=args.image_size, crop_size=tuple(args.crop_size), init=args.init,
                                       input_order=_split(args.inputs), output_order=_split(args.outputs),
                                       **_common_options(args))
    return _run(train_segmenter, options, "train segmenter")


def run_train_stage2(args: argparse.Namespace) -> int:
    """``train stage2``."""
    from ..training.stage2 import Stage2TrainingOptions, train_stage2

    options = Stage2TrainingOptions(crop_size=tuple(args.crop_size), stage1=args.stage1, segmenter=args.segmenter,
                                    segmenter_input_order=_split(args.segmenter_inputs),
                                    segmenter_output_order=_split(args.segmenter_outputs),
                                    ssim_weight=args.ssim_weight, dice_weight=args.dice_weight,
                                    input_patterns=args.input_patterns, **_common_options(args))
    return _run(train_stage2, options, "train stage2")
