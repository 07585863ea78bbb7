"""Choosing where the networks run: ``auto``, ``cpu`` or ``cuda``, and how many CPU threads."""
from __future__ import annotations

import os


class DeviceError(ValueError):
    """A device request that cannot be met (for example ``cuda`` on a machine without a GPU)."""


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def available_cpu_cores() -> int:
    """Cores this process may use (respects CPU affinity / container limits where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def configure_cpu_threads() -> int:
    """Let torch use every available core (and no more); returns the thread count."""
    import torch

    cores = available_cpu_cores()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return cores


def resolve_device(request: str = "auto"):
    """``"auto"`` -> CUDA when present else CPU; ``"cuda"`` without a GPU is a one-line error."""
    import torch

    request = (request or "auto").lower()
    if request == "gpu":
        request = "cuda"
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("device cuda requested but no CUDA GPU is available (use --device cpu or auto)")
        return torch.device(request)
    if request == "cpu":
        configure_cpu_threads()
        return torch.device("cpu")
    raise DeviceError(f"unknown device {request!r}; expected one of {', '.join(DEVICE_CHOICES)}")


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA out-of-memory errors (the typed one and the older RuntimeError text)."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
