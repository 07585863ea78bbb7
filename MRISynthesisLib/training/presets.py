"""Recipe presets of ``mrisynth train --config``: the training values each preset stands for.

``--config`` chooses the network sizes *and* the training recipe; a value given on the command
line (or to the options dataclass) always wins over its preset. The presets:

* ``small``: the project's CPU recipe, as before this switch existed (AdamW with weight decay,
  warm-up + cosine down to 1 %, one random target per slice, HF-GAN's one-to-three input
  patterns, tumour-centred stage-2 crops half of the time).
* ``paper``: the BraSyn-2024 paper (appendix A) and the public HF-GAN training loop it follows
  (``SSTDV-Project/HF-GAN``, ``train_BraTS.py``), read for facts, no code taken:

  - stage 1: 20 epochs, batch 24 (paper A.1); every slice of a batch is trained for all four
    targets in turn, one optimiser step each (the reference loops over the batch four times,
    shifting each item's target by one), so an epoch has four times as many (slice, target)
    pairs; Adam with betas (0.9, 0.999) and no weight decay; learning rate 1e-4 (the
    discriminator 0.1 x); the schedule warms up linearly from 0 over 100 steps and then
    decays with one cosine to 0 at the end of the run (the reference's
    ``CosineAnnealingWarmUpRestarts`` with one cycle as long as the run).
  - stage 2: 100 epochs, batch 4 (paper A.2) on the three-available task (the target missing,
    the other three present: the BraSyn task the paper evaluates), uniformly random 128^3 crops
    (paper 3.1: "randomly cropped"; no tumour-centred crops).

Assumptions (the paper and the public code do not say; recorded as such by :data:`ASSUMED`):
the stage-2 optimiser and schedule are stage 1's (Adam 1e-4, the same warm-up + cosine), since
the Refiner's training code is not public; the warm-up is capped at a tenth of the run (as in
the ``small`` recipe), which only matters for runs shorter than 1000 steps; the paper's
"+SSIM loss" ablation row is read as both SSIM terms of equation 6.
"""
from __future__ import annotations

from typing import Mapping

from .options import MODEL_PRESETS, TrainingError

__all__ = ["RECIPE_PRESETS", "RECIPES", "ASSUMED", "preset_values", "check_preset"]

#: The ``--config`` values.
RECIPE_PRESETS = MODEL_PRESETS

_SMALL_OPTIMISER = dict(learning_rate=1e-4, weight_decay=1e-4, warmup_steps=100, optimizer="adamw",
                        lr_schedule="warmup-cosine")
_PAPER_OPTIMISER = dict(learning_rate=1e-4, weight_decay=0.0, warmup_steps=100, optimizer="adam",
                        lr_schedule="hfgan")

#: Per command and preset, the option values the preset stands for (explicit values override them).
RECIPES: Mapping[str, Mapping[str, Mapping]] = {
    "stage1": {
        "small": dict(epochs=20, batch_size=8, **_SMALL_OPTIMISER, slice_targets="random", input_patterns="hfgan",
                      tumour_fraction=0.0),
        "paper": dict(epochs=20, batch_size=24, **_PAPER_OPTIMISER, slice_targets="all", input_patterns="hfgan",
                      tumour_fraction=0.0),
    },
    "stage2": {
        "small": dict(epochs=100, batch_size=4, **_SMALL_OPTIMISER, input_patterns="hfgan", crops="centred",
                      tumour_fraction=0.5),
        "paper": dict(epochs=100, batch_size=4, **_PAPER_OPTIMISER, input_patterns="missing-one", crops="uniform",
                      tumour_fraction=0.0),
    },
}

#: Values of the ``paper`` preset that are this project's reading rather than a stated fact.
ASSUMED: Mapping[str, tuple] = {
    "stage1": ("warmup_steps (capped at a tenth of the run)",),
    "stage2": ("learning_rate", "weight_decay", "optimizer", "lr_schedule", "warmup_steps"),
}


def check_preset(preset: str) -> None:
    """One-line :class:`TrainingError` unless ``preset`` is a ``--config`` value."""
    if preset not in RECIPE_PRESETS:
        raise TrainingError(f"--config must be one of {', '.join(RECIPE_PRESETS)}, got {preset!r}")


def preset_values(command: str, preset: str) -> dict:
    """The recipe values of ``preset`` for ``command`` (``stage1`` or ``stage2``), as a new dict."""
    check_preset(preset)
    return dict(RECIPES[command][preset])
