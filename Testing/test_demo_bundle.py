"""The packaged demo bundle: present, loadable, small, and honest about what it is."""
from __future__ import annotations

from MRISynthesisLib.core import bundles


def test_demo_bundle_is_the_default_and_loads_completely():
    assert bundles.default_bundle_name() == "demo"
    bundle = bundles.load_bundle()
    assert bundle.name == "demo" and bundle.stages == "HF-GAN + Refiner + segmenter"
    meta = bundle.metadata
    assert bundle.stage1.config.image_size == meta["image_size"]  # the grid the model card states
    training = training_seeds(meta)
    assert len(training) >= 20 and meta["demo_seed"] not in training, "the demo case must be unseen"
    for key in ("evaluation_seeds", "randomised_evaluation_seeds"):  # the second: bundles of the randomised recipe
        if key in meta:
            first, last = meta[key]
            assert not training & set(range(first, last + 1)), f"{key}: held-out cases must not be training cases"


def training_seeds(meta: dict) -> set:
    """Every training case's seed: ``training_seeds`` [first, last] (scripts/train_demo_model.py) or the
    ``training_sets`` of scripts/train_randomised_model.py."""
    if "training_sets" in meta:
        return {entry["first_seed"] + i for entry in meta["training_sets"] for i in range(entry["cases"])}
    first, last = meta["training_seeds"]
    return set(range(first, last + 1))


def test_demo_bundle_is_small_and_has_a_model_card():
    folder = bundles.CATALOGUE_DIR / "demo"
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 30 * 1024 * 1024
    card = (folder / "MODEL_CARD.md").read_text()
    assert "simulated phantoms" in card and "Not for real patient data" in card
    command = bundles.load_bundle().metadata["command"]  # the recipe that made it, named in the card
    assert command.startswith("python scripts/train_") and command in card
