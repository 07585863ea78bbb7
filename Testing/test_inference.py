"""Tests of the runners: fast paths equal the naive path, out-of-memory back-off and fallback, devices.

The out-of-memory tests use real (tiny) networks wrapped so that a batch larger than the
simulated device can hold raises the real ``torch.cuda.OutOfMemoryError``; the runners'
own retry code handles it. Without a GPU, two names of the CPU stand for the two devices:
``cpu`` is the small device and ``cpu:0`` the roomy fallback (tensors land on the CPU
either way, so the arithmetic is real).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import numpy as np
import pytest
import torch

from MRISynthesisLib.core import devices
from MRISynthesisLib.core.devices import DeviceError, cgroup_cpu_limit, is_out_of_memory, resolve_device
from MRISynthesisLib.core.inference import (
    InferenceOptionsError,
    RunHooks,
    MemoryBackoff,
    Stage1Options,
    Stage2Options,
    batch_for_memory,
    refiner_roi,
    run_refiner,
    run_stage1,
)
from MRISynthesisLib.core.progress import Cancelled
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig, refine_volume

CPU = torch.device("cpu")
ROOMY = torch.device("cpu", 0)  # the fallback device of the simulated small device


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_generator(seed: int = 0) -> HFGANGenerator:
    """A real HF-GAN with dropout (so eval mode matters), 32 x 32 slices."""
    torch.manual_seed(seed)
    config = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=32, dropout=0.2)
    return HFGANGenerator(config).eval()


def tiny_refiner(seed: int = 0) -> Refiner:
    """A real Refiner whose zero-initialised head is given weights, so it changes the volume."""
    torch.manual_seed(seed)
    refiner = Refiner(RefinerConfig(channels=4)).eval()
    with torch.no_grad():
        refiner.head.weight.normal_(0.0, 0.5)
        refiner.head.bias.fill_(0.1)
    return refiner


def stage1_case(depth: int = 9, seed: int = 0):
    """Channels [Z, 4, 32, 32] like real inputs: background -1, a brain disc that grows towards the middle
    slices (the first and last slice have none), textured values inside; and the brain slices."""
    rng = np.random.default_rng(seed)
    channels = np.full((depth, 4, 32, 32), -1.0, dtype=np.float32)
    yy, xx = np.mgrid[:32, :32]
    radius = 13.0 * np.sin(np.pi * np.arange(depth) / (depth - 1))
    for z in range(depth):
        disc = (yy - 15.5) ** 2 + (xx - 16.5) ** 2 < radius[z] ** 2
        channels[z][:, disc] = rng.uniform(-0.6, 1.0, size=(4, int(disc.sum())))
    brain = channels.reshape(depth, -1).max(axis=1) > -1.0
    return channels, brain


def _oom(what: str) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB ({what}, simulated)")


class _SmallDevice:
    """Mixin: batches over ``limit`` raise the real CUDA out-of-memory error until moved to ``roomy``."""

    def _setup_limit(self, limit: Optional[int]) -> None:
        self.limit = limit
        self.batches: list[int] = []
        self.moves: list[torch.device] = []

    def to(self, *args, **kwargs):  # records moves between devices, then moves for real
        target = kwargs.get("device", next((a for a in args if isinstance(a, (torch.device, str))), None))
        if target is not None:
            self.moves.append(torch.device(target))
        return super().to(*args, **kwargs)

    def _check_memory(self, batch: int) -> None:
        self.batches.append(batch)
        on_roomy = bool(self.moves) and self.moves[-1] == ROOMY
        if self.limit is not None and batch > self.limit and not on_roomy:
            raise _oom(f"batch {batch}")


class SmallDeviceGenerator(_SmallDevice, HFGANGenerator):
    """A real tiny generator on a simulated small device that holds ``limit`` slices per batch."""

    def __init__(self, limit: Optional[int], seed: int = 0) -> None:
        super().__init__(tiny_generator(seed).config)
        self.load_state_dict(tiny_generator(seed).state_dict())
        self.eval()
        self._setup_limit(limit)

    def forward(self, x, available, target, intensity):
        self._check_memory(x.shape[0])
        return super().forward(x, available, target, intensity)


class SmallDeviceRefiner(_SmallDevice, Refiner):
    """A real tiny refiner on a simulated small device that holds ``limit`` windows per batch.

    The check sits in front of every encoder, so it fires on any path through the refiner.
    """

    def __init__(self, limit: Optional[int], seed: int = 0) -> None:
        super().__init__(RefinerConfig(channels=4))
        self.load_state_dict(tiny_refiner(seed).state_dict())
        self.eval()
        self._setup_limit(limit)
        for encoder in self.encoders.values():
            encoder.register_forward_pre_hook(lambda module, args: self._check_memory(args[0].shape[0]))


class FailingGenerator(SmallDeviceGenerator):
    """Raises a non-memory error: must not be retried."""

    def forward(self, x, available, target, intensity):
        self.batches.append(x.shape[0])
        raise ValueError("broken weights")


def _run(generator, options, channels=None, brain=None, **kwargs):
    if channels is None:
        channels, brain = stage1_case()
    return run_stage1(generator, channels, [0, 1, 2], 3, 0.24, brain, CPU, options, RunHooks(**kwargs))


# --------------------------------------------------------------------------- fast path == naive path


@pytest.mark.parametrize("options", [
    Stage1Options(),
    Stage1Options(batch_size=1),
    Stage1Options(batch_size=3),
    Stage1Options(batch_size=5, inference_mode=False),
    Stage1Options(batch_size=64),
])
def test_stage1_fast_paths_equal_the_naive_path(options):
    generator = tiny_generator()
    channels, brain = stage1_case()
    naive = _run(generator, Stage1Options.naive(), channels, brain)
    fast = _run(generator, options, channels, brain)
    np.testing.assert_allclose(fast[brain], naive[brain], atol=1e-4, rtol=0)
    assert np.all(fast[~brain] == -1.0)  # skipped: background
    assert not np.all(naive[~brain] == -1.0)  # the naive path did run them
    assert np.ptp(naive[brain]) > 0.1  # a real, non-constant output


def test_stage1_naive_path_runs_every_slice_alone_and_fast_path_batches():
    generator = SmallDeviceGenerator(limit=None)
    channels, brain = stage1_case(depth=9)
    _run(generator, Stage1Options.naive(), channels, brain)
    assert generator.batches == [1] * 9
    generator.batches.clear()
    _run(generator, Stage1Options(batch_size=4), channels, brain)
    assert generator.batches == [4, 3]  # the 7 brain slices only


def test_stage1_leaves_the_generator_as_it_found_it():
    generator = tiny_generator().train()  # dropout active in training mode
    channels, brain = stage1_case()
    first = _run(generator, Stage1Options(channels_last=True), channels, brain)
    second = _run(generator, Stage1Options(channels_last=True), channels, brain)
    np.testing.assert_array_equal(first, second)  # eval mode during the run: no dropout noise
    assert generator.training
    assert all(p.is_contiguous() for p in generator.parameters())


def test_stage1_with_no_brain_slice_returns_background():
    channels, brain = stage1_case()
    out = _run(tiny_generator(), Stage1Options(), channels, np.zeros_like(brain))
    assert out.shape == (9, 32, 32) and np.all(out == -1.0)


def test_stage1_cancel_stops_between_batches():
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        _run(tiny_generator(), Stage1Options(), cancel=cancel)


def test_options_reject_impossible_values():
    with pytest.raises(InferenceOptionsError, match="batch_size"):
        Stage1Options(batch_size=0)
    with pytest.raises(InferenceOptionsError, match="overlap"):
        Stage2Options(overlap=1.0)
    with pytest.raises(InferenceOptionsError, match="sw_batch_size"):
        Stage2Options(sw_batch_size=0)


# --------------------------------------------------------------------------- out of memory: stage 1


def test_stage1_halves_the_batch_on_out_of_memory():
    generator = SmallDeviceGenerator(limit=2)
    channels, brain = stage1_case()
    expected = _run(tiny_generator(), Stage1Options.naive(), channels, brain)
    lines: list[str] = []
    out = _run(generator, Stage1Options(batch_size=8), channels, brain, log=lines.append)
    np.testing.assert_allclose(out[brain], expected[brain], atol=1e-4, rtol=0)
    assert lines == ["stage 1: out of memory on cpu, retrying with 4 slices per batch",
                     "stage 1: out of memory on cpu, retrying with 2 slices per batch"]
    assert generator.batches[:2] == [7, 4] and set(generator.batches[2:]) <= {1, 2}


def test_stage1_falls_back_when_one_slice_does_not_fit():
    generator = SmallDeviceGenerator(limit=0)
    channels, brain = stage1_case()
    expected = _run(tiny_generator(), Stage1Options.naive(), channels, brain)
    lines: list[str] = []
    out = _run(generator, Stage1Options(batch_size=2), channels, brain, log=lines.append, fallback_device=ROOMY)
    np.testing.assert_allclose(out[brain], expected[brain], atol=1e-4, rtol=0)
    assert lines[0] == "stage 1: out of memory on cpu, retrying with 1 slices per batch"
    assert lines[1] == "stage 1: out of memory on cpu even for one item; continuing on the cpu:0"
    assert generator.moves[-1] == ROOMY


def test_stage1_out_of_memory_with_nowhere_to_go_is_raised():
    generator = SmallDeviceGenerator(limit=0)
    lines: list[str] = []
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _run(generator, Stage1Options(batch_size=2), log=lines.append)  # CPU: no fallback by default
    assert generator.batches == [2, 1]
    assert len(lines) == 1


def test_stage1_other_errors_are_not_retried():
    generator = FailingGenerator(limit=None)
    lines: list[str] = []
    with pytest.raises(ValueError, match="broken weights"):
        _run(generator, Stage1Options(batch_size=4), log=lines.append, fallback_device=ROOMY)
    assert generator.batches == [4] and lines == []


# --------------------------------------------------------------------------- out of memory: stage 2


def refiner_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    stage1 = rng.normal(size=(40, 32, 32)).astype(np.float32)
    inputs = rng.normal(size=(4, 40, 32, 32)).astype(np.float32)
    inputs[1] = 0.0  # the target's channel is unused
    return stage1, inputs


def test_refiner_backs_off_then_falls_back_and_matches_the_direct_run():
    stage1, inputs = refiner_case()
    options = Stage2Options(roi_size=(32, 32, 32), overlap=0.25, sw_batch_size=2)
    reference = refine_volume(tiny_refiner(), torch.from_numpy(stage1)[None, None], torch.from_numpy(inputs)[None],
                              1, [0, 2, 3], roi_size=(32, 32, 32), overlap=0.25, sw_batch_size=1)[0, 0].numpy()
    refiner = SmallDeviceRefiner(limit=0)
    lines: list[str] = []
    out = run_refiner(refiner, stage1, inputs, 1, [0, 2, 3], CPU, options,
                      RunHooks(log=lines.append, fallback_device=ROOMY))
    np.testing.assert_allclose(out, reference, atol=1e-5, rtol=0)
    assert np.abs(out - stage1).max() > 0.05  # the refiner really changed the volume
    assert lines == ["stage 2: out of memory on cpu, retrying with 1 windows per batch",
                     "stage 2: out of memory on cpu even for one item; continuing on the cpu:0"]
    assert refiner.batches[:2] == [2, 1] and set(refiner.batches[2:]) == {1}


def test_refiner_window_batch_halves_and_blends_the_same():
    stage1, inputs = refiner_case(1)
    lines: list[str] = []
    one = run_refiner(tiny_refiner(), stage1, inputs, 1, [0, 2, 3], CPU,
                      Stage2Options(roi_size=(32, 32, 32), sw_batch_size=1))
    limited = SmallDeviceRefiner(limit=1)
    out = run_refiner(limited, stage1, inputs, 1, [0, 2, 3], CPU, Stage2Options(roi_size=(32, 32, 32),
                      sw_batch_size=4), RunHooks(log=lines.append))
    np.testing.assert_allclose(out, one, atol=1e-5, rtol=0)
    assert lines[-1] == "stage 2: out of memory on cpu, retrying with 1 windows per batch"


def test_refiner_roi_fits_the_volume_and_the_unet():
    assert refiner_roi(Stage2Options(), (155, 240, 240), 16) == (128, 128, 128)
    assert refiner_roi(Stage2Options(), (155, 120, 120), 16) == (160, 128, 128)  # one window, no seams
    assert refiner_roi(Stage2Options(single_window_ratio=0), (155, 120, 120), 16) == (128, 128, 128)
    assert refiner_roi(Stage2Options(roi_size=(32, 32, 32)), (40, 20, 90), 16) == (32, 32, 32)
    assert refiner_roi(Stage2Options(), (4, 4, 4), 16) == (32, 32, 32)


@pytest.mark.parametrize("slab", [16, 5])
def test_slab_wise_cross_attention_computes_what_the_whole_step_computes(slab):
    refiner = tiny_refiner(2)
    rng = np.random.default_rng(2)
    stage1 = torch.from_numpy(rng.normal(size=(1, 1, 48, 32, 32)).astype(np.float32))
    inputs = torch.from_numpy(rng.normal(size=(1, 4, 48, 32, 32)).astype(np.float32))
    with torch.inference_mode():
        expected = refiner(stage1, inputs, 3, [2, 0])
        refiner.attention_slab = slab
        got = refiner(stage1, inputs, 3, [0, 2])
    assert (expected - stage1).abs().max() > 0.05
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # With gradients (training) the steps run whole, so autograd sees no in-place writes.
    stage1.requires_grad_(True)
    trained = refiner(stage1, inputs, 3, [0, 2])
    trained.sum().backward()
    assert stage1.grad is not None and torch.isfinite(stage1.grad).all()
    torch.testing.assert_close(trained.detach(), expected, atol=1e-5, rtol=0)


def test_refiner_runs_with_and_without_slabs_alike_and_restores_training_mode():
    stage1, inputs = refiner_case(2)
    refiner = tiny_refiner().train()
    slabs = run_refiner(refiner, stage1, inputs, 1, [0, 2, 3], CPU, Stage2Options(roi_size=(32, 32, 32)))
    assert refiner.training
    whole = run_refiner(refiner.eval(), stage1, inputs, 1, [0, 2, 3], CPU, Stage2Options(roi_size=(32, 32, 32),
                                                                                         slab=0))
    assert not refiner.training and refiner.attention_slab == 0
    np.testing.assert_allclose(slabs, whole, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- back-off policy and devices


def test_memory_backoff_halves_then_moves_to_the_cpu_once():
    lines: list[str] = []
    backoff = MemoryBackoff("stage 1", "slices", torch.device("cuda"), 8, CPU, 4, lines.append)
    sizes = []
    while backoff.can_recover(_oom("policy")) and not backoff.fell_back:
        backoff.back_off()
        sizes.append((backoff.device.type, backoff.batch))
    assert sizes == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert lines[-1] == "stage 1: out of memory on cuda even for one item; continuing on the cpu"
    assert backoff.can_recover(_oom("cpu batch of 4"))  # on the CPU it can still halve
    for _ in range(2):
        backoff.back_off()
    assert backoff.batch == 1 and not backoff.can_recover(_oom("cpu, one slice"))
    assert not MemoryBackoff("s", "u", CPU, 8).can_recover(ValueError("not memory"))


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(_oom("typed"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocator errors


def test_batch_for_memory():
    gib = 1024**3
    assert batch_for_memory(10 * gib, gib, cap=64, share=0.6) == 6
    assert batch_for_memory(100 * gib, gib, cap=4) == 4
    assert batch_for_memory(0.1 * gib, gib, cap=64) == 1
    assert batch_for_memory(gib, 0, cap=8) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu_is_a_one_line_error():
    with pytest.raises(DeviceError, match="no CUDA GPU") as error:
        resolve_device("cuda")
    assert "\n" not in str(error.value)
    assert resolve_device("auto").type == "cpu"


def test_unknown_device_is_a_one_line_error():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_cpu_threads_follow_the_available_cores_unless_omp_num_threads_says(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(1)
        assert resolve_device("cpu").type == "cpu"
        assert torch.get_num_threads() == devices.available_cpu_cores()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert resolve_device("cpu").type == "cpu" and torch.get_num_threads() == 1
        assert devices.configure_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(DeviceError, match="at least 1"):
            devices.configure_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("text, expected", [("max 100000\n", None), ("150000 100000\n", 2),
                                            ("200000 100000\n", 2), ("50000 100000", 1), ("garbage", None)])
def test_cgroup_cpu_quota(tmp_path, text, expected):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cgroup_cpu_limit(path) == expected
    assert cgroup_cpu_limit(tmp_path / "missing") is None


@pytest.mark.skipif(devices.mps_available(), reason="needs a machine without Apple's GPU")
def test_mps_without_apple_gpu_is_a_one_line_error():
    with pytest.raises(DeviceError, match="MPS"):
        resolve_device("mps")


def test_auto_prefers_cuda_then_apple_gpu_then_cpu(monkeypatch):
    """The order of ``auto``. MPS cannot run on this machine, so its availability is what is set here;
    the device object and the fallback switch are torch's own."""
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        return
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    assert os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1", "unsupported MPS operations must fall back to the CPU"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_slicer_keeps_one_core():
    assert devices.leave_one_core() == max(1, devices.available_cpu_cores() - 1)
