"""``mrisynth train stage1|segmenter|stage2``: train the networks of a bundle into one run folder.

Each command trains one network on BraTS-style case folders (``--data``), logs to
``RUN_DIR/train-<what>.log``, writes per-epoch metrics (CSV and JSON), a resumable checkpoint
every epoch (``--resume`` continues it) and, at the end, the network into the run folder's
model bundle, so that ``mrisynth synthesize --model RUN_DIR`` uses what was trained.

``--config`` picks network sizes and, for stage 1 and 2, the training recipe
(``training/presets.py``: ``small``, the project's CPU recipe, or ``paper``, the BraSyn-2024
paper and the HF-GAN reference); every flag given explicitly overrides its preset value.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.devices import DEVICE_CHOICES

#: Segmenter defaults (epochs, batch size); stage 1 and 2 take theirs from the --config recipe.
DEFAULTS = {"segmenter": (100, 2)}


def _preset_default(command: str, name: str) -> str:
    """'small X, paper Y' for a help text (the segmenter has one default for both)."""
    from ..training.presets import RECIPES

    if command not in RECIPES:
        return str(dict(zip(("epochs", "batch_size"), DEFAULTS[command])).get(name, "see --config"))
    values = {preset: RECIPES[command][preset][name] for preset in RECIPES[command]}
    return ", ".join(f"{preset} {value:g}" if isinstance(value, float) else f"{preset} {value}"
                     for preset, value in values.items())


def _common(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder of BraTS case folders (2023+ or 2021 names)")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder: split, caches, logs, metrics, checkpoints and the model bundle")
    recipe = ("" if command == "segmenter" else
              " and training recipe ('paper': the paper's batch, epochs, optimiser, schedule and sampling); "
              "explicit flags override the preset")
    parser.add_argument("--config", choices=("small", "paper"), default="small",
                        help=f"network size: 'small' (CPU demo) or 'paper' (BraSyn 2024 sizes){recipe}; default small")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs to train in total (default: {_preset_default(command, 'epochs')})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"samples per step (default: {_preset_default(command, 'batch_size')})")
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
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default 100, "
                        "at most a tenth of the run)")
    parser.add_argument("--optimizer", choices=("adamw", "adam"), default=None,
                        help=f"optimiser (default: {_preset_default(command, 'optimizer')})"
                        if command != "segmenter" else "optimiser (default adamw)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"weight decay (default: {_preset_default(command, 'weight_decay')})"
                        if command != "segmenter" else "weight decay (default 1e-4)")
    parser.add_argument("--lr-schedule", choices=("warmup-cosine", "hfgan"), default=None,
                        help="'warmup-cosine' (warm-up, cosine down to 1 %%) or 'hfgan' (the HF-GAN reference: "
                             "warm-up from 0, cosine down to 0)"
                        + (f" (default: {_preset_default(command, 'lr_schedule')})" if command != "segmenter"
                           else " (default warmup-cosine)"))
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimiser step (default 1)")
    parser.add_argument("--log-every", type=int, default=10, help="log the losses every N steps (default 10)")
    parser.add_argument("--val-targets", default=None, metavar="SEQS",
                        help="targets validated each epoch, e.g. t1c,t2f (default all four; stage 1 and 2)")
    parser.add_argument("--keep", choices=("best", "last"), default="best",
                        help="weights the bundle holds: the epoch with the best validation score (default) or "
                             "the last epoch's")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: every core; fewer can be faster on a shared machine)")


def _input_patterns(parser: argparse.ArgumentParser, hfgan: str, command: str) -> None:
    parser.add_argument("--input-patterns", choices=("hfgan", "missing-one"), default=None,
                        help=f"inputs per training sample: {hfgan} or 'missing-one' (always the other three, "
                             f"the BraSyn task); default: {_preset_default(command, 'input_patterns')}")


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
    _input_patterns(parser, "'hfgan' (as HF-GAN: one input half the time, else two or three)", "stage1")
    parser.add_argument("--tumour-fraction", type=float, default=None, metavar="F",
                        help="share of each batch drawn from slices with tumour core (necrosis or enhancing "
                             "tumour, labels 1/3), so that a short run learns enhancement (default 0: every "
                             "slice alike, as HF-GAN)")
    parser.add_argument("--slice-targets", choices=("random", "all"), default=None,
                        help="'random': one random target per slice and epoch; 'all': every slice for all four "
                             "targets each epoch, as the HF-GAN reference (4 x the steps); default: "
                             + _preset_default("stage1", "slice_targets"))
    parser.add_argument("--no-intensity-encoding", action="store_true",
                        help="ablation: a generator without the intensity code (the paper's HF-GAN and +SSIM rows); "
                             "recorded in the bundle, and synthesis then feeds no intensity")
    parser.add_argument("--no-ssim-loss", action="store_true", help="ablation: drop the SSIM loss term")
    parser.add_argument("--no-tumour-ssim-loss", action="store_true",
                        help="ablation: drop the tumour-region SSIM loss term")
    parser.add_argument("--tumour-l1-weight", type=float, default=0.0, metavar="W",
                        help="weight of an L1 term averaged over the tumour's pixels only (not in the paper; "
                             "default 0): keeps a short run from averaging T1c enhancement away")
    parser.add_argument("--enhancement-weight", type=float, default=0.0, metavar="W",
                        help="weight of a term on the T1c's tumour contrast (not in the paper; default 0): the "
                             "error of the brightness of necrosis, oedema and enhancing tumour, each against "
                             "healthy brain's, so that the synthetic T1c enhances instead of copying the T1")
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
    _input_patterns(parser, "'hfgan' (any of the seven input sets)", "stage2")
    parser.add_argument("--crops", choices=("uniform", "centred"), default=None,
                        help="'uniform': any crop position alike (the paper); 'centred': on a random brain voxel, "
                             "or a tumour voxel for --tumour-fraction of the crops; default: "
                             + _preset_default("stage2", "crops"))
    parser.add_argument("--tumour-fraction", type=float, default=None, metavar="F",
                        help="share of centred crops centred on tumour (default 0.5 with --config small)")
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
    """The options every command takes; recipe flags only when given, so the preset fills the rest."""
    options = dict(data_dir=args.data, run_dir=args.output_dir, config=args.config,
                   steps_per_epoch=args.steps_per_epoch, device=args.device,
                   seed=args.seed, resume=args.resume, val_cases=args.val_cases, max_minutes=args.max_minutes,
                   accumulation=args.accumulation, log_every=args.log_every,
                   cpu_threads=args.threads, val_targets=_split(args.val_targets), keep=args.keep)
    given = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                 warmup_steps=args.warmup_steps, optimizer=args.optimizer, weight_decay=args.weight_decay,
                 lr_schedule=args.lr_schedule)
    options.update({name: value for name, value in given.items() if value is not None})
    return options


def _explicit(args: argparse.Namespace, *names: str) -> dict:
    """The named flags that were given (not None), for options whose preset fills the rest."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


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


def stage1_options(args: argparse.Namespace):
    """The :class:`Stage1TrainingOptions` of ``train stage1`` arguments (recipe fields not given stay None)."""
    from ..training.stage1 import Stage1LossWeights, Stage1TrainingOptions

    return Stage1TrainingOptions(image_size=args.image_size, intensity_encoding=not args.no_intensity_encoding,
                                 ssim_loss=not args.no_ssim_loss, tumour_ssim_loss=not args.no_tumour_ssim_loss,
                                 loss_weights=Stage1LossWeights(reconstruction_tumour=args.tumour_l1_weight,
                                                                 enhancement_contrast=args.enhancement_weight),
                                 **_explicit(args, "input_patterns", "tumour_fraction", "slice_targets"),
                                 **_common_options(args))


def run_train_stage1(args: argparse.Namespace) -> int:
    """``train stage1``."""
    from ..training.stage1 import train_stage1

    return _run(train_stage1, stage1_options(args), "train stage1")


def run_train_segmenter(args: argparse.Namespace) -> int:
    """``train segmenter``."""
    from ..training.segmenter import SegmenterTrainingOptions, train_segmenter

    common = _common_options(args)
    epochs, batch = DEFAULTS["segmenter"]
    common.setdefault("epochs", epochs)
    common.setdefault("batch_size", batch)
    options = SegmenterTrainingOptions(image_size=args.image_size, crop_size=tuple(args.crop_size), init=args.init,
                                       input_order=_split(args.inputs), output_order=_split(args.outputs),
                                       **common)
    return _run(train_segmenter, options, "train segmenter")


def stage2_options(args: argparse.Namespace):
    """The :class:`Stage2TrainingOptions` of ``train stage2`` arguments (recipe fields not given stay None)."""
    from ..training.stage2 import Stage2TrainingOptions

    return Stage2TrainingOptions(crop_size=tuple(args.crop_size), stage1=args.stage1, segmenter=args.segmenter,
                                 segmenter_input_order=_split(args.segmenter_inputs),
                                 segmenter_output_order=_split(args.segmenter_outputs),
                                 ssim_weight=args.ssim_weight, dice_weight=args.dice_weight,
                                 **_explicit(args, "input_patterns", "crops", "tumour_fraction"),
                                 **_common_options(args))


def run_train_stage2(args: argparse.Namespace) -> int:
    """``train stage2``."""
    from ..training.stage2 import train_stage2

    return _run(train_stage2, stage2_options(args), "train stage2")
