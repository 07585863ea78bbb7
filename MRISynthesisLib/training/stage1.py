"""Stage-1 training: the HF-GAN generator with intensity encoding (paper appendix A.1, equation 6).

``L_G = 10 L_rec + 1 L_sim + 1 L_cyc + 0.25 L_adv + 0.25 L_cls + 5 L_ssim + 5 L_ssim-tumour``

following what HF-GAN's reference training computes:

* ``L_rec``: L1 between the synthetic and the real target slice ([-1, 1] scale).
* ``L_cyc``: the synthetic target is put back into its channel and one of the inputs is
  re-synthesised (from the other real inputs plus the synthetic target; for a single input,
  from the synthetic target alone); L1 against that real input.
* ``L_sim``: ``1 - cosine similarity`` of the fused bottleneck features of the two passes
  (different input sets of the same slice should give the same representation).
* ``L_adv``, ``L_cls``: a PatchGAN discriminator with an auxiliary sequence classifier; the
  generator wants its output called real and classified as the target sequence.
* ``L_ssim``: ``1 - SSIM`` of the slice on [0, 1]; ``L_ssim-tumour`` the same averaged over
  the tumour (label > 0) only, for slices that contain tumour.

Ablation switches (the rows of the paper's Table 1): ``intensity_encoding=False`` builds a
generator without the intensity input (its checkpoint config says so, and the inference code
then feeds no intensity code); ``ssim_loss=False`` / ``tumour_ssim_loss=False`` drop
``L_ssim`` / ``L_ssim-tumour`` (neither computed nor logged). ``--tumour-l1-weight W`` adds a
term the paper does not have, ``W L_rec-tumour`` (L1 averaged over the tumour's pixels only; 0
by default); ``--enhancement-weight W`` another, ``W L_enh`` on T1c targets: the error of the mean
(fake - real) over each tumour region (necrosis, oedema, enhancing tumour) against that over healthy
brain (0 by default). ``--config`` picks the recipe (:mod:`.presets`); the run records both in
``bundle.json`` and ``stage1-recipe.json``.

The discriminator minimises ``0.25 (BCE(real, 1) + BCE(fake, 0)) + 0.25 CE(real) + 0.25 CE(fake)``
with a learning rate 0.1 x the generator's, as in the reference. Intensity encoding during
training is the median brain intensity of the target volume (the cycle pass uses the
re-synthesised input's); validation synthesises whole volumes with the inference code
and the prior-mean intensity.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from ..models.discriminator import DiscriminatorConfig, PatchDiscriminator
from ..models.hfgan import HFGANConfig, HFGANGenerator
from ..core.preprocessing import estimate_intensity_priors
from ..models.segmenter import ENHANCING, NECROTIC, OEDEMA
from ..sequences import SEQUENCES, Sequence
from .cases import load_or_create_split
from .loop import EpochTrainer, TrainingResult, bundle_training_info, start_run
from .losses import (adversarial_loss, feature_similarity_loss, lesion_contrast_loss, ssim_loss_from_map,
                     ssim_map, to_unit)
from .optimisation import autocast_context, frozen, make_optimizer
from .options import MODEL_PRESETS, SynthesisTrainOptions, TrainingError, validation_targets
from .prepared_cases import PreparedCaseStore
from .run_files import recipe_line, write_recipe, write_run_bundle
from .slices import MIN_BRAIN_AREA_MM2, SliceSampler, Stage1Batch, check_slice_targets, tumour_items_per_batch
from .stage1_outputs import stage1_volume


#: The tumour regions whose T1c contrast to healthy brain ``--enhancement-weight`` checks.
TUMOUR_REGIONS = (NECROTIC, OEDEMA, ENHANCING)


@dataclasses.dataclass
class Stage1LossWeights:
    """Weights of equation 6 (alpha ... eta); the defaults are the paper's."""

    reconstruction: float = 10.0
    similarity: float = 1.0
    cycle: float = 1.0
    adversarial: float = 0.25
    classification: float = 0.25
    ssim: float = 5.0
    ssim_tumour: float = 5.0
    #: Not in the paper (0 there): L1 averaged over the tumour's pixels only. The whole-slice L1 gives the
    #: tumour a few per cent of its weight, and a short CPU run then averages T1c enhancement away.
    reconstruction_tumour: float = 0.0
    #: Not in the paper (0 there): for T1c targets, the tumour contrast error
    #: (:func:`.losses.lesion_contrast_loss`: necrosis, oedema and enhancing tumour each against healthy
    #: brain). Without it the CPU recipe's model learned "T1c = T1" and never enhanced
    #: (scripts/train_randomised_model.py).
    enhancement_contrast: float = 0.0


#: Table 1 of the paper: its row for each (intensity encoding, SSIM loss, tumour SSIM loss) switch set.
TABLE1_ROWS = {(False, False, False): "HF-GAN", (False, True, True): "+SSIM loss",
               (True, True, True): "+Intensity Encoding"}


def ablation_record(intensity_encoding: bool, ssim_loss: bool, tumour_ssim_loss: bool) -> dict:
    """The ablation switches of a stage-1 run and the paper's Table-1 row they make (``custom`` for none)."""
    key = (bool(intensity_encoding), bool(ssim_loss), bool(tumour_ssim_loss))
    return {"intensity_encoding": key[0], "ssim_loss": key[1], "tumour_ssim_loss": key[2],
            "table1_row": TABLE1_ROWS.get(key, "custom")}


@dataclasses.dataclass
class Stage1TrainingOptions(SynthesisTrainOptions):
    """``mrisynth train stage1`` options: model preset and size, recipe, loss weights and ablation
    switches, the slice filter; ``None`` recipe fields come from the ``config`` preset."""

    command = "stage1"

    image_size: Optional[int] = None
    model_config: Optional[HFGANConfig] = None
    discriminator_config: Optional[DiscriminatorConfig] = None
    loss_weights: Stage1LossWeights = dataclasses.field(default_factory=Stage1LossWeights)
    discriminator_lr_ratio: float = 0.1
    min_brain_area_mm2: float = MIN_BRAIN_AREA_MM2
    slice_targets: Optional[str] = None
    intensity_encoding: bool = True
    ssim_loss: bool = True
    tumour_ssim_loss: bool = True

    def _check_resolved(self) -> None:
        """The synthesis checks, a tumour fraction in [0, 1], a known ``slice_targets`` and no negative
        tumour L1 or enhancement weight."""
        super()._check_resolved()
        if not self.loss_weights.reconstruction_tumour >= 0:  # also refuses NaN
            raise TrainingError("--tumour-l1-weight must be 0 or more, "
                                f"got {self.loss_weights.reconstruction_tumour:g}")
        if not self.loss_weights.enhancement_contrast >= 0:
            raise TrainingError("--enhancement-weight must be 0 or more, "
                                f"got {self.loss_weights.enhancement_contrast:g}")
        tumour_items_per_batch(self.tumour_fraction, self.batch_size)
        check_slice_targets(self.slice_targets)

    def generator_config(self) -> HFGANConfig:
        """The generator to build: ``model_config`` or the ``config`` preset at ``image_size``, with or
        without the intensity input as ``intensity_encoding`` says."""
        if self.model_config is not None:
            return dataclasses.replace(self.model_config, intensity_encoding=bool(self.intensity_encoding))
        if self.config not in MODEL_PRESETS:
            raise TrainingError(f"--config must be one of {', '.join(MODEL_PRESETS)}, got {self.config!r}")
        size = int(self.image_size or 240)
        try:
            base = HFGANConfig.paper() if self.config == "paper" else HFGANConfig.small(image_size=size)
            return dataclasses.replace(base, image_size=size, intensity_encoding=bool(self.intensity_encoding))
        except ValueError as error:
            raise TrainingError(f"--image-size {size}: {error}") from error

    def effective_loss_weights(self) -> Stage1LossWeights:
        """``loss_weights`` with the terms the ablation switches drop set to 0 (not computed then)."""
        return dataclasses.replace(self.loss_weights, ssim=self.loss_weights.ssim if self.ssim_loss else 0.0,
                                   ssim_tumour=self.loss_weights.ssim_tumour if self.tumour_ssim_loss else 0.0)

    def ablation(self) -> dict:
        """The ablation switches of this run (:func:`ablation_record`)."""
        return ablation_record(self.intensity_encoding, self.ssim_loss, self.tumour_ssim_loss)

    def recipe(self) -> dict:
        """The resolved recipe with the ablation switches and the weights of the terms not in the paper."""
        weights = self.effective_loss_weights()
        return dict(super().recipe(), ablation=self.ablation(),
                    extra_terms={"tumour_l1_weight": weights.reconstruction_tumour,
                                 "enhancement_weight": weights.enhancement_contrast})

    def discriminator_for(self, generator_config: HFGANConfig) -> DiscriminatorConfig:
        """The discriminator: ``discriminator_config`` or the preset's width at the generator's size."""
        if self.discriminator_config is not None:
            return dataclasses.replace(self.discriminator_config, image_size=generator_config.image_size)
        base = 64 if self.config == "paper" else 16
        return DiscriminatorConfig(base_channels=base, image_size=generator_config.image_size)


# --------------------------------------------------------------------------- one step


def batch_tensors(batch: Stage1Batch, device) -> dict:
    """The numpy batch as tensors on ``device``."""
    out = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            # availability stays on the CPU: the generator decides which encoders run from it
            out[field.name] = tensor if field.name.endswith("available") else tensor.to(device, non_blocking=True)
    return out


def _pick(images: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
    """Per batch item, one channel of [B, 4, H, W] -> [B, 1, H, W]."""
    return images[torch.arange(images.shape[0], device=images.device), channel].unsqueeze(1)


def generator_losses(generator: HFGANGenerator, discriminator: PatchDiscriminator, batch: Mapping,
                     weights: Stage1LossWeights) -> tuple:
    """Equation 6 for one batch: (total loss, {term: tensor}, synthetic target [B, 1, H, W]).

    An SSIM term of weight 0 is neither computed nor returned; a generator without intensity
    encoding is called without an intensity code (``None``).
    """
    images = batch["images"]
    coded = generator.config.intensity_encoding
    fake, features = generator.forward_with_features(images, batch["available"], batch["target"],
                                                     batch["intensity"] if coded else None)
    real = _pick(images, batch["target"])
    slot = F.one_hot(batch["target"], images.shape[1]).bool()[:, :, None, None]
    cycle_inputs = torch.where(slot, fake.to(images.dtype), images)
    cycle, cycle_features = generator.forward_with_features(cycle_inputs, batch["cycle_available"],
                                                            batch["cycle_target"],
                                                            batch["cycle_intensity"] if coded else None)
    patch, classes = discriminator(fake)
    terms = {
        "reconstruction": (fake.float() - real.float()).abs().mean(),
        "similarity": feature_similarity_loss(features, cycle_features),
        "cycle": (cycle.float() - _pick(images, batch["cycle_target"]).float()).abs().mean(),
        "adversarial": adversarial_loss(patch, real=True),
        "classification": F.cross_entropy(classes.float(), batch["target_class"]),
    }
    if weights.ssim or weights.ssim_tumour:
        ssim_values = ssim_map(to_unit(fake.float()), to_unit(real.float()))  # one map for both SSIM terms
        if weights.ssim:
            terms["ssim"] = ssim_loss_from_map(ssim_values)
        if weights.ssim_tumour:
            terms["ssim_tumour"] = ssim_loss_from_map(ssim_values, (batch["label"] > 0).unsqueeze(1))
    if weights.reconstruction_tumour:
        terms["reconstruction_tumour"] = masked_l1(fake, real, (batch["label"] > 0).unsqueeze(1))
    if weights.enhancement_contrast:
        is_t1c = (batch["target"] == generator.modality_order.index(Sequence.T1C))[:, None, None]
        healthy = batch["brain"].bool() & (batch["label"] == 0) & is_t1c
        terms["enhancement_contrast"] = lesion_contrast_loss(
            fake[:, 0].float() - real[:, 0].float(), batch["label"], healthy, TUMOUR_REGIONS)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms, fake


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over the pixels of ``mask`` (0 for a batch without any)."""
    weights = mask.to(prediction.dtype)
    return ((prediction.float() - target.float()).abs() * weights).sum() / weights.sum().clamp_min(1.0)


def discriminator_loss(discriminator: PatchDiscriminator, fake: torch.Tensor, real: torch.Tensor,
                       target_class: torch.Tensor) -> torch.Tensor:
    """The reference's D loss: real/fake BCE and sequence classification of both, 0.25 each."""
    real_patch, real_classes = discriminator(real)
    fake_patch, fake_classes = discriminator(fake.detach())
    adversarial = adversarial_loss(real_patch, real=True) + adversarial_loss(fake_patch, real=False)
    classification = F.cross_entropy(real_classes.float(), target_class) + F.cross_entropy(fake_classes.float(),
                                                                                           target_class)
    return 0.25 * adversarial + 0.25 * classification


def make_step(trainer: EpochTrainer, generator: HFGANGenerator, discriminator: PatchDiscriminator,
              weights: Stage1LossWeights) -> Callable[[Stage1Batch], dict]:
    """One micro-batch: generator losses and backward (D frozen), then the D loss and backward."""
    device = trainer.device

    def step(batch: Stage1Batch) -> dict:
        tensors = batch_tensors(batch, device)
        with frozen(discriminator), autocast_context(device):
            total, terms, fake = generator_losses(generator, discriminator, tensors, weights)
        trainer.backward(total)
        with autocast_context(device):
            d_loss = discriminator_loss(discriminator, fake, _pick(tensors["images"], tensors["target"]),
                                        tensors["target_class"])
        trainer.backward(d_loss)
        record = {name: float(value.detach()) for name, value in terms.items()}
        record.update(total=float(total.detach()), discriminator=float(d_loss.detach()))
        return record

    return step


# --------------------------------------------------------------------------- validation


def validate_stage1(generator: HFGANGenerator, cases: list, device, targets: tuple = SEQUENCES) -> dict:
    """SSIM (whole brain and tumour) and PSNR per target, each synthesised from the other three.

    Whole volumes go through the inference code (``stages.stage1_on_model_grid``, prior-mean
    intensity) and are compared with the acquired volume on the model grid.
    """
    if not cases:
        return {}
    values: dict = {}
    for case in cases:
        tumour = np.asarray(case.label) > 0
        for target in targets:
            sources = [s for s in SEQUENCES if s != target]
            synthetic = stage1_volume(generator, case, target, sources, device)
            result = metrics.image_metrics(np.asarray(case.raw[target]), synthetic, case.brain,
                                           tumour if tumour.any() else None, whole_volume=False)
            for key in ("ssim", "ssim_tumour", "psnr"):
                values.setdefault(f"val_{key}_{target.value}", []).append(result[key])
    row = {key: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for key, v in values.items()}
    row["val_ssim"] = float(np.mean([row[f"val_ssim_{s.value}"] for s in targets]))
    row["val_psnr"] = float(np.mean([row[f"val_psnr_{s.value}"] for s in targets]))
    return row


# --------------------------------------------------------------------------- the command


def resumed_weight_changes(state: Optional[Mapping], weights: Stage1LossWeights) -> str:
    """``"name old -> new, ..."`` for the loss weights that differ from a resumed checkpoint's ('' for none)."""
    saved = (state or {}).get("config", {}).get("loss_weights")
    if not isinstance(saved, Mapping):
        return ""
    now = dataclasses.asdict(weights)
    return ", ".join(f"{name} {saved.get(name, 0.0):g} -> {value:g}" for name, value in now.items()
                     if float(saved.get(name, 0.0)) != float(value))


def train_stage1(options: Stage1TrainingOptions, progress: Optional[Callable[[float, str], None]] = None,
                 echo: Optional[Callable[[str], None]] = None) -> TrainingResult:
    """Train (or resume) the stage-1 generator in ``options.run_dir`` and write the bundle's ``stage1.pt``."""
    options = options.resolved()  # the --config recipe under the values given explicitly
    preset = None if options.resume else options.generator_config()  # a bad preset fails before any write
    budget, cases, run_dir, log, device, rng, state = start_run(options, "stage1", echo)
    config = HFGANConfig.from_dict(state["config"]["generator"]) if state else preset
    if config.intensity_encoding != bool(options.intensity_encoding):
        raise TrainingError(f"{run_dir}: the run was trained {'with' if config.intensity_encoding else 'without'} "
                            "intensity encoding; resume it with the same --no-intensity-encoding setting")
    recipe = options.recipe()
    log(f"recipe --config {options.config}: {recipe_line(recipe)}")
    d_config = (DiscriminatorConfig.from_dict(state["config"]["discriminator"]) if state
                else options.discriminator_for(config))
    log(f"stage 1 on {device}: generator {config.to_dict()}, discriminator {d_config.to_dict()}")

    split = load_or_create_split(run_dir, [c.case_id for c in cases], options.val_cases, options.seed, log)
    store = PreparedCaseStore(run_dir, config.image_size, log)
    by_id = {c.case_id: c for c in cases}
    train_cases = store.get_all([by_id[i] for i in split.train], _sub(progress, "preparing training cases"))
    val_cases = store.get_all([by_id[i] for i in split.validation])

    generator = HFGANGenerator(config).to(device)
    # Inference conditions on the prior of the training data's median intensities (paper 2.1).
    generator.intensity_priors = estimate_intensity_priors(case.intensity for case in train_cases)
    discriminator = PatchDiscriminator(d_config).to(device)
    sampler = SliceSampler(train_cases, generator.modality_order, options.batch_size, options.min_brain_area_mm2,
                           options.input_patterns, options.tumour_fraction, options.slice_targets)
    steps = options.steps_per_epoch or sampler.full_epoch_steps
    # what an uncapped epoch is, so that a short run can say how long the whole recipe takes
    recipe["full_epoch_steps"] = sampler.full_epoch_steps
    total_updates = max(1, options.epochs * steps // options.accumulation)
    warmup = min(options.warmup_steps, total_updates // 10)
    log(f"{len(sampler.index)} training slices with >= {options.min_brain_area_mm2:g} mm^2 of brain; "
        f"{steps} steps of {options.batch_size} per epoch"
        + (" (each slice for all four targets)" if sampler.passes_per_group > 1 else "")
        + (f", {sampler.tumour_per_batch} of each batch from the {len(sampler.tumour_core_index)} slices with "
           f"tumour core" if sampler.tumour_per_batch else ""))
    g_opt = make_optimizer(generator.parameters(), options.learning_rate, options.weight_decay, total_updates,
                           warmup, kind=options.optimizer, schedule=options.lr_schedule)
    d_opt = make_optimizer(discriminator.parameters(), options.learning_rate * options.discriminator_lr_ratio,
                           options.weight_decay, total_updates, warmup, kind=options.optimizer,
                           schedule=options.lr_schedule)
    weights = options.effective_loss_weights()
    changed = resumed_weight_changes(state, weights)
    if changed:  # allowed (a fine-tune may add a term), but never silent: the bundle records the last weights only
        log(f"note: resuming with other loss weights than the checkpoint's ({changed}); the epochs before and "
            "after this resume were trained with different losses")
    trainer = EpochTrainer("stage1", options, {"generator": generator, "discriminator": discriminator},
                           {"generator": g_opt, "discriminator": d_opt}, device, rng, log, progress,
                           config={"generator": config.to_dict(), "discriminator": d_config.to_dict(),
                                   "loss_weights": dataclasses.asdict(weights), "options": options.to_dict(),
                                   "recipe": recipe}, budget=budget, select_by=("val_ssim",))
    if state:
        trainer.restore(state)
    step = make_step(trainer, generator, discriminator, weights)
    targets = validation_targets(options)
    result = trainer.run(steps, sampler.epoch, step, lambda: validate_stage1(generator, val_cases, device, targets))
    info = bundle_training_info(result, trainer.select_weights())
    generator.eval()
    info.update({"config": options.config, "image_size": config.image_size, "input_patterns": options.input_patterns,
                 "tumour_fraction": options.tumour_fraction, "train_cases": len(split.train),
                 "slice_targets": options.slice_targets, "loss_weights": dataclasses.asdict(weights),
                 "ablation": options.ablation(), "recipe": recipe})
    write_recipe(run_dir, "stage1", recipe)
    result.bundle = write_run_bundle(run_dir, "stage1", generator.cpu(), info, log)
    if (run_dir / "refiner.pt").is_file():
        log("note: refiner.pt was trained on an earlier stage-1 model; run 'mrisynth train stage2' again")
    return result


def _sub(progress: Optional[Callable[[float, str], None]], what: str) -> Optional[Callable[[float, str], None]]:
    """Progress of a preparation phase (shown as 0 % of training, with its own message)."""
    if progress is None:
        return None
    return lambda fraction, message: progress(0.0, f"{what}: {message}")
