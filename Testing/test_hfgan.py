"""Tests of the HF-GAN generator: layout, loading, masking, gradients, and reference outputs.

The reference fixtures (``Testing/data/hfgan_ref_*.npz``) hold outputs of the public
HF-GAN code run on weights from :func:`seeded_reference_state_dict` and inputs from
:func:`seeded_slices`; ``Testing/data/README.md`` says how they were made.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from MRISynthesisLib.models.hfgan import (
    INTENSITY_PRIORS,
    REFERENCE_MODALITY_ORDER,
    HFGANConfig,
    HFGANError,
    HFGANGenerator,
    StateDictMismatchError,
    expected_layout,
    inference_intensity,
    reference_layout_config,
    seeded_reference_state_dict,
)
from MRISynthesisLib.sequences import Sequence

DATA = Path(__file__).parent / "data"
LAYOUT = json.loads((DATA / "hfgan_ie_layout.json").read_text())

#: A reference-compatible config that runs in milliseconds (the reference fixes 16 heads).
TINY = HFGANConfig(dim=16, dim_mults=(1, 2, 4), n_layers=2, n_heads=16, image_size=32)

#: Mixed availability covering every channel, every target, singles and several.
MIXED_AVAILABLE = [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [2], [0, 3], [3, 1], [1]]
MIXED_TARGET = [0, 1, 2, 3, 0, 1, 2, 3]
MIXED_INTENSITY = [0.4332, 0.2498, 0.3034, 0.2404, 0.5, 0.1, 0.3, -0.2]


def seeded_slices(batch: int, size: int, seed: int) -> torch.Tensor:
    """Smooth [batch, 4, size, size] images in (-1, 1): upsampled seeded noise through tanh."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 4, max(size // 8, 1), max(size // 8, 1), generator=gen)
    return torch.tanh(F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False))


def layout_tensors(layout: Dict[str, Tuple[int, ...]], device: str = "meta") -> Dict[str, torch.Tensor]:
    """Tensors with the given shapes (meta: shapes only, no memory)."""
    return {k: torch.zeros(tuple(s), device=device) for k, s in layout.items()}


def tiny_generator(seed: int = 0, config: HFGANConfig = TINY) -> HFGANGenerator:
    """A TINY generator with seeded weights, in eval mode."""
    return HFGANGenerator.from_reference_state_dict(seeded_reference_state_dict(config, seed)).eval()


def run(gen: HFGANGenerator, x: torch.Tensor, available, target, intensity) -> torch.Tensor:
    """Forward without autograd."""
    with torch.no_grad():
        return gen(x, available, torch.as_tensor(target), torch.as_tensor(intensity, dtype=torch.float32))


# --------------------------------------------------------------------------- layout and config


def test_paper_layout_equals_reference_json() -> None:
    layout = expected_layout(HFGANConfig.paper())
    reference = {k: tuple(v) for k, v in LAYOUT["parameters"].items()}
    assert list(layout) == list(reference)  # same keys in the same order
    assert layout == reference
    assert sum(math.prod(s) for s in layout.values()) == LAYOUT["total_parameters"] == 80_042_881


@pytest.mark.parametrize("size", [240, 128, 96])
def test_small_preset_is_cpu_sized(size: int) -> None:
    config = HFGANConfig.small(size)
    count = sum(math.prod(s) for s in expected_layout(config).values())
    assert 1_000_000 <= count <= 3_000_000
    assert config.n_tokens == (size // 8) ** 2


def test_small_preset_runs_on_96() -> None:
    gen = HFGANGenerator(HFGANConfig.small(96)).eval()
    out = run(gen, seeded_slices(2, 96, 0), [[0, 1, 2], [3]], [3, 0], [0.24, 0.43])
    assert out.shape == (2, 1, 96, 96) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 100},  # not a multiple of 16
        {"dim": 12},  # GroupNorm needs multiples of 8
        {"n_heads": 7},  # 640 not divisible by 7
        {"dim_mults": (2, 4)},  # first level must keep dim
        {"modality_order": ("t1n", "t1n", "t2w", "t2f")},
    ],
)
def test_invalid_config_is_rejected(kwargs) -> None:
    with pytest.raises(HFGANError):
        HFGANConfig(**kwargs)


def test_config_round_trips_through_json() -> None:
    for config in (HFGANConfig.paper(), HFGANConfig.small(128), TINY):
        data = json.loads(json.dumps(config.to_dict()))
        assert HFGANConfig.from_dict(data) == config
    with pytest.raises(HFGANError, match=r"unknown keys \['width'\]"):
        HFGANConfig.from_dict({"width": 3})


# --------------------------------------------------------------------------- loading


def test_config_inference_from_reference_layout() -> None:
    paper_state = {k: torch.zeros(tuple(v), device="meta") for k, v in LAYOUT["parameters"].items()}
    assert reference_layout_config(paper_state) == HFGANConfig.paper()
    variants = [
        TINY,
        HFGANConfig(dim=8, dim_mults=(1, 2, 2, 4), n_layers=3, image_size=64, blocks=True),
        HFGANConfig(dim=16, dim_mults=(1, 2), n_layers=1, image_size=48, intensity_encoding=False),
    ]
    for config in variants:
        inferred = reference_layout_config(layout_tensors(expected_layout(config)), n_heads=config.n_heads)
        assert inferred == config


@pytest.mark.parametrize("prefix", ["", "module."])
def test_strict_load_of_paper_layout(prefix: str) -> None:
    layout = {k: tuple(v) for k, v in LAYOUT["parameters"].items()}
    state = layout_tensors(layout, device="cpu")
    marked = ["encoder.conv1.weight", "middle.modality_embedding.0.weight", "decoder.conv_final.3.bias"]
    for i, key in enumerate(marked):
        state[key] = torch.full(layout[key], float(i + 1))
    gen = HFGANGenerator.from_reference_state_dict({prefix + k: v for k, v in state.items()})
    assert gen.config == HFGANConfig.paper()
    assert gen.modality_order == REFERENCE_MODALITY_ORDER
    loaded = gen.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in layout)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_strict_load_of_small_layout(prefix: str) -> None:
    config = HFGANConfig.small(96)
    state = seeded_reference_state_dict(config, seed=4)
    order = ("t1n", "t1c", "t2w", "t2f")
    gen = HFGANGenerator.from_reference_state_dict(
        {prefix + k: v for k, v in state.items()}, modality_order=order, n_heads=config.n_heads
    )
    assert gen.config == dataclasses.replace(config, modality_order=order)
    assert gen.modality_order == (Sequence.T1N, Sequence.T1C, Sequence.T2W, Sequence.T2F)
    assert gen.channel_of("flair") == 3
    loaded = gen.state_dict()
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def _one_line_mismatch(state: Dict[str, torch.Tensor]) -> str:
    """Message of the StateDictMismatchError raised for ``state``."""
    with pytest.raises(StateDictMismatchError) as info:
        HFGANGenerator.from_reference_state_dict(state)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    return message


def test_mismatched_state_dict_names_the_key() -> None:
    state = layout_tensors(expected_layout(TINY), device="cpu")
    missing = {k: v for k, v in state.items() if k != "encoder.attn_blocks.2.attn.3.bias"}
    assert "missing key 'encoder.attn_blocks.2.attn.3.bias'" in _one_line_mismatch(missing)
    extra = {**state, "encoder.extra.weight": torch.zeros(1)}
    assert "unexpected key 'encoder.extra.weight'" in _one_line_mismatch(extra)
    wrong = {**state, "decoder.ups.0.1.conv.bias": torch.zeros(3)}
    assert "'decoder.ups.0.1.conv.bias' has shape (3,)" in _one_line_mismatch(wrong)
    no_stem = {k: v for k, v in state.items() if not k.startswith("encoder.encoder_early.conv_initial")}
    assert "encoder.encoder_early.conv_initial.weight" in _one_line_mismatch(no_stem)


# --------------------------------------------------------------------------- behaviour


def test_forward_shapes_and_gradients_reach_every_parameter() -> None:
    config = HFGANConfig(dim=16, dim_mults=(1, 2, 4), n_layers=2, n_heads=4, image_size=32)
    gen = HFGANGenerator(config).train()
    x = seeded_slices(8, 32, 1)
    target, intensity = torch.tensor(MIXED_TARGET), torch.tensor(MIXED_INTENSITY)
    out, fused = gen.forward_with_features(x, MIXED_AVAILABLE, target, intensity)
    assert out.shape == (8, 1, 32, 32)
    assert fused.shape == (8, config.hidden_size, 8, 8)
    (out.square().mean() + fused.mean()).backward()
    no_grad = [n for n, p in gen.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_single_input_batches_do_not_use_the_early_encoder() -> None:
    gen = HFGANGenerator(TINY).train()
    out = gen(seeded_slices(2, 32, 2), [[1], [2]], torch.tensor([0, 3]), torch.tensor([0.4, 0.2]))
    out.mean().backward()
    early = [p.grad for n, p in gen.named_parameters() if n.startswith("encoder.encoder_early.")]
    assert early and all(g is None for g in early)
    unused_prefixes = ("encoder.encoder_middles.0.", "encoder.encoder_middles.3.")
    unused = [p.grad for n, p in gen.named_parameters() if n.startswith(unused_prefixes)]
    assert all(g is None for g in unused)
    used = [p.grad for n, p in gen.named_parameters() if n.startswith("encoder.encoder_middles.1.")]
    assert all(g is not None for g in used)


def test_missing_channels_are_ignored() -> None:
    gen = tiny_generator(seed=1)
    x = seeded_slices(8, 32, 3)
    base = run(gen, x, MIXED_AVAILABLE, MIXED_TARGET, MIXED_INTENSITY)
    scrambled = x.clone()
    noise = seeded_slices(8, 32, 4) * 50
    for n, avail in enumerate(MIXED_AVAILABLE):
        for c in range(4):
            if c not in avail:
                scrambled[n, c] = noise[n, c]
    assert torch.equal(run(gen, scrambled, MIXED_AVAILABLE, MIXED_TARGET, MIXED_INTENSITY), base)
    # ... while an available channel does matter
    changed = x.clone()
    changed[:, 3] = noise[:, 3]
    diff = (run(gen, changed, MIXED_AVAILABLE, MIXED_TARGET, MIXED_INTENSITY) - base).abs().amax(dim=(1, 2, 3))
    has_3 = torch.tensor([3 in a for a in MIXED_AVAILABLE])
    assert (diff[has_3] > 1e-3).all() and (diff[~has_3] == 0).all()


def test_target_and_intensity_condition_the_output() -> None:
    gen = tiny_generator(seed=2)
    x = seeded_slices(1, 32, 5)
    outs = [run(gen, x, [[0, 1]], [t], [0.3]) for t in range(4)]
    assert min((a - b).abs().max() for i, a in enumerate(outs) for b in outs[i + 1 :]) > 1e-3
    brighter = run(gen, x, [[0, 1]], [2], [0.6])
    assert (brighter - outs[2]).abs().max() > 1e-3


def test_no_intensity_encoding_ignores_intensity() -> None:
    config = HFGANConfig(dim=16, dim_mults=(1, 2), n_layers=1, n_heads=4, image_size=16, intensity_encoding=False)
    gen = HFGANGenerator(config).eval()
    x = seeded_slices(1, 16, 6)
    assert torch.equal(run(gen, x, [[0, 2]], [1], [0.1]), run(gen, x, [[0, 2]], [1], [0.9]))


def test_mask_scalars_inference_mode_and_channels_last_agree() -> None:
    gen = tiny_generator(seed=3)
    x = seeded_slices(3, 32, 7)
    base = run(gen, x, [[0, 1, 3]] * 3, [2, 2, 2], [0.3, 0.3, 0.3])
    mask = torch.tensor([[True, True, False, True]] * 3)
    assert torch.equal(run(gen, x, mask, 2, 0.3), base)
    with torch.inference_mode():
        assert torch.equal(gen(x, mask, 2, 0.3), base)
        gen_cl = gen.to(memory_format=torch.channels_last)
        out_cl = gen_cl(x.contiguous(memory_format=torch.channels_last), mask, 2, 0.3)
    assert torch.allclose(out_cl, base, atol=1e-4)


@pytest.mark.parametrize(
    "available, target, shape, message",
    [
        ([[0], []], [1, 1], (2, 4, 32, 32), "at least one available channel"),
        ([[0, 0], [1]], [1, 1], (2, 4, 32, 32), r"available\[0\]"),
        ([[4], [1]], [1, 1], (2, 4, 32, 32), r"available\[0\]"),
        ([[0]], [1, 1], (2, 4, 32, 32), "one index list per batch item"),
        ([[0], [1]], [1, 5], (2, 4, 32, 32), "target must hold channel indices"),
        ([[0], [1]], [1, 1], (2, 4, 48, 48), r"\[B, 4, 32, 32\]"),
        ([[0], [1]], [1, 1], (2, 3, 32, 32), r"\[B, 4, 32, 32\]"),
    ],
)
def test_bad_inputs_give_one_line_errors(available, target, shape, message) -> None:
    gen = HFGANGenerator(TINY).eval()
    with pytest.raises(HFGANError, match=message):
        run(gen, torch.zeros(shape), available, target, [0.3, 0.3])


def test_inference_intensity() -> None:
    assert inference_intensity(Sequence.T1N) == 0.4332
    assert inference_intensity("flair", mode="sigma", k=2.0) == pytest.approx(0.3034 + 2 * 0.1017)
    assert inference_intensity("t1c", mode="sigma", k=-1.0) == pytest.approx(0.2404 - 0.0623)
    assert inference_intensity("t2w", value=0.7) == 0.7
    assert INTENSITY_PRIORS[Sequence.T2W] == (0.2498, 0.0626)
    with pytest.raises(HFGANError, match="mode must be"):
        inference_intensity("t2w", mode="median")


# --------------------------------------------------------------------------- reference fixtures


def _fixture_inputs(data) -> Tuple[HFGANConfig, torch.Tensor, List[List[int]], torch.Tensor, torch.Tensor]:
    """Config, inputs, availability, targets and intensities described by a fixture."""
    config = HFGANConfig.from_dict(json.loads(str(data["config_json"])))
    x = seeded_slices(int(data["batch"]), config.image_size, int(data["input_seed"]))
    available = [[int(c) for c in row if c >= 0] for row in data["available"]]
    return config, x, available, torch.from_numpy(data["target"]), torch.from_numpy(data["intensity"])


def _check_fixture(name: str) -> None:
    """Rebuild weights and inputs, check their checksums, and compare with the reference outputs."""
    data = np.load(DATA / name)
    config, x, available, target, intensity = _fixture_inputs(data)
    state = seeded_reference_state_dict(config, int(data["weight_seed"]))
    weight_sum = sum(float(v.double().abs().sum()) for v in state.values())
    assert weight_sum == pytest.approx(float(data["weights_abs_sum"]), rel=1e-9), "seeded weights changed"
    assert float(x.double().sum()) == pytest.approx(float(data["inputs_sum"]), rel=1e-6), "seeded inputs changed"
    gen = HFGANGenerator.from_reference_state_dict(state, modality_order=tuple(data["modality_order"])).eval()
    with torch.inference_mode():
        out, fused = gen.forward_with_features(x, available, target, intensity)
    expected = torch.from_numpy(data["expected"])
    assert out.shape == expected.shape
    assert (out - expected).abs().max() < 1e-4
    if "expected_fused" in data:
        assert (fused - torch.from_numpy(data["expected_fused"])).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["hfgan_ref_tiny.npz", "hfgan_ref_tiny_blocks.npz", "hfgan_ref_tiny_noie.npz"])
def test_matches_reference_outputs_tiny(name: str) -> None:
    _check_fixture(name)


@pytest.mark.slow
def test_matches_reference_outputs_paper_240() -> None:
    _check_fixture("hfgan_ref_paper240.npz")
