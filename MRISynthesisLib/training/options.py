"""Training options: the flags every ``mrisynth train`` command shares, their checks, and the
:class:`TrainingError` a request that cannot run raises (the one error class of the training package).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

__all__ = ["TrainingError", "KEEP_CHOICES", "OPTIMIZERS", "LR_SCHEDULES", "TrainOptions", "INPUT_PATTERNS",
           "check_input_patterns", "SynthesisTrainOptions", "validation_targets"]


#: Network size presets of ``--config`` (for stage 1 and 2 also the recipe: see :mod:`.presets`).
MODEL_PRESETS = ("small", "paper")
#: ``--optimizer``: AdamW (decoupled weight decay) or Adam (the HF-GAN reference).
OPTIMIZERS = ("adamw", "adam")
#: ``--lr-schedule``: ``warmup-cosine`` (warm-up from lr/(w+1), cosine down to 1 %) or ``hfgan`` (the
#: reference's: warm-up from 0, one cosine down to 0 at the end of the run).
LR_SCHEDULES = ("warmup-cosine", "hfgan")


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
    optimizer: str = "adamw"
    lr_schedule: str = "warmup-cosine"

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
        if not self.weight_decay >= 0 or int(self.warmup_steps) < 0:
            raise TrainingError(f"--weight-decay and --warmup-steps must be 0 or more, got {self.weight_decay} "
                                f"and {self.warmup_steps}")
        for option, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                       ("lr-schedule", self.lr_schedule, LR_SCHEDULES)):
            if value not in choices:
                raise TrainingError(f"--{option} must be one of {', '.join(choices)}, got {value!r}")

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
    """Options shared by the two synthesis stages, which draw the inputs of each sample.

    ``config`` names the preset of network sizes *and* training recipe (:mod:`.presets`): every
    recipe field left ``None`` takes the preset's value in :meth:`resolved`, a value given
    explicitly is kept (and listed in ``overrides``). The trainers work on resolved options.
    """

    #: The command whose recipe :meth:`resolved` reads (``stage1`` or ``stage2``).
    command: ClassVar[str] = ""

    config: str = "small"
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    weight_decay: Optional[float] = None
    warmup_steps: Optional[int] = None
    optimizer: Optional[str] = None
    lr_schedule: Optional[str] = None
    input_patterns: Optional[str] = None
    tumour_fraction: Optional[float] = None
    #: Recipe fields given explicitly rather than by the preset (set by :meth:`resolved`).
    overrides: Optional[tuple] = None

    def resolved(self):
        """These options with every recipe field left ``None`` filled from the ``config`` preset."""
        from .presets import preset_values

        values = preset_values(self.command, self.config)
        missing = {name: value for name, value in values.items() if getattr(self, name) is None}
        if self.overrides is not None and not missing:
            return self
        given = self.overrides if self.overrides is not None else tuple(
            name for name in values if getattr(self, name) is not None)
        return dataclasses.replace(self, overrides=tuple(given), **missing)

    def recipe(self) -> dict:
        """The resolved recipe for logs and metadata: preset, values, which were given, which are assumed."""
        from .presets import ASSUMED, preset_values

        options = self.resolved()
        names = list(preset_values(self.command, options.config))
        return {"preset": options.config, "values": {name: getattr(options, name) for name in names},
                "overrides": list(options.overrides or ()),
                "assumed": list(ASSUMED.get(self.command, ())) if options.config == "paper" else []}

    def check(self) -> None:
        """The checks of the resolved options (an unknown preset is an error)."""
        self.resolved()._check_resolved()

    def _check_resolved(self) -> None:
        """The common checks, and a known input-pattern scheme."""
        TrainOptions.check(self)
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
