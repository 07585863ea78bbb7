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
from ..sequences import SEQUENCES
from .cases import load_or_create_split
from .loop import EpochTrainer, TrainingResult, bundle_training_info, start_run
from .losses import adversarial_loss, feature_similarity_loss, ssim_loss_from_map, ssim_map, to_unit
from .optimisation import autocast_context, frozen, make_optimizer
from .options import MODEL_PRESETS, SynthesisTrainOptions, TrainingError, validation_targets
from .prepared_cases import PreparedCaseStore
from .run_files import write_run_bundle
from .slices import MIN_BRAIN_AREA_MM2, SliceSampler, Stage1Batch, tumour_items_per_batch
from .stage1_outputs import stage1_volume



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


@dataclasses.dataclass
class Stage1TrainingOptions(SynthesisTrainOptions):
    """``mrisynth train stage1`` options: model preset and size, loss weights, the slice filter."""

    config: str = "small"
    image_size: Optional[int] = None
    model_config: Optional[HFGANConfig] = None
    discriminator_config: Optional[DiscriminatorConfig] = None
    loss_weights: Stage1LossWeights = dataclasses.field(default_factory=Stage1LossWeights)
    discriminator_lr_ratio: float = 0.1
    min_brain_area_mm2: float = MIN_BRAIN_AREA_MM2
    tumour_fraction: float = 0.0

    def check(self) -> None:
        """The synthesis checks, and a tumour fraction in [0, 1]."""
        super().check()
        tumour_items_per_batch(self.tumour_fraction, self.batch_size)

    def generator_config(self) -> HFGANConfig:
        """The generator to build: ``model_config`` or the ``config`` preset at ``image_size``."""
        if self.model_config is not None:
            return self.model_config
        if self.config not in MODEL_PRESETS:
            raise TrainingError(f"--config must be one of {', '.join(MODEL_PRESETS)}, got {self.config!r}")
        size = int(self.image_size or 240)
        try:
            if self.config == "paper":
                return dataclasses.replace(HFGANConfig.paper(), image_size=size)
            return HFGANConfig.small(image_size=size)
        except ValueError as error:
            raise TrainingError(f"--image-size {size}: {error}") from error

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
    """Equation 6 for one batch: (total loss, {term: tensor}, synthetic target [B, 1, H, W])."""
    images = batch["images"]
    fake, features = generator.forward_with_features(images, batch["available"], batch["target"],
                                                     batch["intensity"])
    real = _pick(images, batch["target"])
    slot = F.one_hot(batch["target"], images.shape[1]).bool()[:, :, None, None]
    cycle_inputs = torch.where(slot, fake.to(images.dtype), images)
    cycle, cycle_features = generator.forward_with_features(cycle_inputs, batch["cycle_available"],
                                                            batch["cycle_target"], batch["cycle_intensity"])
    patch, classes = discriminator(fake)
    ssim_values = ssim_map(to_unit(fake.float()), to_unit(real.float()))  # one map for both SSIM terms
    tumour = (batch["label"] > 0).unsqueeze(1)
    terms = {
        "reconstruction": (fake.float() - real.float()).abs().mean(),
        "similarity": feature_similarity_loss(features, cycle_features),
        "cycle": (cycle.float() - _pick(images, batch["cycle_target"]).float()).abs().mean(),
        "adversarial": adversarial_loss(patch, real=True),
        "classification": F.cross_entropy(classes.float(), batch["target_class"]),
        "ssim": ssim_loss_from_map(ssim_values),
        "ssim_tumour": ssim_loss_from_map(ssim_values, tumour),
    }
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms, fake


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


def train_stage1(options: Stage1TrainingOptions, progress: Optional[Callable[[float, str], None]] = None,
                 echo: Optional[Callable[[str], None]] = None) -> TrainingResult:
    """Train (or resume) the stage-1 generator in ``options.run_dir`` and write the bundle's ``stage1.pt``."""
    preset = None if options.resume else options.generator_config()  # a bad preset fails before any write
    budget, cases, run_dir, log, device, rng, state = start_run(options, "stage1", echo)
    config = HFGANConfig.from_dict(state["config"]["generator"]) if state else preset
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
                           options.input_patterns, options.tumour_fraction)
    steps = options.steps_per_epoch or sampler.full_epoch_steps
    total_updates = max(1, options.epochs * steps // options.accumulation)
    warmup = min(options.warmup_steps, total_updates // 10)
    log(f"{len(sampler.index)} training slices with >= {options.min_brain_area_mm2:g} mm^2 of brain; "
        f"{steps} steps of {options.batch_size} per epoch"
        + (f", {sampler.tumour_per_batch} of each batch from the {len(sampler.tumour_core_index)} slices with "
           f"tumour core" if sampler.tumour_per_batch else ""))
    g_opt = make_optimizer(generator.parameters(), options.learning_rate, options.weight_decay, total_updates,
                           warmup)
    d_opt = make_optimizer(discriminator.parameters(), options.learning_rate * options.discriminator_lr_ratio,
                           options.weight_decay, total_updates, warmup)
    trainer = EpochTrainer("stage1", options, {"generator": generator, "discriminator": discriminator},
                           {"generator": g_opt, "discriminator": d_opt}, device, rng, log, progress,
                           config={"generator": config.to_dict(), "discriminator": d_config.to_dict(),
                                   "loss_weights": dataclasses.asdict(options.loss_weights),
                                   "options": options.to_dict()}, budget=budget, select_by=("val_ssim",))
    if state:
        trainer.restore(state)
    step = make_step(trainer, generator, discriminator, options.loss_weights)
    targets = validation_targets(options)
    result = trainer.run(steps, sampler.epoch, step, lambda: validate_stage1(generator, val_cases, device, targets))
    info = bundle_training_info(result, trainer.select_weights())
    generator.eval()
    info.update({"config": options.config, "image_size": config.image_size, "input_patterns": options.input_patterns,
                 "tumour_fraction": options.tumour_fraction, "train_cases": len(split.train)})
    result.bundle = write_run_bundle(run_dir, "stage1", generator.cpu(), info, log)
    if (run_dir / "refiner.pt").is_file():
        log("note: refiner.pt was trained on an earlier stage-1 model; run 'mrisynth train stage2' again")
    return result


def _sub(progress: Optional[Callable[[float, str], None]], what: str) -> Optional[Callable[[float, str], None]]:
    """Progress of a preparation phase (shown as 0 % of training, with its own message)."""
    if progress is None:
        return None
    return lambda fraction, message: progress(0.0, f"{what}: {message}")
