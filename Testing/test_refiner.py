"""Tests of the stage-2 Refiner (MRISynthesisLib/models/refiner.py) on small real tensors."""
from __future__ import annotations

import pytest
import torch

from MRISynthesisLib.models.refiner import (
    ElementwiseCrossAttention,
    Refiner,
    RefinerConfig,
    RefinerInputError,
    build_refiner,
    count_parameters,
    refine_volume,
)
from MRISynthesisLib.sequences import SEQUENCES, Sequence

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = RefinerConfig(channels=8, decoder_layers=1)
SHAPE = (16, 16, 32)  # smallest size whose U-Net bottleneck keeps 2 voxels (instance norm in training)


def _volumes(shape=SHAPE, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random z-scored-like stage-1 volume [B,1,...] and four inputs [B,4,...]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, *shape, generator=gen), torch.randn(batch, 4, *shape, generator=gen)


def _trained_like(config: RefinerConfig = TINY, seed: int = 1) -> Refiner:
    """A Refiner whose zero-initialised output conv got random weights, so it is not the identity."""
    torch.manual_seed(seed)
    model = build_refiner(config)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)
        model.head.bias.fill_(0.1)
    return model


def test_config_presets_and_round_trip() -> None:
    assert RefinerConfig.paper().channels == 64
    assert RefinerConfig.small().channels < 64
    for config in (RefinerConfig.paper(), RefinerConfig.small(), TINY):
        assert RefinerConfig.from_dict(config.to_dict()) == config
    assert RefinerConfig.paper().downsample_factor == 16
    with pytest.raises(ValueError, match="unknown keys"):
        RefinerConfig.from_dict({"channels": 8, "depth": 3})
    with pytest.raises(ValueError, match="channels"):
        RefinerConfig(channels=7)


def test_paper_layout_is_64_channels_everywhere() -> None:
    model = Refiner(RefinerConfig.paper())
    assert sorted(model.encoders) == sorted(s.value for s in SEQUENCES)
    assert len(model.attention) == 12  # every ordered (target, source) pair
    for encoder in model.encoders.values():
        convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv3d)]
        assert {c.out_channels for c in convs} == {64}
    block = model.attention["t2f_from_t1n"]
    assert isinstance(block, ElementwiseCrossAttention)
    assert block.query.out_features == block.key.out_features == block.value.out_features == 64
    assert model.head.in_channels == 64 and model.head.out_channels == 1
    # the small preset is much lighter than the paper one
    assert count_parameters(Refiner(RefinerConfig.small())) * 10 < count_parameters(model)


@pytest.mark.parametrize("available", [[0], [0, 2], [0, 1, 2]])
def test_untrained_refiner_is_identity_for_1_2_3_sequences(available: list[int]) -> None:
    model = build_refiner(TINY).eval()
    stage1, inputs = _volumes()
    with torch.no_grad():
        out = model(stage1, inputs, 3, available)
    assert out.shape == stage1.shape
    assert torch.equal(out, stage1)


def test_refined_output_uses_only_available_channels() -> None:
    model = _trained_like().eval()
    stage1, inputs = _volumes()
    with torch.no_grad():
        out = model(stage1, inputs, 1, [0, 3])
        assert not torch.allclose(out, stage1)
        ignored = inputs.clone()
        ignored[:, 1] = 5.0  # the target's own channel
        ignored[:, 2] = -3.0  # not available
        assert torch.equal(model(stage1, ignored, 1, [0, 3]), out)
        used = inputs.clone()
        used[:, 3] += 1.0
        assert not torch.allclose(model(stage1, used, 1, [0, 3]), out)


def test_sequences_may_be_given_as_enum() -> None:
    model = _trained_like().eval()
    stage1, inputs = _volumes()
    with torch.no_grad():
        by_index = model(stage1, inputs, 3, [0])
        by_enum = model(stage1, inputs, Sequence.T2F, [Sequence.T1N])
    assert torch.equal(by_index, by_enum)


def test_gradients_reach_used_parameters_only() -> None:
    model = _trained_like().train()
    stage1, inputs = _volumes(batch=2)
    out = model(stage1, inputs, 2, [3, 0])
    ((out - inputs[:, 2:3]) ** 2).mean().backward()
    used = ["encoders.t2w.", "encoders.t1n.", "encoders.t2f.", "attention.t2w_from_t1n.",
            "attention.t2w_from_t2f.", "decoder.", "head."]
    for name, param in model.named_parameters():
        if any(name.startswith(prefix) for prefix in used):
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name
    assert model.encoders["t1n"].conv_0.conv_0.conv.weight.grad.abs().sum() > 0
    assert model.attention["t2w_from_t2f"].value.weight.grad.abs().sum() > 0


def test_untrained_head_gets_the_first_gradient() -> None:
    model = build_refiner(TINY).train()
    stage1, inputs = _volumes()
    out = model(stage1, inputs, 0, [1])
    ((out - inputs[:, :1]) ** 2).mean().backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_cross_attention_runs_in_canonical_order() -> None:
    model = _trained_like().eval()
    stage1, inputs = _volumes()
    with torch.no_grad():
        given_unsorted = model(stage1, inputs, 1, [3, 0, 2])
        canonical = model.forward_in_order(stage1, inputs, 1, [0, 2, 3])
        reversed_order = model.forward_in_order(stage1, inputs, 1, [3, 2, 0])
    assert torch.equal(given_unsorted, canonical)
    assert not torch.allclose(canonical, reversed_order, atol=1e-4)


def test_elementwise_attention_formula() -> None:
    torch.manual_seed(0)
    block = ElementwiseCrossAttention(channels=4, ff_channels=6)
    synthetic = torch.randn(2, 4, 3, 2, 5)
    source = torch.randn(2, 4, 3, 2, 5)
    # the paper's [M, C] view, computed here with explicit reshapes
    flat_syn = synthetic.permute(0, 2, 3, 4, 1).reshape(-1, 4)
    flat_src = source.permute(0, 2, 3, 4, 1).reshape(-1, 4)
    q = block.query(block.norm_query(flat_syn))
    k = block.key(block.norm_source(flat_src))
    v = block.value(block.norm_source(flat_src))
    refined = flat_syn + torch.exp(-(q - k).abs()) * v
    conv1, act, conv2 = block.feed_forward
    hidden = act(refined @ conv1.weight.view(6, 4).T + conv1.bias)
    expected = refined + hidden @ conv2.weight.view(4, 6).T + conv2.bias
    expected = expected.reshape(2, 3, 2, 5, 4).permute(0, 4, 1, 2, 3)
    assert torch.allclose(block(synthetic, source), expected, atol=1e-5)


@pytest.mark.parametrize(
    "target, available, message",
    [
        (0, [], "no available sequence"),
        (2, [0, 2], "also listed as available"),
        (2, [0, 0], "duplicates"),
        (4, [0], "is not an index"),
        (1, [-1], "is not an index"),
    ],
)
def test_bad_sequences_raise(target, available, message) -> None:
    model = build_refiner(TINY)
    stage1, inputs = _volumes()
    with pytest.raises(RefinerInputError, match=message):
        model(stage1, inputs, target, available)


@pytest.mark.parametrize(
    "stage1_shape, inputs_shape, message",
    [
        ((16, 16, 32), (4, 16, 16, 32), r"stage1 must be \[B,1,D,H,W\]"),
        ((1, 2, 16, 16, 32), (1, 4, 16, 16, 32), r"stage1 must be"),
        ((1, 1, 16, 16, 32), (1, 3, 16, 16, 32), r"inputs must be \[B,4,D,H,W\]"),
        ((1, 1, 16, 16, 32), (1, 4, 16, 32, 32), "differ in batch or size"),
        ((1, 1, 16, 16, 32), (2, 4, 16, 16, 32), "differ in batch or size"),
        ((1, 1, 16, 16, 20), (1, 4, 16, 16, 20), "must be 3 positive multiples of 16"),
        ((1, 1, 16, 16, 16), (1, 4, 16, 16, 16), "too small: one side must be at least 32"),
    ],
)
def test_bad_shapes_raise(stage1_shape, inputs_shape, message) -> None:
    model = build_refiner(TINY)
    with pytest.raises(RefinerInputError, match=message):
        model(torch.zeros(stage1_shape), torch.zeros(inputs_shape), 0, [1])


def test_refine_volume_one_window_matches_direct_forward() -> None:
    model = _trained_like().eval()
    stage1, inputs = _volumes()
    with torch.no_grad():
        direct = model(stage1, inputs, 0, [2])
    windowed = refine_volume(model, stage1, inputs, 0, [2], roi_size=SHAPE)
    assert torch.allclose(windowed, direct, atol=1e-5)


def test_refine_volume_non_divisible_size_identity_and_progress() -> None:
    model = build_refiner(TINY).train()
    stage1, inputs = _volumes(shape=(20, 12, 18))  # not multiples of 16, one side below the ROI
    fractions: list[float] = []
    out = refine_volume(model, stage1, inputs, 3, [1], roi_size=(16, 16, 32), progress=fractions.append)
    assert out.shape == stage1.shape
    assert torch.allclose(out, stage1, atol=1e-5)
    assert model.training  # mode restored
    assert fractions and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and all(0.0 < f <= 1.0 for f in fractions)
    out[0, 0, 0, 0, 0] = 1.0  # a plain tensor, editable outside inference mode


def test_refine_volume_rejects_bad_roi_and_shapes() -> None:
    model = build_refiner(TINY)
    stage1, inputs = _volumes()
    with pytest.raises(RefinerInputError, match="roi_size"):
        refine_volume(model, stage1, inputs, 0, [1], roi_size=(24, 16, 32))
    with pytest.raises(RefinerInputError, match="roi_size .* too small"):
        refine_volume(model, stage1, inputs, 0, [1], roi_size=(16, 16, 16))
    with pytest.raises(RefinerInputError, match="inputs must be"):
        refine_volume(model, stage1, inputs[:, :3], 0, [1], roi_size=SHAPE)
    with pytest.raises(RefinerInputError, match="also listed"):
        refine_volume(model, stage1, inputs, 0, [0], roi_size=SHAPE)


@pytest.mark.slow
def test_refine_volume_40x44x36_with_roi_32() -> None:
    stage1, inputs = _volumes(shape=(40, 44, 36), seed=3)
    untrained = build_refiner(TINY)
    out = refine_volume(untrained, stage1, inputs, 1, [0, 2, 3], roi_size=(32, 32, 32))
    assert out.shape == (1, 1, 40, 44, 36)
    assert torch.allclose(out, stage1, atol=1e-5)
    refined = refine_volume(_trained_like(), stage1, inputs, 1, [0, 2, 3], roi_size=(32, 32, 32))
    assert refined.shape == stage1.shape and torch.isfinite(refined).all()
    assert not torch.allclose(refined, stage1, atol=1e-3)
