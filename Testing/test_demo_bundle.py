"""The packaged demo bundle: present, loadable, small, and honest about what it is."""
from __future__ import annotations

from MRISynthesisLib.core import bundles

from test_ood import training_cases  # the bundle metadata's training cases, either layout


def test_demo_bundle_is_the_default_and_loads_completely():
    assert bundles.default_bundle_name() == "demo"
    bundle = bundles.load_bundle()
    assert bundle.name == "demo" and bundle.stages == "HF-GAN + Refiner + segmenter"
    meta = bundle.metadata
    assert bundle.stage1.config.image_size == meta["image_size"]  # the grid the model card states
    training = {seed for seed, _ in training_cases(meta)}  # either training script's layout
    assert len(training) >= 20 and meta["demo_seed"] not in training, "the demo case must be unseen"
    for key in ("evaluation_seeds", "randomised_evaluation_seeds"):  # the second: bundles of the randomised recipe
        if key in meta:
            first, last = meta[key]
            assert not training & set(range(first, last + 1)), f"{key}: held-out cases must not be training cases"


def test_demo_bundle_is_small_and_has_a_model_card():
    folder = bundles.CATALOGUE_DIR / "demo"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 30 * 1024 * 1024
    card = (folder / "MODEL_CARD.md").read_text()
    assert "simulated phantoms" in card and "Not for real patient data" in card
    command = bundles.load_bundle().metadata["command"]  # the recipe that made it, named in the card
    assert command.startswith("python scripts/train_") and command in card
