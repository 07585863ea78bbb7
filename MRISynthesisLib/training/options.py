"""Training options: the flags every ``mrisynth train`` command shares, their checks, and the
:class:`TrainingError` a request that cannot run raises (the one error class of the training package).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

__all__ = ["TrainingError", "KEEP_CHOICES", "TrainOptions", "INPUT_PATTERNS", "check_input_patterns",
           "SynthesisTrainOptions", "validation_targets"]


#: Network size presets of ``--config``.
MODEL_PRESETS = ("small", "paper")


class TrainingError(ValueError):
    """A training request that cannot run; the message names the file or option at fault."""


#: Which weights a run's bundle holds: those of the epoch that validated ``best``, or the ``last``.
KEEP_CHOICES = ("best", "last")


@dataclasses.dataclass
class TrainOptions:
    """Options every training command shares (CLI flags of ``mrisynth train``)."""

    data_dir: Path = Path(".")
    run_dir: Path = Path("run")
    epochs: int = 1
    batch_size: int = 1
    steps_per_epoch: Optional[int] = None
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    val_cases: Optional[int] = None
    max_minutes: Optional[float] = None
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    accumulation: int = 1
    log_every: int = 10
    cpu_threads: Optional[int] = None
    val_targets: Optional[tuple] = None
    keep: str = "best"

    def check(self) -> None:
        """Raise :class:`TrainingError` for option values no run can use."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accumulation": self.accumulation,
                    "log_every": self.log_every}
        for name, value in positive.items():
            if int(value) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainingError(f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}")
        if self.val_cases is not None and self.val_cases < 0:
            raise TrainingError(f"--val-cases must be 0 or more, got {self.val_cases}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise TrainingError(f"--max-minutes must be positive, got {self.max_minutes}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise TrainingError(f"--threads must be at least 1, got {self.cpu_threads}")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning rate must be positive, got {self.learning_rate}")
        if self.keep not in KEEP_CHOICES:
            raise TrainingError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {self.keep!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


#: Input-pattern schemes of the synthesis stages: ``hfgan`` as HF-GAN trains (one to three inputs);
#: ``missing-one`` always the other three (the BraSyn task: exactly one sequence missing).
INPUT_PATTERNS = ("hfgan", "missing-one")


def check_input_patterns(scheme: str, option: str = "input patterns") -> None:
    """Raise :class:`TrainingError` unless ``scheme`` is one of :data:`INPUT_PATTERNS`."""
    if scheme not in INPUT_PATTERNS:
        raise TrainingError(f"{option} must be one of {', '.join(INPUT_PATTERNS)}, got {scheme!r}")


@dataclasses.dataclass
class SynthesisTrainOptions(TrainOptions):
    """Options shared by the two synthesis stages, which draw the inputs of each sample."""

    input_patterns: str = "hfgan"

    def check(self) -> None:
        """The common checks, and a known input-pattern scheme."""
        super().check()
        check_input_patterns(self.input_patterns, "--input-patterns")


def validation_targets(options: TrainOptions) -> tuple:
    """The targets validated each epoch (all four unless ``val_targets`` narrows them)."""
    from ..sequences import SEQUENCES, parse_sequence

    if not options.val_targets:
        return SEQUENCES
    wanted = {parse_sequence(t) for t in options.val_targets}
    return tuple(s for s in SEQUENCES if s in wanted)


def preset_config(explicit, preset: str, config_class):
    """The network config to build: ``explicit`` when given, else ``config_class``'s ``preset``
    (``"small"`` or ``"paper"``); an unknown preset is a one-line error."""
    if explicit is not None:
        return explicit
    if preset not in MODEL_PRESETS:
        raise TrainingError(f"--config must be one of {', '.join(MODEL_PRESETS)}, got {preset!r}")
    return config_class.paper() if preset == "paper" else config_class.small()
