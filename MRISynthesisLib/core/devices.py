"""Choosing where the networks run: ``auto``, ``cpu``, ``cuda`` or ``mps``, and how many CPU threads.

Also the one place that knows what an out-of-memory error looks like, so the runners in
:mod:`MRISynthesisLib.core.inference` can back off instead of crashing.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional


class DeviceError(ValueError):
    """A device request that cannot be met (for example ``cuda`` on a machine without a GPU)."""


DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

#: What a run on Apple's GPU says in its log: operations MPS lacks run on the CPU instead of failing.
MPS_FALLBACK_NOTE = ("running on Apple's GPU (MPS); operations it does not support run on the CPU "
                     "(PYTORCH_ENABLE_MPS_FALLBACK=1)")


def mps_available() -> bool:
    """True when torch can use Apple's Metal GPU (MPS) here."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def leave_one_core() -> int:
    """CPU threads for a computation that shares the machine with an application (Slicer's rendering and
    GUI keep one core): every available core but one, at least one."""
    return max(1, available_cpu_cores() - 1)

#: cgroup v2 file holding the CPU quota of a container ("max 100000" or "200000 100000").
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> Optional[int]:
    """Cores allowed by a cgroup v2 CPU quota (rounded up), or None when there is no quota."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpu_cores() -> int:
    """Cores this process may use: CPU affinity, capped by a container's CPU quota where visible."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, limit)
    return max(1, cores)


def requested_cpu_threads() -> Optional[int]:
    """The thread count asked for with the ``OMP_NUM_THREADS`` environment variable, if valid."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def configure_cpu_threads(threads: Optional[int] = None) -> int:
    """Let torch use ``threads``, else ``OMP_NUM_THREADS``, else every available core; returns the count.

    More threads than cores only makes the threads wait for each other.
    """
    import torch

    if threads is None:
        threads = requested_cpu_threads() or available_cpu_cores()
    count = int(threads)
    if count < 1:
        raise DeviceError(f"CPU thread count must be at least 1, got {count}")
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def resolve_device(request: str = "auto"):
    """``"auto"`` -> CUDA when present, else Apple's MPS, else CPU; an unavailable GPU is a one-line error.

    On MPS, operations the backend lacks fall back to the CPU: ``PYTORCH_ENABLE_MPS_FALLBACK`` is
    set here unless the user set it (torch reads it when an unsupported operation first runs;
    the worker process sets it before torch starts).
    """
    import torch

    request = (request or "auto").lower()
    if request == "gpu":
        request = "cuda"
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if request == "mps":
        if not mps_available():
            raise DeviceError("device mps requested but Apple's GPU (MPS) is not available (use --device cpu or auto)")
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
        return torch.device("mps")
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("device cuda requested but no CUDA GPU is available (use --device cpu or auto)")
        try:
            device = torch.device(request)
        except RuntimeError as error:
            raise DeviceError(f"unknown device {request!r}: {error}") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {request} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return device
    if request == "cpu":
        configure_cpu_threads()
        return torch.device("cpu")
    raise DeviceError(f"unknown device {request!r}; expected one of {', '.join(DEVICE_CHOICES)}")


#: Texts of allocation failures that are not typed: CUDA (older torch) and the CPU allocator.
_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """True for errors that mean memory ran out: CUDA (typed or by text), the CPU allocator, MemoryError."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(t in text for t in _OUT_OF_MEMORY_TEXTS)


def release_cached_memory(device=None) -> None:
    """Give memory cached by torch's GPU allocator back: ``device``'s after a failed batch (no-op on the CPU), or,
    with None, every GPU backend's after a job (other programs and Slicer's rendering want it). Nothing when
    torch was never imported."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return
    kind = getattr(device, "type", None)
    if kind in ("cuda", None) and torch.cuda.is_available():
        torch.cuda.empty_cache()
    backend = getattr(torch.backends, "mps", None)
    if kind in ("mps", None) and backend is not None and backend.is_available() and hasattr(torch, "mps"):
        torch.mps.empty_cache()
