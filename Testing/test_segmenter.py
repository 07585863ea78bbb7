"""Tests of the SegResNet tumour segmenter and the BraTS region helpers (models/segmenter.py)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from MRISynthesisLib.models.segmenter import (
    REGIONS,
    SegmenterConfig,
    SegmenterInputError,
    build_segmenter,
    label_to_regions,
    predict_region_probabilities,
    regions_to_label,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _brats_like_label(shape=(40, 48, 44), seed: int = 0) -> np.ndarray:
    """A tumour label with BraTS 2023 layering: necrotic core in an enhancing rim in oedema.

    Boundaries are made irregular with smoothed noise, and a detached oedema island is added.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] * 0.45
    radius = np.sqrt((((grid - centre) / 14.0) ** 2).sum(axis=0))
    radius += ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) * 2.0
    label = np.zeros(shape, dtype=np.uint8)
    label[radius < 1.0] = 2
    label[radius < 0.6] = 3
    label[radius < 0.4] = 1
    label[-6:-2, 2:6, 2:6] = 2
    return label


def _write_and_read(label: np.ndarray, path) -> np.ndarray:
    """Round-trip a label through a NIfTI file, as labels reach the engine."""
    sitk.WriteImage(sitk.GetImageFromArray(label), str(path))
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_config_presets_and_round_trip() -> None:
    paper = SegmenterConfig.paper()
    assert (paper.init_filters, paper.blocks_down, paper.blocks_up) == (16, (1, 2, 2, 4), (1, 1, 1))
    assert SegmenterConfig.small().init_filters == 8
    for config in (paper, SegmenterConfig.small()):
        assert SegmenterConfig.from_dict(config.to_dict()) == config
    assert paper.downsample_factor == 8
    with pytest.raises(ValueError, match="unknown keys"):
        SegmenterConfig.from_dict({"init_filters": 8, "width": 2})
    with pytest.raises(ValueError, match="blocks_up"):
        SegmenterConfig(blocks_up=(1, 1))


def test_paper_segmenter_layout() -> None:
    model = build_segmenter(SegmenterConfig.paper())
    assert model.convInit.conv.in_channels == 4
    assert model.conv_final[-1].conv.out_channels == 3
    assert len(model.down_layers) == 4
    assert sum(p.numel() for p in build_segmenter(SegmenterConfig.small()).parameters()) < sum(
        p.numel() for p in model.parameters()
    )


def test_predict_region_probabilities_shape_range_and_one_window() -> None:
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.small()).train()
    volume = torch.randn(1, 4, 16, 24, 16)
    probs = predict_region_probabilities(model, volume, roi_size=(16, 24, 16))
    assert probs.shape == (1, len(REGIONS), 16, 24, 16)
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        direct = torch.sigmoid(model(volume))
    assert torch.allclose(probs, direct, atol=1e-5)


def test_predict_region_probabilities_pads_and_tiles() -> None:
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.small())
    volume = torch.randn(2, 4, 12, 20, 9)  # below the ROI in two axes, above it in one
    probs = predict_region_probabilities(model, volume, roi_size=(16, 16, 16), overlap=0.5)
    assert probs.shape == (2, 3, 12, 20, 9)
    assert torch.isfinite(probs).all() and float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    probs[0, 0, 0, 0, 0] = 0.0  # editable outside inference mode


def test_predict_region_probabilities_rejects_bad_input() -> None:
    model = build_segmenter(SegmenterConfig.small())
    with pytest.raises(SegmenterInputError, match=r"\[B,4,D,H,W\]"):
        predict_region_probabilities(model, torch.zeros(1, 3, 16, 16, 16), roi_size=(16, 16, 16))
    with pytest.raises(SegmenterInputError, match="multiples of 8"):
        predict_region_probabilities(model, torch.zeros(1, 4, 16, 16, 16), roi_size=(16, 12, 16))


def test_label_region_round_trip_on_label_file(tmp_path) -> None:
    label = _write_and_read(_brats_like_label(), tmp_path / "seg.nii.gz")
    assert set(np.unique(label)) == {0, 1, 2, 3}
    regions = label_to_regions(label)
    assert regions.shape == (3,) + label.shape and regions.dtype == bool
    wt, tc, et = regions
    assert np.array_equal(wt, label > 0)
    assert np.array_equal(tc, (label == 1) | (label == 3))
    assert np.array_equal(et, label == 3)
    back = regions_to_label(regions)
    assert back.dtype == np.uint8 and np.array_equal(back, label)
    # the same through torch, batched, with probabilities instead of masks
    batch = torch.from_numpy(np.stack([label, np.flip(label, 0).copy()]).astype(np.int64))
    t_regions = label_to_regions(batch, axis=1)
    assert t_regions.shape == (2, 3) + label.shape and t_regions.dtype == torch.bool
    t_back = regions_to_label(t_regions.float() * 0.8 + 0.1)
    assert t_back.dtype == torch.uint8 and torch.equal(t_back, batch.to(torch.uint8))


def test_regions_to_label_thresholds_and_nests() -> None:
    rng = np.random.default_rng(1)
    probs = rng.random((3, 6, 7, 5)).astype(np.float32)
    wt, tc, et = probs > 0.3
    expected = np.where(et, 3, np.where(tc, 1, np.where(wt, 2, 0))).astype(np.uint8)
    label = regions_to_label(probs, threshold=0.3)
    assert np.array_equal(label, expected)
    assert np.array_equal(regions_to_label(torch.from_numpy(probs), threshold=0.3).numpy(), expected)
    # a voxel predicted ET only is still counted as TC and WT afterwards
    lonely = np.zeros((3, 2, 2, 2), dtype=bool)
    lonely[2, 0, 0, 0] = True
    lonely[1, 1, 1, 1] = True
    nested = label_to_regions(regions_to_label(lonely))
    assert nested[:, 0, 0, 0].all()
    assert list(nested[:, 1, 1, 1]) == [True, True, False]


def test_legacy_enhancing_label_and_bad_values() -> None:
    legacy = np.array([[0, 1], [2, 4]], dtype=np.uint8)  # BraTS 2021 enhancing = 4
    assert np.array_equal(label_to_regions(legacy)[2], legacy == 4)
    with pytest.raises(SegmenterInputError, match="0..4"):
        label_to_regions(np.array([0, 5]))
    with pytest.raises(SegmenterInputError, match=r"\[3,...\]"):
        regions_to_label(np.zeros((2, 4, 4)))
