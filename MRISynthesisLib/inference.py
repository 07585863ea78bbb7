"""Running the networks on whole volumes: stage 1 slice batches and stage 2 sliding windows.

Both runners take plain numpy arrays on the model grid and give numpy arrays back, check
for cancellation between batches, and, on a CUDA out-of-memory error, retry with a smaller
batch and finally on the CPU (with a log line) instead of crashing.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Optional

import numpy as np

from .devices import is_out_of_memory
from .progress import ProgressCallback

LogCallback = Callable[[str], None]


class Cancelled(Exception):
    """The caller asked the synthesis to stop; nothing was returned."""


def check_cancel(cancel: Optional[threading.Event]) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("synthesis cancelled")


@dataclasses.dataclass
class Stage1Options:
    """How stage 1 runs: the fast path by default; ``naive()`` is the benchmark baseline."""

    batch_size: Optional[int] = None  # None: 4 on the CPU, chosen from free memory on CUDA
    skip_empty_slices: bool = True
    inference_mode: bool = True
    channels_last: bool = False
    autocast: bool = True  # bf16/fp16 on CUDA only; the CPU always runs float32
    compile: bool = False

    @classmethod
    def naive(cls) -> "Stage1Options":
        """One slice at a time over every slice, float32, autograd on (the baseline)."""
        return cls(batch_size=1, skip_empty_slices=False, inference_mode=False, channels_last=False,
                   autocast=False, compile=False)


def auto_batch_size(device, generator) -> int:
    """A slice batch that fits: 4 on the CPU (no gain beyond), on CUDA from free memory."""
    import torch

    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    hidden = getattr(generator.config, "dim", 64)
    per_slice = 40e6 * (hidden / 64.0)  # measured order of magnitude for the paper config under autocast
    return int(max(1, min(64, free * 0.5 // per_slice)))


def _autocast(device, enabled: bool):
    import contextlib

    import torch

    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def run_stage1(
    generator,
    channels: np.ndarray,
    available: list[int],
    target: int,
    intensity: float,
    brain_slices: np.ndarray,
    device,
    options: Optional[Stage1Options] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    log: Optional[LogCallback] = None,
) -> np.ndarray:
    """Synthesise channel ``target`` slice by slice: ``channels`` [Z, 4, H, W] in [-1, 1] -> [Z, H, W].

    Slices without brain (``brain_slices`` False) stay -1 (background) unless the options ask
    for every slice. Missing channels are filled with -1 by the generator itself.
    """
    import torch

    options = options or Stage1Options()
    depth = channels.shape[0]
    output = np.full((depth,) + channels.shape[2:], -1.0, dtype=np.float32)
    indices = np.flatnonzero(brain_slices) if options.skip_empty_slices else np.arange(depth)
    if indices.size == 0:
        return output
    batch = options.batch_size or auto_batch_size(device, generator)
    model = generator
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        model = torch.compile(model)
    start = 0
    while start < indices.size:
        check_cancel(cancel)
        chunk = indices[start:start + batch]
        try:
            output[chunk] = _stage1_batch(model, channels[chunk], available, target, intensity, device, options)
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not (device.type == "cuda" and is_out_of_memory(error)):
                raise
            torch.cuda.empty_cache()
            if batch > 1:
                batch = max(1, batch // 2)
                if log:
                    log(f"stage 1: GPU out of memory, retrying with {batch} slices per batch")
                continue
            if log:
                log("stage 1: GPU out of memory even for one slice; continuing on the CPU")
            device = torch.device("cpu")
            model = generator.to(device)
            continue
        start += chunk.size
        if progress:
            progress(start / indices.size, f"stage 1: {start}/{indices.size} slices")
    return output


def _stage1_batch(model, slices: np.ndarray, available: list[int], target: int, intensity: float,
                  device, options: Stage1Options) -> np.ndarray:
    """One batch of slices through the generator; returns float32 numpy [b, H, W]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(slices)).to(device)
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    count = x.shape[0]
    target_t = torch.full((count,), target, dtype=torch.long, device=device)
    intensity_t = torch.full((count,), float(intensity), dtype=torch.float32, device=device)
    grad_context = torch.inference_mode() if options.inference_mode else torch.enable_grad()
    with grad_context, _autocast(device, options.autocast):
        y = model(x, [list(available)] * count, target_t, intensity_t)
    return y[:, 0].detach().float().cpu().numpy()


@dataclasses.dataclass
class Stage2Options:
    """Sliding-window settings for the refiner (``None``: chosen for the device)."""

    roi_size: tuple[int, int, int] = (128, 128, 128)
    overlap: Optional[float] = None  # 0.25 on CPU, 0.5 on CUDA
    sw_batch_size: Optional[int] = None  # 1 on CPU, 2-4 on CUDA from free memory
    autocast: bool = True


def run_refiner(
    refiner,
    stage1: np.ndarray,
    inputs: np.ndarray,
    target: int,
    available: list[int],
    device,
    options: Optional[Stage2Options] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    log: Optional[LogCallback] = None,
) -> np.ndarray:
    """Refine a z-scored stage-1 volume [Z, H, W] with z-scored inputs [4, Z, H, W] (canonical order)."""
    import torch

    from .models.refiner import refine_volume

    options = options or Stage2Options()
    overlap = options.overlap if options.overlap is not None else (0.5 if device.type == "cuda" else 0.25)
    sw_batch = options.sw_batch_size or _auto_sw_batch(device)
    factor = refiner.config.downsample_factor
    # Windows no larger than the (rounded-up) volume, and at least 2x the factor so the
    # U-Net bottleneck keeps more than one voxel; smaller volumes are zero-padded.
    roi = tuple(max(2 * factor, min(r, _round_up(s, factor))) for r, s in zip(options.roi_size, stage1.shape))
    stage1_t = torch.from_numpy(np.ascontiguousarray(stage1))[None, None]
    inputs_t = torch.from_numpy(np.ascontiguousarray(inputs))[None]

    def window_progress(fraction: float) -> None:
        check_cancel(cancel)
        if progress:
            progress(fraction, "stage 2: refining")

    while True:
        try:
            with _autocast(device, options.autocast):
                refined = refine_volume(refiner.to(device), stage1_t, inputs_t, target, available,
                                        roi_size=roi, overlap=overlap, sw_batch_size=sw_batch, device=device,
                                        output_device="cpu", progress=window_progress)
            return refined[0, 0].float().numpy()
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled
            if not (device.type == "cuda" and is_out_of_memory(error)):
                raise
            torch.cuda.empty_cache()
            if sw_batch > 1:
                sw_batch = max(1, sw_batch // 2)
                if log:
                    log(f"stage 2: GPU out of memory, retrying with {sw_batch} windows per batch")
                continue
            if log:
                log("stage 2: GPU out of memory even for one window; continuing on the CPU")
            device = torch.device("cpu")


def _auto_sw_batch(device) -> int:
    import torch

    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(4, free // (6 * 1024**3))))


def _round_up(value: int, factor: int) -> int:
    return ((value + factor - 1) // factor) * factor
