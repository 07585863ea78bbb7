"""The refiner's sliding windows do not depend on the device: one overlap everywhere, and the window
batching the CUDA path picks gives the CPU path's result (both exercised on the CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from MRISynthesisLib.core.inference import (
    DEFAULT_OVERLAP,
    MAX_CUDA_WINDOW_BATCH,
    InferenceOptionsError,
    Stage2Options,
    batch_for_memory,
    refiner_bytes_per_window,
    run_refiner,
)
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only its type is read: no GPU is needed


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _case(seed: int = 0):
    """A small refiner with non-trivial weights and a z-scored volume larger than one window."""
    torch.manual_seed(seed)
    refiner = Refiner(RefinerConfig(channels=4)).eval()
    with torch.no_grad():  # the output layer starts at zero (identity refiner): give it weights
        for parameter in refiner.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    rng = np.random.default_rng(seed)
    shape = (40, 56, 48)
    stage1 = rng.normal(size=shape).astype(np.float32)
    inputs = rng.normal(size=(4,) + shape).astype(np.float32)
    inputs[1] = 0.0  # the target's channel
    return refiner, stage1, inputs


def test_one_overlap_on_every_device_with_an_explicit_override():
    assert DEFAULT_OVERLAP == 0.5
    assert Stage2Options().overlap_for(CPU) == Stage2Options().overlap_for(CUDA) == 0.5
    assert Stage2Options(overlap=0.25).overlap_for(CPU) == Stage2Options(overlap=0.25).overlap_for(CUDA) == 0.25
    with pytest.raises(InferenceOptionsError, match="overlap must be in"):
        Stage2Options(overlap=None)


def test_cpu_and_cuda_window_settings_give_the_same_refinement_on_the_cpu():
    refiner, stage1, inputs = _case()
    roi = (32, 32, 32)
    cpu_settings = Stage2Options(roi_size=roi, single_window_ratio=0)  # batch 1 on the CPU
    # what the CUDA branch picks on a large GPU: its overlap and a full window batch (autocast is CUDA-only)
    cuda_batch = batch_for_memory(1e12, refiner_bytes_per_window(refiner.config, roi), MAX_CUDA_WINDOW_BATCH)
    assert cuda_batch == MAX_CUDA_WINDOW_BATCH > 1
    cuda_settings = Stage2Options(roi_size=roi, single_window_ratio=0, sw_batch_size=cuda_batch,
                                  overlap=cpu_settings.overlap_for(CUDA))
    on_cpu = run_refiner(refiner, stage1, inputs, 1, [0, 2, 3], CPU, cpu_settings)
    with_cuda_settings = run_refiner(refiner, stage1, inputs, 1, [0, 2, 3], CPU, cuda_settings)
    np.testing.assert_allclose(with_cuda_settings, on_cpu, rtol=0, atol=1e-5)
    # the overlap matters (the old CPU value gives another result), so the comparison above can fail
    old_cpu = run_refiner(refiner, stage1, inputs, 1, [0, 2, 3], CPU,
                          Stage2Options(roi_size=roi, single_window_ratio=0, overlap=0.25))
    assert np.abs(old_cpu - on_cpu).max() > 1e-3
