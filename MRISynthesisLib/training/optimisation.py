"""How a run optimises: the learning-rate schedules, AdamW or Adam, mixed precision (autocast and the
gradient scaler), the training device, frozen modules, and the seeding and saved state of every RNG.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .options import TrainOptions

__all__ = ["warmup_cosine", "hfgan_schedule", "schedule_factor", "make_optimizer", "autocast_context", "amp_dtype",
           "make_scaler", "training_device",
           "frozen", "seed_everything", "rng_state", "restore_rng_state"]


# --------------------------------------------------------------------------- schedule and devices


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then cosine down to ``floor`` at the end."""
    total = max(1, int(total_steps))
    warmup = max(0, min(int(warmup_steps), total - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def hfgan_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor of the HF-GAN reference: linear from 0 to 1 over ``warmup_steps``, then one cosine to 0.

    (The reference's warm-restart cosine schedule with a single cycle as long as the run; the
    first step's factor is 0, as there.)
    """
    total = max(1, int(total_steps))
    warmup = max(0, min(int(warmup_steps), total - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def schedule_factor(name: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The LR factor function of ``--lr-schedule`` ``name`` (``warmup-cosine`` or ``hfgan``)."""
    if name == "hfgan":
        return hfgan_schedule(total_steps, warmup_steps)
    if name == "warmup-cosine":
        return warmup_cosine(total_steps, warmup_steps)
    raise ValueError(f"unknown learning-rate schedule {name!r}")


def make_optimizer(parameters, learning_rate: float, weight_decay: float, total_steps: int, warmup_steps: int,
                   betas: tuple = (0.9, 0.999), kind: str = "adamw", schedule: str = "warmup-cosine"):
    """``kind`` (AdamW, or Adam as the HF-GAN reference) with a LambdaLR ``schedule`` stepped once per
    optimiser step; returns (optimizer, scheduler)."""
    import torch

    if kind not in ("adamw", "adam"):
        raise ValueError(f"unknown optimizer {kind!r}")
    make = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    optimizer = make(parameters, lr=learning_rate, weight_decay=weight_decay, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(schedule, total_steps, warmup_steps))
    return optimizer, scheduler


def autocast_context(device):
    """Mixed precision on CUDA (bf16 where supported, else fp16); float32 elsewhere."""
    import torch

    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype(device))


def amp_dtype(device):
    """The autocast dtype on ``device`` (None off CUDA)."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_scaler(device):
    """A gradient scaler that is active only for fp16 autocast."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def training_device(options: TrainOptions):
    """The torch device of ``options.device``; ``cpu_threads`` caps torch's CPU threads.

    On a shared machine fewer threads than cores can be several times faster (OpenMP
    threads spin while they wait for a core).
    """
    import torch

    from ..core.devices import resolve_device

    device = resolve_device(options.device)
    if options.cpu_threads is not None:
        torch.set_num_threads(int(options.cpu_threads))
    return device


@contextlib.contextmanager
def frozen(module) -> Iterator[None]:
    """Temporarily stop gradients into ``module``'s parameters (the GAN's D during the G step)."""
    flags = [p.requires_grad for p in module.parameters()]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


# --------------------------------------------------------------------------- random number generators


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return the run's numpy generator (all data sampling uses it)."""
    import torch

    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def rng_state(rng: np.random.Generator) -> dict:
    """Every RNG the run uses, as plain types and tensors (``torch.load(weights_only=True)`` safe)."""
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": _plain(rng.bit_generator.state)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping, rng: np.random.Generator) -> None:
    """Put back the RNG states saved by :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """numpy scalars inside a nested dict -> Python ints/floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
