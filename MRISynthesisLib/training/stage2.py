"""Stage-2 training: the 3D Refiner with SSIM and the Dice of a frozen segmenter (paper equation 7).

``L = lambda_1 L_ssim + lambda_2 L_Dice`` with both lambdas 1:

* Each step draws a random target and its inputs (``--input-patterns``: any non-empty set of
  the other sequences, or always the other three, the paper's task), and random crops of
  training cases (``--crops``: uniformly placed, as the paper, or centred on brain and, for
  ``--tumour-fraction`` of them, on tumour). ``--config`` picks the recipe (:mod:`.presets`).
* The refiner's input is the stage-1 output of that target from those inputs, made once per
  (case, target, inputs) with the inference code and cached under the stage-1 checkpoint's
  SHA-256; it and the inputs are z-scored over the brain exactly as ``stages.refine_on_model_grid``.
* ``L_ssim``: 3D SSIM between the refined crop and the real target, both in the stage-1
  volume's z-score units (so the pipeline's inverse z-score maps the ideal output onto the
  real target), scaled to [0, 1] by the real crop's range, averaged over the brain.
* ``L_Dice``: the frozen segmenter sees the real z-scored sequences with the refined one in
  the target's slot (the refined crop is already in z-score units) and is scored with Dice
  against the WT/TC/ET regions of the label; gradients flow through it into the refiner.

Validation refines whole volumes with the pipeline code and reports SSIM (whole brain,
tumour, healthy) and the segmenter's Dice on the completed set, next to the stage-1 values.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence as SequenceT

import numpy as np
import torch
from monai.losses import DiceLoss

from .. import metrics
from ..models.refiner import Refiner, RefinerConfig
from ..models.segmenter import label_to_regions
from ..core.preprocessing import fit_zscore
from ..sequences import SEQUENCES
from .cases import load_or_create_split
from .crops import check_crop_mode, crop_box, crop_size_for, random_centre, take_crop, uniform_box
from .input_patterns import input_sets
from .loop import EpochTrainer, TrainingResult, bundle_training_info, start_run
from .losses import scale_by_target, ssim_loss
from .optimisation import autocast_context, make_optimizer
from .options import SynthesisTrainOptions, TrainingError, preset_config, validation_targets
from .prepared_cases import PreparedCase, PreparedCaseStore
from .run_files import recipe_line, write_recipe, write_run_bundle
from .segmenter import load_segmenter_weights, region_dice, segment_regions
from .stage1_outputs import Stage1OutputCache



@dataclasses.dataclass
class Stage2TrainingOptions(SynthesisTrainOptions):
    """``mrisynth train stage2`` options; ``None`` recipe fields come from the ``config`` preset."""

    command = "stage2"

    refiner_config: Optional[RefinerConfig] = None
    crop_size: tuple = (128, 128, 128)
    stage1: Optional[Path] = None
    segmenter: Optional[Path] = None
    segmenter_input_order: Optional[tuple] = None
    segmenter_output_order: Optional[tuple] = None
    ssim_weight: float = 1.0
    dice_weight: float = 1.0
    crops: Optional[str] = None

    def _check_resolved(self) -> None:
        """The synthesis checks, a known crop mode, and a tumour fraction only for centred crops."""
        super()._check_resolved()
        check_crop_mode(self.crops)
        if not 0.0 <= float(self.tumour_fraction) <= 1.0:
            raise TrainingError(f"--tumour-fraction must be between 0 and 1, got {self.tumour_fraction:g}")
        if self.crops == "uniform" and self.tumour_fraction and "tumour_fraction" in (self.overrides or ()):
            raise TrainingError(f"--tumour-fraction {self.tumour_fraction:g} needs --crops centred "
                                "(uniform crops are placed without regard to the tumour)")

    def model_config(self) -> RefinerConfig:
        """``refiner_config`` or the ``config`` preset."""
        return preset_config(self.refiner_config, self.config, RefinerConfig)


# --------------------------------------------------------------------------- data


def stage2_batch(cases: SequenceT[PreparedCase], cache: Stage1OutputCache, batch_size: int, crop: tuple,
                 rng: np.random.Generator, tumour_fraction: float = 0.5, patterns: str = "hfgan",
                 crops: str = "centred") -> dict:
    """One batch: a random target and input set shared by ``batch_size`` random crops.

    ``crops``: ``centred`` on a random brain voxel (a tumour voxel with probability
    ``tumour_fraction``) or ``uniform`` (any position alike, ``tumour_fraction`` unused).

    Returns numpy arrays: ``stage1`` [B,1,...] and ``truth`` [B,1,...] in the stage-1 volume's
    z-score units, ``inputs`` [B,4,...] (z-scored sources, other channels 0, as the pipeline),
    ``acquired`` [B,4,...] (every real sequence z-scored, for the segmenter), ``regions``
    [B,3,...], ``brain`` [B,1,...]; ``target``/``sources`` as canonical indices and ``origins``,
    each crop's (case index, first voxel).
    """
    target = SEQUENCES[int(rng.integers(len(SEQUENCES)))]
    choices = input_sets(target, patterns)
    sources = choices[int(rng.integers(len(choices)))]
    fields: dict = {k: [] for k in ("stage1", "truth", "inputs", "acquired", "regions", "brain")}
    origins = []
    for _ in range(batch_size):
        index = int(rng.integers(len(cases)))
        case = cases[index]
        stage1 = cache.get(case, target, sources)
        if crops == "uniform":
            box = uniform_box(case.brain.shape, crop, rng)
        else:
            box = crop_box(case.brain.shape, crop, random_centre(case, rng, tumour_fraction))
        origins.append((index, tuple(sl.start for sl in box)))
        brain = take_crop(case.brain, box, crop, fill=0).astype(bool)
        stage1_zscore = fit_zscore(stage1, case.brain)  # whole volume, as stages.refine_on_model_grid
        fields["stage1"].append(stage1_zscore.forward(take_crop(stage1, box, crop), brain)[None])
        fields["truth"].append(stage1_zscore.forward(take_crop(case.unit(target), box, crop), brain)[None])
        acquired = np.stack([case.zscored_crop(s, box, crop) for s in SEQUENCES])
        inputs = np.zeros_like(acquired)
        for sequence in sources:
            inputs[SEQUENCES.index(sequence)] = acquired[SEQUENCES.index(sequence)]
        fields["inputs"].append(inputs)
        fields["acquired"].append(acquired)
        fields["regions"].append(label_to_regions(take_crop(case.label, box, crop)))
        fields["brain"].append(brain[None])
    batch = {k: np.stack(v).astype(np.float32) for k, v in fields.items()}
    batch["target"] = SEQUENCES.index(target)
    batch["sources"] = [SEQUENCES.index(s) for s in sources]
    batch["origins"] = origins
    return batch


def stage2_batches(cases: SequenceT[PreparedCase], cache: Stage1OutputCache, batch_size: int, crop: tuple,
                   tumour_fraction: float, patterns: str = "hfgan", crops: str = "centred"):
    """``batches(steps, rng)`` for the epoch loop."""

    def epoch(steps: int, rng: np.random.Generator) -> Iterator[dict]:
        for _ in range(steps):
            yield stage2_batch(cases, cache, batch_size, crop, rng, tumour_fraction, patterns, crops)

    return epoch


# --------------------------------------------------------------------------- one step


def refiner_losses(refiner: Refiner, segmenter, batch: dict, dice_loss, ssim_weight: float = 1.0,
                   dice_weight: float = 1.0) -> tuple:
    """Equation 7 for one batch of tensors: (total, {"ssim": ..., "dice": ...}, refined)."""
    target = int(batch["target"])
    refined = refiner(batch["stage1"], batch["inputs"], target, batch["sources"])
    prediction, truth = scale_by_target(refined.float(), batch["truth"].float())
    ssim = ssim_loss(prediction, truth, batch["brain"])
    slot = torch.zeros(1, batch["acquired"].shape[1], *([1] * (refined.ndim - 2)), dtype=torch.bool,
                       device=refined.device)
    slot[:, target] = True
    completed = torch.where(slot, refined.to(batch["acquired"].dtype), batch["acquired"])
    dice = dice_loss(segmenter(completed).float(), batch["regions"])
    total = ssim_weight * ssim + dice_weight * dice
    return total, {"ssim": ssim, "dice": dice}, refined


def batch_to_device(batch: dict, device) -> dict:
    """Arrays to tensors on ``device``; indices stay Python ints."""
    return {k: (torch.from_numpy(v).to(device) if isinstance(v, np.ndarray) else v) for k, v in batch.items()}


# --------------------------------------------------------------------------- validation


def validate_stage2(refiner: Refiner, segmenter, cache: Stage1OutputCache, cases: SequenceT[PreparedCase],
                    device, targets: tuple = SEQUENCES) -> dict:
    """Whole-volume refinement of every target from the other three, with the pipeline code.

    Reports SSIM over the brain, tumour and healthy region and the segmenter's WT/TC/ET Dice
    (and their mean, ``val_dice``) on the completed set, for the refined (``val_*``) and the
    stage-1 (``val_stage1_*``) volumes. ``val_ssim + val_dice`` picks the best epoch.
    """
    from ..core.stages import completed_set, refine_on_model_grid
    from ..core.bundles import ModelBundle

    if not cases:
        return {}
    bundle = ModelBundle(name="training", stage1=cache.generator, refiner=refiner)
    values: dict = {}
    for case in cases:
        tumour = np.asarray(case.label) > 0
        for target in targets:
            sources = [s for s in SEQUENCES if s != target]
            stage1 = np.asarray(cache.get(case, target, sources))
            refined = refine_on_model_grid(case, bundle, target, sources, stage1, device, None, None, None, [])
            for prefix, volume in (("val", refined), ("val_stage1", stage1)):
                result = metrics.image_metrics(np.asarray(case.raw[target]), volume, case.brain,
                                               tumour if tumour.any() else None, whole_volume=False)
                for key in ("ssim", "ssim_tumour", "ssim_healthy"):
                    values.setdefault(f"{prefix}_{key}", []).append(result[key])
                probabilities = segment_regions(segmenter, completed_set(case, {target: volume}), case.brain,
                                                device)
                for key, value in region_dice(probabilities, case.label, f"{prefix}_dice").items():
                    values.setdefault(key, []).append(value)
    return {key: float(np.nanmean(v)) for key, v in values.items()}


# --------------------------------------------------------------------------- the command


def _stage1_path(options: Stage2TrainingOptions) -> Path:
    path = Path(options.stage1) if options.stage1 else Path(options.run_dir) / "stage1.pt"
    if not path.is_file():
        raise TrainingError(f"{path}: no stage-1 checkpoint (run 'mrisynth train stage1' first or give --stage1)")
    return path


def _load_segmenter(options: Stage2TrainingOptions):
    path = Path(options.segmenter) if options.segmenter else Path(options.run_dir) / "segmenter.pt"
    if not path.exists():
        raise TrainingError(f"{path}: no segmenter (run 'mrisynth train segmenter' first or give --segmenter)")
    return load_segmenter_weights(path, options.segmenter_input_order, options.segmenter_output_order)


def _adopt_stage1(run_dir: Path, stage1_path: Path, key: str, log: Callable[[str], None]) -> None:
    """Copy an outside ``--stage1`` checkpoint into the run folder (byte for byte) so the bundle is whole."""
    import shutil

    from .run_files import file_sha256

    local = run_dir / "stage1.pt"
    if local.resolve() == stage1_path.resolve():
        return
    if not local.is_file():
        shutil.copyfile(stage1_path, local)
        log(f"copied {stage1_path} into the run folder as stage1.pt")
    elif file_sha256(local) != key:
        log(f"warning: {local} differs from --stage1 {stage1_path}; the refiner was trained on the latter")


def train_stage2(options: Stage2TrainingOptions, progress: Optional[Callable[[float, str], None]] = None,
                 echo: Optional[Callable[[str], None]] = None) -> TrainingResult:
    """Train (or resume) the Refiner in ``options.run_dir``; writes ``refiner.pt`` (and the segmenter used)."""
    from ..core.bundles import load_bundle_file

    options = options.resolved()
    budget, cases, run_dir, log, device, rng, state = start_run(options, "stage2", echo)
    recipe = options.recipe()
    log(f"recipe --config {options.config}: {recipe_line(recipe)}")
    stage1_path = _stage1_path(options)
    generator = load_bundle_file(stage1_path).stage1.to(device).eval()
    segmenter = _load_segmenter(options).to(device).eval()
    segmenter.requires_grad_(False)
    config = RefinerConfig.from_dict(state["config"]["refiner"]) if state else options.model_config()
    torch.manual_seed(options.seed)
    refiner = Refiner(config).to(device)
    crop = crop_size_for(options.crop_size, config.downsample_factor)
    log(f"stage 2 on {device}: refiner {config.to_dict()}, crops {crop}, stage 1 {stage1_path}")

    split = load_or_create_split(run_dir, [c.case_id for c in cases], options.val_cases, options.seed, log)
    store = PreparedCaseStore(run_dir, generator.config.image_size, log)
    by_id = {c.case_id: c for c in cases}
    train_cases = store.get_all([by_id[i] for i in split.train])
    val_cases = store.get_all([by_id[i] for i in split.validation])
    cache = Stage1OutputCache(run_dir / "cache" / "stage1", stage1_path, generator, device, log)

    full_epoch_steps = max(1, len(train_cases) // options.batch_size)
    recipe["full_epoch_steps"] = full_epoch_steps  # what an uncapped epoch is (time estimates)
    steps = options.steps_per_epoch or full_epoch_steps
    total_updates = max(1, options.epochs * steps // options.accumulation)
    optimizer = make_optimizer(refiner.parameters(), options.learning_rate, options.weight_decay, total_updates,
                               min(options.warmup_steps, total_updates // 10), kind=options.optimizer,
                               schedule=options.lr_schedule)
    trainer = EpochTrainer("stage2", options, {"refiner": refiner}, {"refiner": optimizer}, device, rng, log,
                           progress, config={"refiner": config.to_dict(), "crop_size": list(crop),
                                             "stage1_sha256": cache.key, "options": options.to_dict(),
                                             "recipe": recipe}, budget=budget,
                           select_by=("val_ssim", "val_dice"))
    if state:
        trainer.restore(state)
    dice_loss = DiceLoss(sigmoid=True)

    def step(batch: dict) -> dict:
        tensors = batch_to_device(batch, device)
        with autocast_context(device):
            total, terms, _ = refiner_losses(refiner, segmenter, tensors, dice_loss, options.ssim_weight,
                                             options.dice_weight)
        trainer.backward(total)
        record = {name: float(value.detach()) for name, value in terms.items()}
        record["total"] = float(total.detach())
        return record

    result = trainer.run(steps, stage2_batches(train_cases, cache, options.batch_size, crop, options.tumour_fraction,
                                              options.input_patterns, options.crops),
                         step, lambda: validate_stage2(refiner, segmenter, cache, val_cases, device,
                                                          validation_targets(options)))
    log(f"stage-1 cache: {cache.hits} reused, {cache.misses} computed")
    info = bundle_training_info(result, trainer.select_weights())
    refiner.eval()
    info.update({"config": options.config, "crop_size": list(crop), "input_patterns": options.input_patterns,
                 "crops": options.crops, "stage1_sha256": cache.key, "recipe": recipe})
    write_recipe(run_dir, "stage2", recipe)
    _adopt_stage1(run_dir, stage1_path, cache.key, log)
    if options.segmenter:  # the bundle carries the segmenter the refiner was trained with
        write_run_bundle(run_dir, "segmenter", segmenter.cpu(), {"source": str(options.segmenter)}, log)
    result.bundle = write_run_bundle(run_dir, "refiner", refiner.cpu(), info, log)
    return result
