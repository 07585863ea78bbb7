"""Running the networks on whole volumes: stage-1 slice batches and stage-2 sliding windows.

Both runners take plain numpy arrays on the model grid and give numpy arrays back, check
for cancellation between batches, and back off when memory runs out: on an out-of-memory
error they retry with half the batch, and once a single slice (window) does not fit they
continue on the fallback device (the CPU) with a log line instead of crashing.

The stage-1 fast path (the default :class:`Stage1Options`) batches slices, skips slices
without brain, runs under ``torch.inference_mode`` and, on CUDA, under bf16/fp16 autocast.
:meth:`Stage1Options.naive` is the baseline the benchmarks compare against (``benchmarks/``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .devices import is_out_of_memory, release_cached_memory
from .progress import ProgressCallback, check_cancel

LogCallback = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class RunHooks:
    """How a runner reports and where it may go: the same for stage 1 and the Refiner.

    ``progress(fraction, message)`` and ``log(line)`` are called as the run advances; a set
    ``cancel`` event stops it between batches; ``fallback_device`` is where it continues when
    memory runs out (default: the CPU for an accelerator, none for the CPU).
    """

    progress: Optional[ProgressCallback] = None
    cancel: Optional[threading.Event] = None
    log: Optional[LogCallback] = None
    fallback_device: Any = None

    def fallback_for(self, device):
        """The device to continue on after ``device`` runs out of memory (None: nowhere)."""
        import torch

        return default_fallback(device) if self.fallback_device is None else torch.device(self.fallback_device)

#: On the CPU a stage-1 batch is as large as possible while its largest activation (``dim`` feature
#: maps of a whole slice, float32) stays within this size. glibc serves blocks up to 32 MiB from
#: memory it keeps; larger ones are fresh pages faulted in on every batch. Measured (paper model,
#: CPU seconds per slice on one thread of a Xeon VM): batch 1: 1.04, 2: 0.94, 3: 0.92, 4: 1.06 with
#: 100 k page faults per slice; demo model: 16 per batch was fastest. Gives 2 (paper), 16 (demo).
CPU_BATCH_ACTIVATION_BYTES = 32 * 1024**2
CPU_MAX_STAGE1_BATCH = 16
#: Upper bounds for automatic batch sizes on CUDA.
MAX_CUDA_STAGE1_BATCH = 64
MAX_CUDA_WINDOW_BATCH = 4
#: Share of the free GPU memory an automatic batch may plan to use (the rest is margin).
CUDA_MEMORY_SHARE = 0.6
#: Peak float32 activation memory of one more stage-1 slice in a batch, in units of
#: ``dim * image_size**2 * 4`` bytes: measured 7-9 on the CPU (paper and small models), with margin.
STAGE1_ACTIVATION_FACTOR = 12.0
#: Peak float32 activation memory of one refiner window, in units of ``channels * roi voxels * 4``
#: bytes: measured on the CPU (paper model, 128^3 window) 8.4 with slab-wise cross-attention (the
#: default), 11.7 without.
REFINER_ACTIVATION_FACTOR = 12.0


class InferenceOptionsError(ValueError):
    """Runner options that cannot work (a batch size below 1, an overlap outside [0, 1))."""


# --------------------------------------------------------------------------- out-of-memory back-off


class MemoryBackoff:
    """Batch size and device of a run that backs off when memory runs out.

    After an out-of-memory error the batch is halved; when even one item does not fit, the
    run moves to ``fallback`` (once) with ``fallback_batch`` items per batch; after that the
    error is the caller's. Every step is logged as one line.
    """

    def __init__(self, stage: str, unit: str, device, batch: int, fallback=None, fallback_batch: int = 1,
                 log: Optional[LogCallback] = None) -> None:
        self.stage = stage
        self.unit = unit
        self.device = device
        self.batch = max(1, int(batch))
        self.fallback = fallback
        self.fallback_batch = max(1, int(fallback_batch))
        self.log = log
        self.fell_back = False

    def can_recover(self, error: BaseException) -> bool:
        """True when ``error`` is an out-of-memory error and there is a smaller batch or a fallback left."""
        return is_out_of_memory(error) and (self.batch > 1 or self.fallback is not None)

    def back_off(self) -> None:
        """Halve the batch, or move to the fallback device; call outside the ``except`` block.

        (Outside it the failed batch's tensors, still referenced by the traceback inside it,
        have been freed, so the cached memory can really be returned.)
        """
        release_cached_memory(self.device)
        if self.batch > 1:
            self.batch = max(1, self.batch // 2)
            self._say(f"{self.stage}: out of memory on {self.device}, retrying with {self.batch} {self.unit} per batch")
            return
        if self.fallback is None:
            raise RuntimeError(f"{self.stage}: no smaller batch and no fallback device left")
        previous, self.device = self.device, self.fallback
        self.batch, self.fallback, self.fell_back = self.fallback_batch, None, True
        self._say(f"{self.stage}: out of memory on {previous} even for one item; continuing on the {self.device}")

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


def default_fallback(device):
    """Where to continue when ``device`` runs out of memory: the CPU, or nowhere for the CPU itself."""
    import torch

    return None if device.type == "cpu" else torch.device("cpu")


def batch_for_memory(free_bytes: float, item_bytes: float, cap: int, share: float = CUDA_MEMORY_SHARE) -> int:
    """Items per batch so that ``share`` of ``free_bytes`` holds them: between 1 and ``cap``."""
    if item_bytes <= 0:
        return 1
    return int(max(1, min(cap, (free_bytes * share) // item_bytes)))


def _autocast(device, enabled: bool):
    """bf16 (or fp16 where bf16 is missing) autocast on CUDA; nothing elsewhere (the CPU stays float32)."""
    import torch

    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _is_compiler_error(error: BaseException) -> bool:
    """True for errors raised by ``torch.compile``'s machinery (dynamo, inductor) rather than the model."""
    module = type(error).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor"))


# --------------------------------------------------------------------------- stage 1


@dataclasses.dataclass
class Stage1Options:
    """How stage 1 runs: the fast path by default; :meth:`naive` is the benchmark baseline.

    ``batch_size``: slices per batch (``None``: :func:`cpu_batch_size` on the CPU, from
    free memory on CUDA). ``channels_last``: off by default: on the CPU it is ~10 % faster
    only because PyTorch's channels-last GroupNorm kernel computes the variance in one
    pass, which loses precision on slices that are mostly constant background (errors up
    to 1e-2 measured); with an exact GroupNorm it is slower. ``autocast``: bf16/fp16 on
    CUDA only; the CPU always runs float32 (bf16 was measured slower on the CPU).
    ``compile``: ``torch.compile`` the generator (falls back to eager with a log line when
    compilation fails; compiling costs more than it saves for one case on a CPU).
    """

    batch_size: Optional[int] = None
    skip_empty_slices: bool = True
    inference_mode: bool = True
    channels_last: bool = False
    autocast: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or int(self.batch_size) < 1):
            raise InferenceOptionsError(f"Stage1Options.batch_size must be >= 1 or None, got {self.batch_size!r}")

    @classmethod
    def naive(cls) -> "Stage1Options":
        """One slice at a time over every slice, float32, autograd on (the baseline)."""
        return cls(batch_size=1, skip_empty_slices=False, inference_mode=False, channels_last=False,
                   autocast=False, compile=False)


def stage1_bytes_per_slice(config) -> float:
    """Estimated peak float32 activation bytes of one slice through an HF-GAN of ``config``."""
    return STAGE1_ACTIVATION_FACTOR * config.dim * config.image_size ** 2 * 4


def cpu_batch_size(config) -> int:
    """Stage-1 slices per batch on the CPU for an HF-GAN of ``config`` (see :data:`CPU_BATCH_ACTIVATION_BYTES`)."""
    largest = config.dim * config.image_size ** 2 * 4
    return int(max(1, min(CPU_MAX_STAGE1_BATCH, CPU_BATCH_ACTIVATION_BYTES // largest)))


def auto_batch_size(device, generator) -> int:
    """Slices per batch: :func:`cpu_batch_size` on the CPU, on CUDA what fits in the free memory."""
    import torch

    if device.type != "cuda":
        return cpu_batch_size(generator.config)
    free, _ = torch.cuda.mem_get_info(device)
    return batch_for_memory(free, stage1_bytes_per_slice(generator.config), MAX_CUDA_STAGE1_BATCH)


@contextlib.contextmanager
def _evaluating(model, channels_last: bool) -> Iterator[None]:
    """Eval mode (no dropout) and, if asked, channels-last weights for the run; restored afterwards."""
    import torch

    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def run_stage1(
    generator,
    channels: np.ndarray,
    available: list[int],
    target: int,
    intensity: Optional[float],
    brain_slices: np.ndarray,
    device,
    options: Optional[Stage1Options] = None,
    hooks: Optional[RunHooks] = None,
) -> np.ndarray:
    """Synthesise channel ``target`` slice by slice: ``channels`` [Z, 4, H, W] in [-1, 1] -> [Z, H, W].

    ``intensity``: the intensity code, or ``None`` for a generator without intensity encoding.

    Slices without brain (``brain_slices`` False) stay -1 (background) unless the options ask
    for every slice. Missing channels are filled with -1 by the generator itself. The
    generator runs in eval mode on ``device`` (it is moved there); when memory runs out the
    batch is halved and, below one slice, the run continues on ``hooks.fallback_device``
    (default: the CPU for an accelerator, none for the CPU), leaving the generator there.
    """
    import torch

    options = options or Stage1Options()
    hooks = hooks or RunHooks()
    progress, cancel, log = hooks.progress, hooks.cancel, hooks.log
    device = torch.device(device)
    output = np.full((channels.shape[0],) + channels.shape[2:], -1.0, dtype=np.float32)
    indices = np.flatnonzero(brain_slices) if options.skip_empty_slices else np.arange(channels.shape[0])
    if indices.size == 0:
        return output
    fallback = hooks.fallback_for(device)
    backoff = MemoryBackoff("stage 1", "slices", device, options.batch_size or auto_batch_size(device, generator),
                            fallback, auto_batch_size(fallback, generator) if fallback is not None else 1, log)
    channels_last = bool(options.channels_last)
    with _evaluating(generator, channels_last):
        model, placed = generator, None
        compile_model = options.compile
        start = 0
        while start < indices.size:
            check_cancel(cancel)
            chunk = indices[start:start + backoff.batch]
            try:
                if placed != backoff.device:
                    model, placed = _placed_stage1_model(generator, backoff.device, compile_model), backoff.device
                output[chunk] = _stage1_batch(model, channels[chunk], available, target, intensity, backoff.device,
                                              options, channels_last)
            except Exception as error:  # noqa: BLE001 - only out-of-memory and compiler errors are handled
                if compile_model and _is_compiler_error(error):
                    action = "eager"
                elif backoff.can_recover(error):
                    action = "back off"
                else:
                    raise
            else:
                start += chunk.size
                if progress:
                    progress(start / indices.size, f"stage 1: {start}/{indices.size} slices")
                continue
            # Outside the except block: the failed batch's tensors are free now.
            if action == "eager":
                compile_model, placed = False, None
                if log:
                    log("stage 1: torch.compile failed; continuing without compilation")
                continue
            backoff.back_off()
            if backoff.fell_back:
                compile_model = False
    return output


def _placed_stage1_model(generator, device, compile_model: bool):
    """The generator on ``device``, wrapped by ``torch.compile`` if asked."""
    import torch

    generator.to(device)
    return torch.compile(generator) if compile_model else generator


def _stage1_batch(model, slices: np.ndarray, available: list[int], target: int, intensity: Optional[float],
                  device, options: Stage1Options, channels_last: bool) -> np.ndarray:
    """One batch of slices through the generator; returns float32 numpy [b, H, W]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    count = x.shape[0]
    mask = torch.zeros((count, slices.shape[1]), dtype=torch.bool)
    mask[:, list(available)] = True
    target_t = torch.full((count,), int(target), dtype=torch.long, device=device)
    intensity_t = None if intensity is None else torch.full((count,), float(intensity), dtype=torch.float32,
                                                            device=device)
    grad_context = torch.inference_mode() if options.inference_mode else torch.enable_grad()
    with grad_context, _autocast(device, options.autocast):
        y = model(x, mask, target_t, intensity_t)
    return y[:, 0].detach().float().cpu().numpy()


# --------------------------------------------------------------------------- stage 2


#: Window overlap of the refiner on every device (the reference's). One value for all devices, so that
#: a model gives the same result on the CPU and on a GPU (it used to be 0.25 on the CPU). Cost on the
#: CPU (small refiner, one thread of a busy 2-core VM): with the default 128^3 windows a 1 mm brain box
#: of 140 x 176 x 144 needs 8 windows at either overlap (103 s against 100 s), and smaller grids (the
#: 1.5 and 2.5 mm models) are refined as one window, so nothing changes; only with smaller windows
#: does it cost more (64^3 windows on 104 x 144 x 112: 36 instead of 12 windows, 72 s against 26 s).
DEFAULT_OVERLAP = 0.5


@dataclasses.dataclass
class Stage2Options:
    """Sliding-window settings for the refiner (``None``: chosen for the device).

    ``overlap``: :data:`DEFAULT_OVERLAP` (0.5) on every device, so the result does not depend
    on the device; give another value to trade seams for speed. ``sw_batch_size``: windows
    per batch (the same windows either way), 1 on the CPU (bounded memory: one
    window's activations at a time), on CUDA what fits in the free memory.
    ``single_window_ratio``: a volume whose size, rounded up to the U-Net's multiple, has at
    most this many times the voxels of ``roi_size`` is refined as one window (no seams,
    and fewer voxels than two overlapping windows); 0 always slides ``roi_size`` windows.
    ``slab``: the cross-attention steps run on slabs of this many slices (the same numbers,
    a fraction of the memory, see :attr:`Refiner.attention_slab`); 0 runs them at once.
    """

    roi_size: tuple[int, int, int] = (128, 128, 128)
    overlap: float = DEFAULT_OVERLAP
    sw_batch_size: Optional[int] = None
    autocast: bool = True
    single_window_ratio: float = 1.25
    slab: int = 16

    def __post_init__(self) -> None:
        if self.overlap is None or isinstance(self.overlap, bool) or not 0.0 <= float(self.overlap) < 1.0:
            raise InferenceOptionsError(f"Stage2Options.overlap must be in [0, 1), got {self.overlap!r}")
        if self.sw_batch_size is not None and int(self.sw_batch_size) < 1:
            raise InferenceOptionsError(
                f"Stage2Options.sw_batch_size must be >= 1 or None, got {self.sw_batch_size!r}")
        if self.slab < 0 or self.single_window_ratio < 0:
            raise InferenceOptionsError("Stage2Options.slab and single_window_ratio must be >= 0, "
                                        f"got {self.slab!r} and {self.single_window_ratio!r}")

    def overlap_for(self, device) -> float:
        """The window overlap on ``device``: ``overlap``, the same on every device."""
        return float(self.overlap)


def refiner_bytes_per_window(config, roi: tuple) -> float:
    """Estimated peak float32 activation bytes of one window through a refiner of ``config``."""
    voxels = float(np.prod(roi))
    return REFINER_ACTIVATION_FACTOR * config.channels * voxels * 4


def auto_window_batch(device, refiner, roi: tuple) -> int:
    """Windows per batch: 1 on the CPU, on CUDA what fits in the free memory (at most 4)."""
    import torch

    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return batch_for_memory(free, refiner_bytes_per_window(refiner.config, roi), MAX_CUDA_WINDOW_BATCH)


def refiner_roi(options: Stage2Options, shape: tuple, factor: int) -> tuple:
    """Window size for a volume of ``shape``: the whole volume (rounded up to ``factor``) when it
    is at most ``options.single_window_ratio`` ROIs, else at most ``options.roi_size`` and no
    larger than the rounded-up volume; always at least ``2 * factor`` per side so the U-Net
    bottleneck keeps more than one voxel (smaller volumes are zero-padded)."""
    whole = tuple(max(2 * factor, _round_up(int(s), factor)) for s in shape)
    if np.prod(whole, dtype=float) <= options.single_window_ratio * np.prod(options.roi_size, dtype=float):
        return whole
    return tuple(max(2 * factor, min(int(r), w)) for r, w in zip(options.roi_size, whole))


def run_refiner(
    refiner,
    stage1: np.ndarray,
    inputs: np.ndarray,
    target: int,
    available: list[int],
    device,
    options: Optional[Stage2Options] = None,
    hooks: Optional[RunHooks] = None,
) -> np.ndarray:
    """Refine a z-scored stage-1 volume [Z, H, W] with z-scored inputs [4, Z, H, W] (canonical order).

    Windows run on ``device`` and are blended into a CPU volume, so device memory holds one
    window batch. When memory runs out the window batch is halved and, below one window,
    the run restarts on ``hooks.fallback_device`` (default: the CPU for an accelerator).
    """
    import torch

    from ..models.refiner import refine_volume

    options = options or Stage2Options()
    hooks = hooks or RunHooks()
    progress, cancel, log = hooks.progress, hooks.cancel, hooks.log
    device = torch.device(device)
    overlap = options.overlap_for(device)
    roi = refiner_roi(options, stage1.shape, refiner.config.downsample_factor)
    fallback = hooks.fallback_for(device)
    backoff = MemoryBackoff("stage 2", "windows", device,
                            options.sw_batch_size or auto_window_batch(device, refiner, roi),
                            fallback, 1, log)
    stage1_t = torch.from_numpy(np.ascontiguousarray(stage1, dtype=np.float32))[None, None]
    inputs_t = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))[None]

    def window_progress(fraction: float) -> None:
        check_cancel(cancel)
        if progress:
            progress(fraction, "stage 2: refining")

    slab_before = refiner.attention_slab
    refiner.attention_slab = options.slab
    try:
        while True:
            check_cancel(cancel)
            try:
                refiner.to(backoff.device)
                with _autocast(backoff.device, options.autocast):
                    refined = refine_volume(refiner, stage1_t, inputs_t, target, available, roi_size=roi,
                                            overlap=overlap, sw_batch_size=backoff.batch, device=backoff.device,
                                            output_device="cpu", progress=window_progress)
                return refined[0, 0].float().numpy()
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not backoff.can_recover(error):
                    raise
            backoff.back_off()  # outside the except block: the failed windows' tensors are free now
    finally:
        refiner.attention_slab = slab_before


def _round_up(value: int, factor: int) -> int:
    return ((value + factor - 1) // factor) * factor
