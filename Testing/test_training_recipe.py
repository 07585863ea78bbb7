"""The ``--config`` training recipes and the stage-1 ablation switches, on tiny phantom cases with
tiny real networks: what each preset resolves to, what each switch changes in training, and that
a generator trained without intensity encoding synthesises without an intensity code."""
from __future__ import annotations

import collections
import dataclasses
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import MRISynthesisLib.cli.main as cli_main
from MRISynthesisLib import phantom
from MRISynthesisLib.cli import train as cli_train
from MRISynthesisLib.core import pipeline
from MRISynthesisLib.core.bundles import load_bundle
from MRISynthesisLib.core.checkpoints import save_checkpoint
from MRISynthesisLib.core.io import read_case
from MRISynthesisLib.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANError, HFGANGenerator
from MRISynthesisLib.models.refiner import RefinerConfig
from MRISynthesisLib.models.segmenter import ENHANCING, NECROTIC, OEDEMA, SegmenterConfig, build_segmenter
from MRISynthesisLib.sequences import SEQUENCES
from MRISynthesisLib.training.cases import find_cases
from MRISynthesisLib.training.crops import uniform_box
from MRISynthesisLib.training.losses import lesion_contrast_loss
from MRISynthesisLib.training.optimisation import hfgan_schedule, make_optimizer, warmup_cosine
from MRISynthesisLib.training.options import TrainingError
from MRISynthesisLib.training.prepared_cases import PreparedCaseStore
from MRISynthesisLib.training.slices import SliceSampler
from MRISynthesisLib.training.run_files import recipe_line
from MRISynthesisLib.training.stage1 import (Stage1TrainingOptions, batch_tensors, generator_losses,
                                           resumed_weight_changes, train_stage1)
from MRISynthesisLib.training.stage1_outputs import Stage1OutputCache
from MRISynthesisLib.training.stage2 import Stage2TrainingOptions, stage2_batch, train_stage2

T1N, T1C, T2W, T2F = SEQUENCES
SIZE = 96
TINY_GENERATOR = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=SIZE)
TINY_DISCRIMINATOR = DiscriminatorConfig(base_channels=8, image_size=SIZE)
CPU = torch.device("cpu")
FAST = dict(device="cpu", cpu_threads=1, log_every=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-data")
    phantom.generate_cases(root, 2, 41, small=True)
    return root


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    return PreparedCaseStore(tmp_path_factory.mktemp("recipe-prepared"), SIZE).get_all(find_cases(data_dir))


def _parse(*argv):
    return cli_main.build_parser().parse_args(["train", *argv, "--data", "D", "-o", "R"])


# --------------------------------------------------------------------------- presets


def test_paper_preset_resolves_to_the_paper_recipe_and_explicit_values_override_it():
    stage1 = cli_train.stage1_options(_parse("stage1", "--config", "paper")).resolved()
    assert (stage1.batch_size, stage1.epochs, stage1.slice_targets) == (24, 20, "all")
    assert (stage1.optimizer, stage1.lr_schedule, stage1.learning_rate, stage1.weight_decay) == (
        "adam", "hfgan", 1e-4, 0.0)
    assert (stage1.input_patterns, stage1.tumour_fraction, stage1.overrides) == ("hfgan", 0.0, ())
    stage2 = cli_train.stage2_options(_parse("stage2", "--config", "paper")).resolved()
    assert (stage2.epochs, stage2.batch_size, stage2.input_patterns, stage2.crops, stage2.tumour_fraction) == (
        100, 4, "missing-one", "uniform", 0.0)
    assert stage2.crop_size == (128,) and stage2.optimizer == "adam"
    # explicit flags win over the preset, and the recipe says which were given and which are assumed
    given = cli_train.stage1_options(_parse("stage1", "--config", "paper", "--batch-size", "6",
                                            "--slice-targets", "random", "--lr", "3e-4"))
    recipe = given.recipe()
    assert recipe["values"]["batch_size"] == 6 and recipe["values"]["slice_targets"] == "random"
    assert recipe["values"]["learning_rate"] == 3e-4 and recipe["values"]["optimizer"] == "adam"
    assert sorted(recipe["overrides"]) == ["batch_size", "learning_rate", "slice_targets"]
    assert recipe["preset"] == "paper" and recipe["assumed"]
    crops = cli_train.stage2_options(_parse("stage2", "--config", "paper", "--crops", "centred",
                                            "--tumour-fraction", "0.5")).resolved()
    assert (crops.crops, crops.tumour_fraction, crops.input_patterns) == ("centred", 0.5, "missing-one")
    with pytest.raises(TrainingError, match="--tumour-fraction 0.5 needs --crops centred"):
        cli_train.stage2_options(_parse("stage2", "--config", "paper", "--tumour-fraction", "0.5")).check()


def test_small_preset_keeps_the_earlier_defaults():
    stage1 = cli_train.stage1_options(_parse("stage1")).resolved()
    assert (stage1.epochs, stage1.batch_size, stage1.optimizer, stage1.lr_schedule, stage1.weight_decay,
            stage1.warmup_steps, stage1.slice_targets, stage1.input_patterns, stage1.tumour_fraction) == (
        20, 8, "adamw", "warmup-cosine", 1e-4, 100, "random", "hfgan", 0.0)
    stage2 = Stage2TrainingOptions().resolved()
    assert (stage2.epochs, stage2.batch_size, stage2.crops, stage2.tumour_fraction, stage2.input_patterns) == (
        100, 4, "centred", 0.5, "hfgan")
    segmenter = _parse("segmenter")
    assert segmenter.epochs is None and cli_train.DEFAULTS["segmenter"] == (100, 2)
    with pytest.raises(TrainingError, match="--config must be one of small, paper"):
        Stage1TrainingOptions(config="large").check()
    with pytest.raises(TrainingError, match="--slice-targets must be one of random, all"):
        Stage1TrainingOptions(slice_targets="some").check()


def test_reference_optimiser_and_schedule():
    weights = [torch.nn.Parameter(torch.zeros(3))]
    optimizer, _ = make_optimizer(weights, 1e-4, 0.0, 1000, 100, kind="adam", schedule="hfgan")
    assert type(optimizer) is torch.optim.Adam and optimizer.param_groups[0]["lr"] == 0.0  # warm-up starts at 0
    factor = hfgan_schedule(1000, 100)
    assert [factor(0), factor(50), factor(100)] == [0.0, 0.5, 1.0]
    assert factor(550) == pytest.approx(0.5) and factor(999) == pytest.approx(0.0, abs=1e-4)
    small, _ = make_optimizer([torch.nn.Parameter(torch.zeros(3))], 1e-4, 1e-4, 1000, 100)
    assert type(small) is torch.optim.AdamW and warmup_cosine(1000, 100)(999) == pytest.approx(0.01, abs=1e-4)


# --------------------------------------------------------------------------- all four targets per slice


def test_all_targets_epoch_trains_every_slice_for_each_of_the_four_targets(prepared):
    order = HFGANGenerator(TINY_GENERATOR).modality_order
    one_case = prepared[:1]
    every = SliceSampler(one_case, order, batch_size=1, targets="all")
    random = SliceSampler(one_case, order, batch_size=1, targets="random")
    slices = len(every.index)
    assert slices > 10 and every.full_epoch_steps == 4 * random.full_epoch_steps == 4 * slices
    pairs = collections.Counter()
    for batch in every.epoch(every.full_epoch_steps, np.random.default_rng(0)):
        for (case, z), target, available in zip(batch.items, batch.target, batch.available):
            assert not available[target]
            pairs[(case, z, order[target])] += 1
    assert len(pairs) == 4 * slices and set(pairs.values()) == {1}  # every (slice, target) exactly once
    assert {(case, z) for case, z, _ in pairs} == set(every.index)
    # in batches of 4 the group of slices is kept for four steps, each item's target moving on by one
    grouped = list(SliceSampler(one_case, order, batch_size=4, targets="all").epoch(8, np.random.default_rng(1)))
    for first in (0, 4):
        group = grouped[first:first + 4]
        assert all(b.items == group[0].items for b in group)
        for item in range(4):
            assert sorted(order[b.target[item]] for b in group) == sorted(SEQUENCES)
    drawn = [pair for batch in random.epoch(random.full_epoch_steps, np.random.default_rng(0))
             for pair in batch.items]
    assert sorted(drawn) == sorted(random.index)  # one target per slice: a quarter of the pairs


# --------------------------------------------------------------------------- ablation switches


def test_ssim_switches_drop_their_loss_terms(prepared):
    torch.manual_seed(0)
    generator, discriminator = HFGANGenerator(TINY_GENERATOR), PatchDiscriminator(TINY_DISCRIMINATOR)
    batch = batch_tensors(next(SliceSampler(prepared, generator.modality_order, 2).epoch(1, np.random.default_rng(3))),
                          CPU)
    full = {"reconstruction", "similarity", "cycle", "adversarial", "classification"}
    for switches, expected in [({}, full | {"ssim", "ssim_tumour"}), ({"ssim_loss": False}, full | {"ssim_tumour"}),
                               ({"tumour_ssim_loss": False}, full | {"ssim"}),
                               ({"ssim_loss": False, "tumour_ssim_loss": False}, full)]:
        weights = Stage1TrainingOptions(**switches).effective_loss_weights()
        total, terms, _ = generator_losses(generator, discriminator, batch, weights)
        assert set(terms) == expected, switches
        expected_total = sum(getattr(weights, k) * v.detach() for k, v in terms.items())
        assert float(total.detach()) == pytest.approx(float(expected_total), rel=1e-5)


def test_tumour_l1_term_is_the_mean_error_over_the_tumour_pixels(prepared):
    args = _parse("stage1", "--tumour-l1-weight", "10")
    options = cli_train.stage1_options(args)
    assert options.loss_weights.reconstruction_tumour == 10.0
    assert cli_train.stage1_options(_parse("stage1")).loss_weights.reconstruction_tumour == 0.0  # the paper's
    torch.manual_seed(0)
    generator, discriminator = HFGANGenerator(TINY_GENERATOR), PatchDiscriminator(TINY_DISCRIMINATOR)
    sampler = SliceSampler(prepared, generator.modality_order, 4, tumour_fraction=1.0)
    batch = batch_tensors(next(sampler.epoch(1, np.random.default_rng(3))), CPU)
    tumour = batch["label"] > 0
    assert tumour.any()
    _, terms, fake = generator_losses(generator, discriminator, batch, options.effective_loss_weights())
    real = torch.stack([batch["images"][i, t] for i, t in enumerate(batch["target"].tolist())])
    expected = (fake[:, 0].detach() - real)[tumour].abs().mean()
    assert float(terms["reconstruction_tumour"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert "reconstruction_tumour" not in generator_losses(generator, discriminator, batch,
                                                           Stage1TrainingOptions().effective_loss_weights())[1]
    with pytest.raises(TrainingError, match="--tumour-l1-weight must be 0 or more, got -1"):
        cli_train.stage1_options(_parse("stage1", "--tumour-l1-weight", "-1")).check()


def _t1c_batch_with_enhancement(prepared, generator):
    """A real sampled batch (tumour-core slices only) in which some T1c targets have enhancing tumour."""
    t1c = generator.modality_order.index(T1C)
    sampler = SliceSampler(prepared, generator.modality_order, 8, tumour_fraction=1.0, patterns="missing-one")
    for seed in range(20):
        batch = batch_tensors(next(sampler.epoch(1, np.random.default_rng(seed))), CPU)
        chosen = batch["target"] == t1c
        enhancing = (batch["label"] == ENHANCING).flatten(1).any(1)
        if (enhancing & chosen).any() and (enhancing & ~chosen).any():
            return batch, chosen
    raise AssertionError("no sampled batch had enhancing tumour in both T1c and other targets")


def test_enhancement_term_is_the_t1c_lesion_contrast_error(prepared):
    options = cli_train.stage1_options(_parse("stage1", "--enhancement-weight", "3"))
    assert options.loss_weights.enhancement_contrast == 3.0
    assert cli_train.stage1_options(_parse("stage1")).loss_weights.enhancement_contrast == 0.0  # the paper's
    torch.manual_seed(0)
    generator, discriminator = HFGANGenerator(TINY_GENERATOR), PatchDiscriminator(TINY_DISCRIMINATOR)
    batch, chosen = _t1c_batch_with_enhancement(prepared, generator)
    _, terms, fake = generator_losses(generator, discriminator, batch, options.effective_loss_weights())
    gaps = []
    for item in np.flatnonzero(chosen.numpy()):  # by hand, T1c items only: the other targets have no say
        real = batch["images"][item, int(batch["target"][item])].numpy()
        difference = fake[item, 0].detach().numpy().astype(np.float64) - real
        labels = batch["label"][item].numpy()
        healthy = batch["brain"][item].numpy().astype(bool) & (labels == 0)
        for region in (NECROTIC, OEDEMA, ENHANCING):  # each tumour region against healthy brain
            if (labels == region).any() and healthy.any():
                gaps.append(abs(difference[labels == region].mean() - difference[healthy].mean()))
    assert len(gaps) >= 2  # the batch has more than one region to check
    expected = np.sum(gaps) / len(chosen)  # per batch item, whether it has tumour or not
    assert float(terms["enhancement_contrast"].detach()) == pytest.approx(expected, rel=1e-4)
    assert "enhancement_contrast" not in generator_losses(generator, discriminator, batch,
                                                          Stage1TrainingOptions().effective_loss_weights())[1]
    with pytest.raises(TrainingError, match="--enhancement-weight must be 0 or more, got -2"):
        cli_train.stage1_options(_parse("stage1", "--enhancement-weight", "-2")).check()
    with pytest.raises(TrainingError, match="--enhancement-weight must be 0 or more, got nan"):
        cli_train.stage1_options(_parse("stage1", "--enhancement-weight", "nan")).check()
    assert options.recipe()["extra_terms"] == {"tumour_l1_weight": 0.0, "enhancement_weight": 3.0}
    assert "enhancement_weight 3" in recipe_line(options.recipe())  # the log says which run had the term
    saved = {"config": {"loss_weights": dataclasses.asdict(Stage1TrainingOptions().effective_loss_weights())}}
    assert resumed_weight_changes(saved, options.effective_loss_weights()) == "enhancement_contrast 0 -> 3"
    assert resumed_weight_changes(saved, Stage1TrainingOptions().effective_loss_weights()) == ""


def test_contrast_term_ignores_a_global_offset_and_wants_every_region_s_real_contrast():
    real = torch.zeros(4, 8, 8)
    label = torch.zeros(4, 8, 8, dtype=torch.long)
    label[:, 1:3, 1:5] = OEDEMA
    label[:, 2:4, 2:4] = ENHANCING
    real[label == OEDEMA], real[label == ENHANCING] = 0.2, 0.8
    healthy = label == 0
    healthy[2] = False  # an item without healthy brain has no contrast to get wrong
    label[3] = 0  # nor has an item without tumour, but it counts in the batch size
    regions = (NECROTIC, OEDEMA, ENHANCING)
    offset = real + 0.3
    copy_without_tumour = torch.full_like(real, 0.3)  # "T1c = T1": brighter overall, no enhancement, no oedema
    halo = real.clone()
    halo[label == OEDEMA] = 0.8  # the fifth run's answer: the oedema as bright as the rim
    assert float(lesion_contrast_loss(offset - real, label, healthy, regions)) == pytest.approx(0.0, abs=1e-6)
    # items 0 and 1: |0 - 0.8| (rim) + |0 - 0.2| (oedema) each, over a batch of 4
    assert float(lesion_contrast_loss(copy_without_tumour - real, label, healthy, regions)) == pytest.approx(0.5)
    assert float(lesion_contrast_loss(halo - real, label, healthy, regions)) == pytest.approx(2 * 0.6 / 4)
    assert float(lesion_contrast_loss(halo - real, label, healthy, (ENHANCING,))) == 0.0  # the rim alone misses it
    assert float(lesion_contrast_loss(real - real, label * 0, healthy, regions)) == 0.0


def test_contrast_term_moves_the_tumour_and_leaves_healthy_brain_to_the_pixel_losses():
    real = torch.zeros(2, 8, 8)
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[:, 2:4, 2:4] = ENHANCING
    real[label == ENHANCING] = 0.8
    fake = torch.zeros(2, 8, 8, requires_grad=True)
    lesion_contrast_loss(fake - real, label, label == 0, (ENHANCING,)).backward()
    assert float(fake.grad[label == 0].abs().max()) == 0.0  # healthy brain is the reference, not pulled down
    assert bool((fake.grad[label == ENHANCING] < 0).all())  # the rim is pushed up


def test_training_on_the_contrast_term_makes_the_synthetic_t1c_tumour_stand_out(prepared):
    pixel_losses = dataclasses.replace(Stage1TrainingOptions().effective_loss_weights(), similarity=0.0, cycle=0.0,
                                       adversarial=0.0, classification=0.0, ssim=0.0, ssim_tumour=0.0)
    measure = dataclasses.replace(pixel_losses, enhancement_contrast=1.0)

    def trained_contrast_error(weights) -> float:
        """The T1c tumour-contrast error after a few steps on one real batch from the same start."""
        torch.manual_seed(0)
        generator, discriminator = HFGANGenerator(TINY_GENERATOR), PatchDiscriminator(TINY_DISCRIMINATOR)
        batch, _ = _t1c_batch_with_enhancement(prepared, generator)
        optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
        for _ in range(20):
            total, _, _ = generator_losses(generator, discriminator, batch, weights)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        generator.eval()  # no dropout, so that the two runs compare
        with torch.no_grad():
            return float(generator_losses(generator, discriminator, batch, measure)[1]["enhancement_contrast"])

    plain = trained_contrast_error(pixel_losses)
    with_term = trained_contrast_error(dataclasses.replace(pixel_losses, enhancement_contrast=3.0))
    assert with_term < 0.5 * plain  # measured: 0.43 with the L1 alone, 0.15 with the term


def test_a_generator_without_intensity_encoding_is_called_without_a_code(prepared):
    coded = Stage1TrainingOptions(model_config=TINY_GENERATOR).generator_config()
    plain = Stage1TrainingOptions(model_config=TINY_GENERATOR, intensity_encoding=False).generator_config()
    assert coded.intensity_encoding and not plain.intensity_encoding
    torch.manual_seed(0)
    generator, discriminator = HFGANGenerator(plain), PatchDiscriminator(TINY_DISCRIMINATOR)
    assert generator.middle.modality_embedding[0].in_features == 4  # no intensity input at all
    batch = batch_tensors(next(SliceSampler(prepared, generator.modality_order, 2).epoch(1, np.random.default_rng(3))),
                          CPU)
    batch["intensity"] = torch.full_like(batch["intensity"], float("nan"))  # would poison a coded generator
    batch["cycle_intensity"] = batch["intensity"].clone()
    total, _, _ = generator_losses(generator, discriminator, batch, Stage1TrainingOptions().effective_loss_weights())
    assert math.isfinite(float(total.detach()))
    with pytest.raises(HFGANError, match="needs an intensity code"):
        HFGANGenerator(coded)(batch["images"], batch["available"], batch["target"], None)


def test_ablation_run_records_its_switches_and_synthesises_without_an_intensity_code(data_dir, tmp_path):
    args = _parse("stage1", "--no-intensity-encoding", "--no-ssim-loss", "--no-tumour-ssim-loss")
    assert (args.no_intensity_encoding, args.no_ssim_loss, args.no_tumour_ssim_loss) == (True, True, True)
    options = dataclasses.replace(cli_train.stage1_options(args), data_dir=data_dir, run_dir=tmp_path, epochs=1,
                                  batch_size=2, steps_per_epoch=2, val_cases=0, model_config=TINY_GENERATOR,
                                  discriminator_config=TINY_DISCRIMINATOR, **FAST)
    result = train_stage1(options)
    row = result.history[0]
    assert "train_reconstruction" in row and "train_ssim" not in row and "train_ssim_tumour" not in row
    record = json.loads((tmp_path / "bundle.json").read_text(encoding="utf-8"))["metadata"]["training"]["stage1"]
    expected = {"intensity_encoding": False, "ssim_loss": False, "tumour_ssim_loss": False, "table1_row": "HF-GAN"}
    assert record["ablation"] == expected and record["recipe"]["ablation"] == expected
    assert record["loss_weights"]["ssim"] == 0 and record["loss_weights"]["ssim_tumour"] == 0
    assert json.loads((tmp_path / "stage1-recipe.json").read_text(encoding="utf-8"))["ablation"] == expected
    assert "intensity_encoding False" in (tmp_path / "train-stage1.log").read_text(encoding="utf-8")
    bundle = load_bundle(tmp_path)
    assert bundle.stage1.config.intensity_encoding is False and not bundle.stage1.uses_intensity_code
    images = read_case(data_dir / "Phantom-00042")
    inputs = {s: images[s] for s in (T1N, T2W, T2F)}
    raised = pipeline.synthesize(inputs, bundle, device="cpu", intensity="+2sigma", tumour_maps=False)
    torch.set_num_threads(1)
    default = pipeline.synthesize(inputs, bundle, device="cpu", tumour_maps=False)
    torch.set_num_threads(1)
    assert math.isnan(raised.targets[T1C].intensity) and math.isnan(default.targets[T1C].intensity)
    assert any("no intensity encoding" in m for m in raised.messages)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(raised.targets[T1C].synthetic),
                                  sitk.GetArrayFromImage(default.targets[T1C].synthetic))
    with pytest.raises(TrainingError, match="without intensity encoding; resume it with the same"):
        train_stage1(dataclasses.replace(options, resume=True, epochs=2, intensity_encoding=True))


def test_paper_preset_stage1_run_trains_all_targets_and_records_the_recipe(data_dir, tmp_path):
    area = 18000.0  # the largest slices only (about 20 of the two cases), so that a full epoch is short
    options = Stage1TrainingOptions(data_dir=data_dir, run_dir=tmp_path, config="paper", batch_size=7,
                                    epochs=1, val_cases=0, model_config=TINY_GENERATOR, min_brain_area_mm2=area,
                                    discriminator_config=TINY_DISCRIMINATOR, **FAST)
    result = train_stage1(options)
    cases = PreparedCaseStore(tmp_path, SIZE).get_all(find_cases(data_dir))
    slices = len(SliceSampler(cases, TINY_GENERATOR.modality_order, 1, area).index)
    assert slices >= 14 and result.global_step == 4 * (slices // 7)  # every slice for all four targets
    log = (tmp_path / "train-stage1.log").read_text(encoding="utf-8")
    assert "recipe --config paper" in log and "batch_size 7 (given)" in log
    assert "optimizer adam, lr_schedule hfgan, slice_targets all" in log
    assert "(each slice for all four targets)" in log
    record = json.loads((tmp_path / "bundle.json").read_text(encoding="utf-8"))["metadata"]["training"]["stage1"]
    assert record["recipe"]["preset"] == "paper" and record["recipe"]["overrides"] == ["epochs", "batch_size"]
    assert record["slice_targets"] == "all" and record["ablation"]["table1_row"] == "+Intensity Encoding"


# --------------------------------------------------------------------------- stage 2


def test_uniform_crops_cover_every_position_alike():
    rng = np.random.default_rng(0)
    starts = np.array([[sl.start for sl in uniform_box((64, 96, 96), (32, 32, 32), rng)] for _ in range(3000)])
    assert starts.min(axis=0).tolist() == [0, 0, 0] and starts.max(axis=0).tolist() == [32, 64, 64]
    assert starts.mean(axis=0) == pytest.approx([16, 32, 32], abs=1.5)
    assert [sl.stop - sl.start for sl in uniform_box((20, 96, 96), (32, 32, 32), rng)][0] == 20  # padded later


def test_paper_stage2_batches_are_the_three_available_task_on_uniform_crops(prepared, tmp_path):
    torch.manual_seed(0)
    generator = HFGANGenerator(TINY_GENERATOR)
    cache = Stage1OutputCache(tmp_path / "cache", save_checkpoint(tmp_path / "stage1.pt", "stage1", generator),
                              generator.eval(), CPU)
    rng = np.random.default_rng(2)
    crop = (16, 32, 32)

    def has_tumour(batch, item):
        case, start = batch["origins"][item]
        box = tuple(slice(s, s + c) for s, c in zip(start, crop))
        return bool((prepared[case].label[box] > 0).any())

    uniform = [stage2_batch(prepared, cache, 2, crop, rng, 0.0, "missing-one", "uniform") for _ in range(12)]
    centred = [stage2_batch(prepared, cache, 2, crop, rng, 1.0, "missing-one", "centred") for _ in range(6)]
    for batch in uniform + centred:
        assert sorted(batch["sources"]) == [i for i in range(4) if i != batch["target"]]
    assert all(has_tumour(b, i) for b in centred for i in range(2))
    assert not all(has_tumour(b, i) for b in uniform for i in range(2))  # placed without regard to the tumour


def test_paper_preset_stage2_run_records_its_recipe(data_dir, tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "stage1.pt", "stage1", HFGANGenerator(TINY_GENERATOR))
    save_checkpoint(tmp_path / "segmenter.pt", "segmenter", build_segmenter(SegmenterConfig(init_filters=8)))
    options = Stage2TrainingOptions(data_dir=data_dir, run_dir=tmp_path, config="paper", epochs=1, batch_size=1,
                                    steps_per_epoch=2, val_cases=0, refiner_config=RefinerConfig(channels=4),
                                    crop_size=(32, 32, 32), **FAST)
    result = train_stage2(options)
    assert result.global_step == 2
    record = json.loads((tmp_path / "bundle.json").read_text(encoding="utf-8"))["metadata"]["training"]["refiner"]
    assert (record["crops"], record["input_patterns"], record["recipe"]["preset"]) == (
        "uniform", "missing-one", "paper")
    assert sorted(record["recipe"]["overrides"]) == ["batch_size", "epochs"]
    assert json.loads((tmp_path / "stage2-recipe.json").read_text(encoding="utf-8"))["values"]["crops"] == "uniform"
    # every stage-1 volume cached is a three-input one
    cached = [p.name for p in (tmp_path / "cache" / "stage1").rglob("*.npy")]
    assert cached and all(len(name.split("__")[2][:-4].split("-")) == 3 for name in cached)
