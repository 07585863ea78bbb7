"""The packaged demo bundle: present, loadable, small, and honest about what it is."""
from __future__ import annotations

from MRISynthesisLib.core import bundles


def test_demo_bundle_is_the_default_and_loads_completely():
    assert bundles.default_bundle_name() == "demo"
    bundle = bundles.load_bundle()
    assert bundle.name == "demo" and bundle.stages == "HF-GAN + Refiner + segmenter"
    meta = bundle.metadata
    assert bundle.stage1.config.image_size == meta["image_size"]  # the grid the model card states
    train_first, train_last = meta["training_seeds"]
    assert not train_first <= meta["demo_seed"] <= train_last, "the demo case must be unseen"
    eval_first, eval_last = meta["evaluation_seeds"]
    assert eval_last < train_first or eval_first > train_last, "held-out cases must not be training cases"


def test_demo_bundle_is_small_and_has_a_model_card():
    folder = bundles.CATALOGUE_DIR / "demo"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 30 * 1024 * 1024
    card = (folder / "MODEL_CARD.md").read_text()
    assert "simulated phantoms" in card and "Not for real patient data" in card
    assert "scripts/train_demo_model.py" in card
