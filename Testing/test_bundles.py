"""Checkpoints, bundles and the catalogue: real torch models saved and loaded from disk."""
from __future__ import annotations

import json

import pytest
import torch

from MRISynthesisLib.core import bundles, checkpoints
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator, seeded_reference_state_dict
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.models.segmenter import SegmenterConfig, build_segmenter
from MRISynthesisLib.core.checkpoints import CheckpointError

TINY = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=32)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_round_trip_keeps_config_weights_and_provenance(tmp_path):
    torch.manual_seed(1)
    generator = HFGANGenerator(TINY)
    path = checkpoints.save_checkpoint(tmp_path / "g.pt", "stage1", generator, provenance={"epochs": 3})
    payload = checkpoints.read_checkpoint(path)
    assert payload["format"] == checkpoints.CHECKPOINT_FORMAT and payload["kind"] == "stage1"
    assert payload["sequence_order"] == ["t1n", "t2w", "t2f", "t1c"]
    assert payload["provenance"] == {"epochs": 3}
    assert payload["intensity_priors"]["t1c"] == [0.2404, 0.0623]
    loaded = checkpoints.build_model(payload, path)
    assert loaded.config == TINY and _same_weights(loaded, generator)
    assert not list(tmp_path.glob(".*part")), "no temporary file left behind"


def test_bundle_folder_round_trip(tmp_path):
    torch.manual_seed(2)
    generator, refiner = HFGANGenerator(TINY), Refiner(RefinerConfig(channels=4))
    segmenter = build_segmenter(SegmenterConfig(init_filters=8))
    bundles.save_bundle(tmp_path / "b", "unit", generator, refiner, segmenter, description="unit test",
                        metadata={"training_seeds": [0, 9]})
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert manifest["files"] == {"stage1": "stage1.pt", "refiner": "refiner.pt", "segmenter": "segmenter.pt"}
    bundle = bundles.load_bundle(tmp_path / "b")
    assert bundle.name == "unit" and bundle.stages == "HF-GAN + Refiner + segmenter"
    assert bundle.metadata == {"training_seeds": [0, 9]}
    assert _same_weights(bundle.stage1, generator) and _same_weights(bundle.refiner, refiner)
    assert _same_weights(bundle.segmenter, segmenter)
    assert not bundle.stage1.training, "bundles load in eval mode"


def test_reference_layout_file_is_a_stage1_only_bundle(tmp_path):
    state = seeded_reference_state_dict(TINY, seed=5)
    torch.save({"generator": {f"module.{k}": v for k, v in state.items()}, "epoch": 20}, tmp_path / "ref.pth")
    bundle = bundles.load_bundle(tmp_path / "ref.pth")
    assert bundle.refiner is None and bundle.segmenter is None
    assert bundle.stage1.config.dim == 8 and bundle.stage1.config.image_size == 32
    assert all(torch.equal(bundle.stage1.state_dict()[k], v) for k, v in state.items())


def test_catalogue_lists_bundles_default_first(tmp_path):
    torch.manual_seed(3)
    for name in ("alpha", "demo"):
        bundles.save_bundle(tmp_path / name, name, HFGANGenerator(TINY), description=f"{name} bundle")
    infos = bundles.list_bundles(tmp_path)
    assert [i.name for i in infos] == ["demo", "alpha"]
    assert infos[1].description == "alpha bundle"


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
    (None, "no such"),
])
def test_corrupt_or_missing_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "broken.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        bundles.load_bundle(path)
    assert "\n" not in str(error.value)


def test_mismatched_checkpoint_names_the_file(tmp_path):
    torch.manual_seed(4)
    path = checkpoints.save_checkpoint(tmp_path / "g.pt", "stage1", HFGANGenerator(TINY))
    payload = checkpoints.read_checkpoint(path)
    payload["config"]["dim"] = 16  # config no longer matches the weights
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"g\.pt: stage1 checkpoint does not match its network") as error:
        bundles.load_bundle(path)
    assert "\n" not in str(error.value)


def test_wrong_kind_and_bad_manifest(tmp_path):
    torch.manual_seed(5)
    checkpoints.save_checkpoint(tmp_path / "r.pt", "refiner", Refiner(RefinerConfig(channels=4)))
    with pytest.raises(CheckpointError, match="cannot synthesise on its own"):
        bundles.load_bundle(tmp_path / "r.pt")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bundle.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable bundle manifest"):
        bundles.load_bundle(tmp_path / "b")
    torch.save({"unrelated": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="neither an MRISynthesis checkpoint nor an HF-GAN state dict"):
        bundles.load_bundle(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no such model file, folder or catalogue bundle"):
        bundles.load_bundle("no-such-bundle-name")


def test_intensity_priors_travel_with_the_generator(tmp_path):
    from MRISynthesisLib.core.preprocessing import INTENSITY_PRIORS
    from MRISynthesisLib.sequences import Sequence

    torch.manual_seed(6)
    generator = HFGANGenerator(TINY)
    assert generator.intensity_priors == INTENSITY_PRIORS  # the paper's BraTS table by default
    measured = {**INTENSITY_PRIORS, Sequence.T1C: (0.4459, 0.1245)}
    generator.intensity_priors = measured
    path = checkpoints.save_checkpoint(tmp_path / "g.pt", "stage1", generator)
    loaded = bundles.load_bundle(path).stage1
    assert loaded.intensity_priors[Sequence.T1C] == pytest.approx((0.4459, 0.1245))
    assert loaded.intensity_priors[Sequence.T2W] == pytest.approx(INTENSITY_PRIORS[Sequence.T2W])
