"""Training pipelines on tiny phantom cases with tiny real networks: data, losses, loops, bundles, CLI."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import MRISynthesisLib.cli.main as cli  # the module: the package's main() would shadow it
from MRISynthesisLib import phantom
from MRISynthesisLib.core import model_grid_inputs, pipeline
from MRISynthesisLib.core.io import read_case
from MRISynthesisLib.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.models.segmenter import REGIONS, SegmenterConfig, build_segmenter
from MRISynthesisLib.sequences import SEQUENCES, Sequence
from MRISynthesisLib.training.cases import find_cases, load_or_create_split, split_cases
from MRISynthesisLib.training.input_patterns import all_patterns, input_sets, sample_pattern
from MRISynthesisLib.training.loop import EpochTrainer
from MRISynthesisLib.training.options import TrainingError, TrainOptions
from MRISynthesisLib.training.prepared_cases import PreparedCaseStore
from MRISynthesisLib.training.run_files import best_weights_path, load_training_state, training_state_path
from MRISynthesisLib.training.slices import TUMOUR_CORE_LABELS, SliceSampler, eligible_slices, min_brain_pixels
from MRISynthesisLib.training import stage1_outputs
from MRISynthesisLib.training.stage1_outputs import Stage1OutputCache
from MRISynthesisLib.training.segmenter import (
    SegmenterTrainingOptions,
    dice_bce_loss,
    load_segmenter_weights,
    segmenter_batches,
    train_segmenter,
)
from MRISynthesisLib.training.stage1 import (
    Stage1LossWeights,
    Stage1TrainingOptions,
    batch_tensors,
    discriminator_loss,
    generator_losses,
    train_stage1,
)
from MRISynthesisLib.training.stage2 import (
    Stage2TrainingOptions,
    batch_to_device,
    refiner_losses,
    stage2_batch,
    train_stage2,
)
from MRISynthesisLib.core.bundles import load_bundle
from MRISynthesisLib.core.checkpoints import save_checkpoint

T1N, T1C, T2W, T2F = SEQUENCES
SIZE = 96  # the small phantom grid: 96 x 96 pixels of 2.5 mm = the 240 mm model field of view
TINY_GENERATOR = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=SIZE)
TINY_DISCRIMINATOR = DiscriminatorConfig(base_channels=8, image_size=SIZE)
TINY_SEGMENTER = SegmenterConfig(init_filters=8)
TINY_REFINER = RefinerConfig(channels=4)
CPU = torch.device("cpu")
FAST = dict(device="cpu", cpu_threads=1, log_every=1, val_cases=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-data")
    phantom.generate_cases(root, 3, 31, small=True)
    return root


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    store = PreparedCaseStore(tmp_path_factory.mktemp("prepared-run"), SIZE)
    return store.get_all(find_cases(data_dir))


def _tiny_generator(seed: int = 0) -> HFGANGenerator:
    torch.manual_seed(seed)
    return HFGANGenerator(TINY_GENERATOR)


def _mean_first_last(values: list, k: int = 3) -> tuple:
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))


# --------------------------------------------------------------------------- data


def test_prepared_cases_are_the_inference_preparation_and_are_cached(data_dir, prepared, tmp_path):
    cases = find_cases(data_dir)
    assert [c.case_id for c in cases] == ["Phantom-00031", "Phantom-00032", "Phantom-00033"]
    reference = model_grid_inputs.prepare_model_grid_inputs(read_case(cases[0].folder), [], _tiny_generator())
    case = prepared[0]
    assert case.brain.shape == (64, SIZE, SIZE) and case.spacing == pytest.approx((2.5, 2.5, 2.5))
    np.testing.assert_array_equal(case.brain, reference.brain)
    for sequence in SEQUENCES:
        np.testing.assert_array_equal(case.scaled[sequence], reference.scaled[sequence])
        np.testing.assert_array_equal(case.raw[sequence], reference.raw[sequence])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[0].label)))
    np.testing.assert_array_equal(case.label, label)  # identity grid: LPS, 2.5 mm, 96 x 96
    values = (np.asarray(case.scaled[T2F])[case.brain] + 1) / 2
    assert case.intensity[T2F] == pytest.approx(float(np.median(values)))
    # a second store on the same run folder reads the .npy cache (memory-mapped) instead of re-preparing
    store = PreparedCaseStore(tmp_path, SIZE)
    first = store.get(cases[0])
    again = PreparedCaseStore(tmp_path, SIZE).get(cases[0])
    assert isinstance(again.raw[T1N], np.memmap)
    np.testing.assert_array_equal(again.raw[T1N], first.raw[T1N])


def test_brats2021_names_and_enhancing_label_4(data_dir, prepared, tmp_path):
    source = find_cases(data_dir)[0]
    folder = tmp_path / "data" / "BraTS2021_00001"
    folder.mkdir(parents=True)
    for sequence, path in source.sequences.items():
        shutil.copy(path, folder / f"BraTS2021_00001_{sequence.brats2021_suffix}.nii.gz")
    label = sitk.ReadImage(str(source.label))
    array = sitk.GetArrayFromImage(label)
    array[array == 3] = 4
    legacy = sitk.GetImageFromArray(array)
    legacy.CopyInformation(label)
    sitk.WriteImage(legacy, str(folder / "BraTS2021_00001_seg.nii.gz"))
    (tmp_path / "data" / "notes").mkdir()  # a folder without images is not a case
    cases = find_cases(tmp_path / "data")
    assert [c.case_id for c in cases] == ["BraTS2021_00001"]
    case = PreparedCaseStore(tmp_path / "run", SIZE).get(cases[0])
    assert 4 not in np.unique(case.label)
    np.testing.assert_array_equal(case.label, prepared[0].label)
    np.testing.assert_array_equal(case.scaled[T1C], prepared[0].scaled[T1C])


def test_incomplete_case_is_an_error_naming_the_folder(data_dir, tmp_path):
    source = find_cases(data_dir)[0]
    folder = tmp_path / "data" / source.case_id
    folder.mkdir(parents=True)
    for sequence, path in source.sequences.items():
        if sequence != T2F:
            shutil.copy(path, folder / path.name)
    with pytest.raises(TrainingError, match=r"Phantom-00031: training needs all four sequences; missing T2-FLAIR"):
        find_cases(tmp_path / "data")


def test_split_is_deterministic_by_case_written_and_reused(tmp_path):
    ids = [f"case{i:02d}" for i in range(10)]
    split = split_cases(ids, 2, seed=3)
    assert split == split_cases(ids, 2, seed=3)
    assert len(split.validation) == 2 and sorted(split.train + split.validation) == ids
    assert len({split_cases(ids, 2, seed=s).validation for s in range(8)}) > 1
    assert len(split_cases(ids, None, seed=0).validation) == 1  # 10 % by default
    with pytest.raises(TrainingError, match="no training case"):
        split_cases(ids[:2], 2, seed=0)
    written = load_or_create_split(tmp_path, ids, 3, seed=5)
    assert json.loads((tmp_path / "split.json").read_text())["validation"] == list(written.validation)
    assert load_or_create_split(tmp_path, ids, 1, seed=99) == written  # the run folder's split wins


def test_slice_filter_threshold_scales_with_pixel_area(prepared):
    assert min_brain_pixels(1.0) == 2000 and min_brain_pixels(4.0) == 500 and min_brain_pixels(6.25) == 320
    brain = np.zeros((4, 60, 60), dtype=bool)
    for index, pixels in enumerate((1999, 2000, 319, 320)):
        brain[index].flat[:pixels] = True
    assert eligible_slices(brain, 1.0).tolist() == [1]
    assert eligible_slices(brain, 2.5 * 2.5).tolist() == [0, 1, 3]
    case = prepared[0]
    area_mm2 = case.brain.sum(axis=(1, 2)) * 2.5 * 2.5
    expected = np.flatnonzero(area_mm2 >= 2000)
    assert 0 < expected.size < case.brain.shape[0]
    np.testing.assert_array_equal(eligible_slices(case.brain, case.pixel_area_mm2), expected)


def test_missing_patterns_have_one_to_three_inputs_and_never_the_target():
    rng = np.random.default_rng(0)
    seen = {t: set() for t in SEQUENCES}
    singles = 0
    for draw in range(4000):
        target = SEQUENCES[draw % 4]
        pattern = sample_pattern(rng, target)
        assert 1 <= len(pattern) <= 3 and target not in pattern
        assert list(pattern) == sorted(set(pattern), key=SEQUENCES.index)
        seen[target].add(pattern)
        singles += len(pattern) == 1
    assert all(seen[t] == set(all_patterns(t)) and len(seen[t]) == 7 for t in SEQUENCES)
    assert 0.45 < singles / 4000 < 0.55


def test_missing_one_patterns_give_the_other_three_and_unknown_schemes_are_refused(prepared):
    rng = np.random.default_rng(0)
    for target in SEQUENCES:
        assert sample_pattern(rng, target, "missing-one") == tuple(s for s in SEQUENCES if s != target)
    with pytest.raises(TrainingError, match="input patterns must be one of hfgan, missing-one"):
        sample_pattern(rng, SEQUENCES[0], "two")
    sampler = SliceSampler(prepared, _tiny_generator().modality_order, batch_size=6, patterns="missing-one")
    batch = next(sampler.epoch(1, rng))
    assert batch.available.sum(axis=1).tolist() == [3] * 6
    assert not batch.available[np.arange(6), batch.target].any()
    with pytest.raises(TrainingError, match="--input-patterns must be one of"):
        Stage1TrainingOptions(input_patterns="two").check()


def test_stage1_batches_hold_real_slices_targets_and_cycle_inputs(prepared):
    order = _tiny_generator().modality_order
    sampler = SliceSampler(prepared, order, batch_size=6)
    batch = next(sampler.epoch(1, np.random.default_rng(1)))
    for b, (case_index, z) in enumerate(batch.items):
        case = prepared[case_index]
        assert case.brain[z].sum() * case.pixel_area_mm2 >= 2000
        for channel, sequence in enumerate(order):
            np.testing.assert_array_equal(batch.images[b, channel], case.scaled[sequence][z])
        target, redo = batch.target[b], batch.cycle_target[b]
        assert not batch.available[b, target] and 1 <= batch.available[b].sum() <= 3
        assert batch.available[b, redo] and not batch.cycle_available[b, redo] and batch.cycle_available[b, target]
        assert SEQUENCES[batch.target_class[b]] == order[target]
        assert batch.intensity[b] == pytest.approx(case.intensity[order[target]])
        assert batch.cycle_intensity[b] == pytest.approx(case.intensity[order[redo]])


def _has_tumour_core(case, z: int) -> bool:
    return bool(np.isin(case.label[z], TUMOUR_CORE_LABELS).any())


def test_tumour_fraction_draws_that_share_of_each_batch_from_tumour_core_slices(prepared):
    order = _tiny_generator().modality_order
    uniform = SliceSampler(prepared, order, batch_size=6)
    oversampled = SliceSampler(prepared, order, batch_size=6, tumour_fraction=0.5)
    assert oversampled.tumour_per_batch == 3
    core = [item for item in uniform.index if _has_tumour_core(prepared[item[0]], item[1])]
    assert oversampled.tumour_core_index == core and 0 < len(core) < len(uniform.index)

    def core_share(sampler, seed):
        items = [item for batch in sampler.epoch(20, np.random.default_rng(seed)) for item in batch.items]
        assert len(items) == 120
        return np.mean([_has_tumour_core(prepared[c], z) for c, z in items])

    natural = len(core) / len(uniform.index)
    assert core_share(uniform, 3) == pytest.approx(natural, abs=0.1)
    assert core_share(oversampled, 3) == pytest.approx(0.5 + 0.5 * natural, abs=0.1)
    for batch in oversampled.epoch(5, np.random.default_rng(4)):
        assert sum(_has_tumour_core(prepared[c], z) for c, z in batch.items) >= 3


def test_tumour_fraction_zero_keeps_the_uniform_draws_and_bad_fractions_are_refused(prepared):
    order = _tiny_generator().modality_order
    sampler = SliceSampler(prepared, order, batch_size=4, tumour_fraction=0.0)
    rng = np.random.default_rng(5)
    expected = rng.permutation(len(sampler.index))[:12]  # what an epoch of 3 steps of 4 visits, in order
    drawn = [item for batch in sampler.epoch(3, np.random.default_rng(5)) for item in batch.items]
    assert drawn == [sampler.index[i] for i in expected]
    for fraction, message in [(1.5, "between 0 and 1, got 1.5"), (-0.1, "between 0 and 1"),
                              (0.05, "draws no slice of a batch of 4")]:
        with pytest.raises(TrainingError, match=f"--tumour-fraction.*{message}"):
            SliceSampler(prepared, order, batch_size=4, tumour_fraction=fraction)
        with pytest.raises(TrainingError, match="--tumour-fraction"):
            Stage1TrainingOptions(batch_size=4, tumour_fraction=fraction).check()
    healthy = [dataclasses.replace(case, label=np.zeros_like(case.label)) for case in prepared]
    assert SliceSampler(healthy, order, batch_size=4).tumour_core_index == []
    with pytest.raises(TrainingError, match="--tumour-fraction 0.5: no training slice holds tumour core"):
        SliceSampler(healthy, order, batch_size=4, tumour_fraction=0.5)


# --------------------------------------------------------------------------- losses fall


def test_stage1_losses_fall_on_a_fixed_batch(prepared):
    generator = _tiny_generator()
    discriminator = PatchDiscriminator(TINY_DISCRIMINATOR)
    sampler = SliceSampler(prepared, generator.modality_order, batch_size=2)
    batch = next(sampler.epoch(1, np.random.default_rng(2)))
    tensors = batch_tensors(batch, CPU)
    g_opt = torch.optim.AdamW(generator.parameters(), lr=2e-3)
    d_opt = torch.optim.AdamW(discriminator.parameters(), lr=2e-4)
    weights = Stage1LossWeights()
    totals, reconstructions = [], []
    for _ in range(10):
        total, terms, fake = generator_losses(generator, discriminator, tensors, weights)
        assert set(terms) == {"reconstruction", "similarity", "cycle", "adversarial", "classification", "ssim",
                              "ssim_tumour"}
        g_opt.zero_grad()
        total.backward()
        g_opt.step()
        d_opt.zero_grad()
        discriminator_loss(discriminator, fake, tensors["images"][torch.arange(2), tensors["target"]][:, None],
                           tensors["target_class"]).backward()
        d_opt.step()
        totals.append(float(total.detach()))
        reconstructions.append(float(terms["reconstruction"].detach()))
    first, last = _mean_first_last(totals)
    assert last < 0.8 * first
    assert _mean_first_last(reconstructions)[1] < _mean_first_last(reconstructions)[0]


def test_segmenter_loss_falls_on_a_fixed_batch(prepared):
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTER)
    batch = next(segmenter_batches(prepared[:2], 2, (32, 32, 32), tumour_fraction=1.0)(1, np.random.default_rng(0)))
    assert batch["images"].shape == (2, 4, 32, 32, 32) and batch["regions"].shape == (2, 3, 32, 32, 32)
    assert batch["regions"][:, 0].any()  # tumour-centred crops contain tumour
    images, regions = torch.from_numpy(batch["images"]), torch.from_numpy(batch["regions"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = dice_bce_loss()
    losses = []
    for _ in range(15):
        loss = loss_fn(model(images), regions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    first, last = _mean_first_last(losses)
    assert last < 0.95 * first


def test_stage2_missing_one_batches_use_the_other_three_inputs(prepared, tmp_path):
    generator = _tiny_generator()
    checkpoint = save_checkpoint(tmp_path / "stage1.pt", "stage1", generator)
    cache = Stage1OutputCache(tmp_path / "cache", checkpoint, generator.eval(), CPU)
    rng = np.random.default_rng(1)
    for _ in range(3):
        batch = stage2_batch(prepared[:2], cache, 1, (16, 32, 32), rng, patterns="missing-one")
        assert sorted(batch["sources"]) == [i for i in range(4) if i != batch["target"]]
    assert input_sets(SEQUENCES[1], "hfgan") == all_patterns(SEQUENCES[1])
    with pytest.raises(TrainingError, match="--input-patterns must be one of"):
        Stage2TrainingOptions(input_patterns="any").check()


def test_stage2_loss_falls_on_a_fixed_batch(prepared, tmp_path):
    generator = _tiny_generator()
    checkpoint = save_checkpoint(tmp_path / "stage1.pt", "stage1", generator)
    cache = Stage1OutputCache(tmp_path / "cache", checkpoint, generator.eval(), CPU)
    batch = stage2_batch(prepared[:2], cache, 1, (16, 32, 32), np.random.default_rng(4), tumour_fraction=1.0)
    assert batch["target"] not in batch["sources"] and 1 <= len(batch["sources"]) <= 3
    unused = [i for i in range(4) if i not in batch["sources"]]
    assert not batch["inputs"][:, unused].any()  # only the drawn inputs reach the refiner, as in the pipeline
    torch.manual_seed(0)
    refiner = Refiner(TINY_REFINER)
    segmenter = build_segmenter(TINY_SEGMENTER).eval().requires_grad_(False)
    tensors = batch_to_device(batch, CPU)
    optimizer = torch.optim.AdamW(refiner.parameters(), lr=3e-3)
    from monai.losses import DiceLoss

    dice = DiceLoss(sigmoid=True)
    totals = []
    for _ in range(8):
        total, terms, _ = refiner_losses(refiner, segmenter, tensors, dice)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    assert all(p.grad is None for p in segmenter.parameters())  # frozen
    first, last = _mean_first_last(totals)
    assert last < first


# --------------------------------------------------------------------------- stage-2 cache


def test_stage1_cache_is_reused_and_invalidated_when_the_checkpoint_changes(prepared, tmp_path, monkeypatch):
    case = prepared[2]
    generator = _tiny_generator(seed=1).eval()
    checkpoint = save_checkpoint(tmp_path / "stage1.pt", "stage1", generator)
    root = tmp_path / "cache"
    cache = Stage1OutputCache(root, checkpoint, generator, CPU)
    sources = (T1N, T2W, T2F)
    first = np.array(cache.get(case, T1C, sources))
    assert (cache.hits, cache.misses) == (0, 1) and cache.path(case, T1C, sources).is_file()
    assert first.shape == case.brain.shape and not first[~case.brain].any() and first[case.brain].max() <= 1
    again = Stage1OutputCache(root, checkpoint, generator, CPU)  # a later run with the same checkpoint
    np.testing.assert_array_equal(again.get(case, T1C, sources), first)
    assert (again.hits, again.misses) == (1, 0)
    changed = _tiny_generator(seed=2).eval()
    save_checkpoint(checkpoint, "stage1", changed)
    fresh = Stage1OutputCache(root, checkpoint, changed, CPU)
    assert fresh.key != cache.key and not cache.folder.exists()
    second = fresh.get(case, T1C, sources)
    assert (fresh.hits, fresh.misses) == (0, 1) and not np.allclose(second, first)
    # inputs prepared another way (the prepared-case version) make the same checkpoint's outputs stale too
    monkeypatch.setattr(stage1_outputs, "PREPARED_CACHE_VERSION", stage1_outputs.PREPARED_CACHE_VERSION + 1)
    reprepared = Stage1OutputCache(root, checkpoint, changed, CPU)
    assert reprepared.key == fresh.key and reprepared.folder != fresh.folder and not fresh.folder.exists()
    assert reprepared.get(case, T1C, sources) is not None and (reprepared.hits, reprepared.misses) == (0, 1)


# --------------------------------------------------------------------------- segmenter weights


def _segmenter_with_weights(seed: int):
    torch.manual_seed(seed)
    model = build_segmenter(TINY_SEGMENTER)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


def test_load_segmenter_from_state_dict_monai_bundle_and_foreign_channel_order(tmp_path):
    model = _segmenter_with_weights(3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "plain.pt")
    loaded = load_segmenter_weights(tmp_path / "plain.pt")
    assert loaded.config.init_filters == 8 and loaded.config.blocks_down == (1, 2, 2, 4)
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(loaded(x), expected)
    # a MONAI bundle that reads (T1c, T1, T2, FLAIR) and writes (TC, WT, ET)
    inputs, outputs = ("t1c", "t1n", "t2w", "t2f"), ("TC", "WT", "ET")
    foreign = dict(model.state_dict())
    foreign["convInit.conv.weight"] = foreign["convInit.conv.weight"][:, [SEQUENCES.index(Sequence(s)) for s in inputs]]
    for key in ("conv_final.2.conv.weight", "conv_final.2.conv.bias"):
        foreign[key] = foreign[key][[REGIONS.index(r) for r in outputs]]
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    torch.save(foreign, tmp_path / "bundle" / "models" / "model.pt")
    with torch.no_grad():
        wrong = load_segmenter_weights(tmp_path / "bundle")(x)
        right = load_segmenter_weights(tmp_path / "bundle", inputs, outputs)(x)
    torch.testing.assert_close(right, expected)
    assert not torch.allclose(wrong, expected)


def test_segmenter_weights_that_do_not_fit_give_one_clear_error(tmp_path):
    state = dict(_segmenter_with_weights(0).state_dict())
    del state["down_layers.1.1.conv2.conv.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(TrainingError, match=r"broken\.pt: segmenter weights do not fit SegResNet.*conv2"):
        load_segmenter_weights(tmp_path / "broken.pt")
    two_inputs = build_segmenter(TINY_SEGMENTER).state_dict()
    two_inputs["convInit.conv.weight"] = two_inputs["convInit.conv.weight"][:, :2]
    torch.save(two_inputs, tmp_path / "two.pt")
    with pytest.raises(TrainingError, match=r"two\.pt: segmenter has 2 inputs"):
        load_segmenter_weights(tmp_path / "two.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not a MONAI SegResNet"):
        load_segmenter_weights(tmp_path / "other.pt")


# --------------------------------------------------------------------------- whole commands


def _stage1_options(data_dir, run_dir, **changes) -> Stage1TrainingOptions:
    values = dict(data_dir=data_dir, run_dir=run_dir, epochs=1, batch_size=2, steps_per_epoch=2,
                  model_config=TINY_GENERATOR, discriminator_config=TINY_DISCRIMINATOR, **FAST)
    values.update(changes)
    return Stage1TrainingOptions(**values)


def test_time_budget_stops_after_the_step_and_still_writes_checkpoint_and_bundle(data_dir, tmp_path):
    result = train_stage1(_stage1_options(data_dir, tmp_path, epochs=5, steps_per_epoch=50, max_minutes=1e-4))
    assert result.stopped_early and result.epochs_done == 1 and result.global_step == 1
    assert result.history[0]["steps"] == 1 and "val_ssim" not in result.history[0]
    assert load_training_state(training_state_path(tmp_path, "stage1"), "stage1")["epoch"] == 1
    assert load_bundle(tmp_path).stage1.config == TINY_GENERATOR
    assert "time budget" in (tmp_path / "train-stage1.log").read_text()


def _linear_trainer(run_dir, scores: list, keep: str = "best", epochs: int = 3):
    """A real trainer fitting a linear layer, whose validation reports ``scores`` epoch by epoch.

    Returns the trainer, its module and the weights it had at each validation (to compare with
    what :meth:`EpochTrainer.select_weights` puts back).
    """
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    options = TrainOptions(run_dir=run_dir, epochs=epochs, device="cpu", keep=keep)
    trainer = EpochTrainer("toy", options, {"net": module}, {"net": (optimizer, schedule)}, CPU,
                           np.random.default_rng(0), lambda message: None, select_by=("val_score",))
    inputs, targets = torch.randn(8, 3), torch.randn(8, 1)
    seen: list = []

    def batches(steps, rng):
        return iter(range(steps))

    def step(_):
        loss = torch.nn.functional.mse_loss(module(inputs), targets)
        trainer.backward(loss)
        return {"total": float(loss.detach())}

    def validate():
        seen.append({k: v.clone() for k, v in module.state_dict().items()})
        score = scores[len(seen) - 1]
        return {} if score is None else {"val_score": score}

    return trainer, module, seen, (batches, step, validate)


@pytest.mark.parametrize("scores, best_epoch", [([0.2, 0.9, 0.5], 2), ([0.2, float("nan"), 0.5], 3),
                                                 ([None, 0.4, None], 2)])
def test_the_best_validated_epoch_is_kept_and_put_back(tmp_path, scores, best_epoch):
    trainer, module, seen, loop = _linear_trainer(tmp_path, scores)
    trainer.run(2, *loop)
    went_on = not torch.equal(seen[best_epoch - 1]["weight"], module.weight.detach())
    assert went_on == (best_epoch < 3)  # the modules moved on after every epoch but the last
    chosen = trainer.select_weights()
    assert chosen == {"keep": "best", "epoch": best_epoch, "selected_by": "val_score",
                      "score": scores[best_epoch - 1]}
    for name, value in module.state_dict().items():
        assert torch.equal(value, seen[best_epoch - 1][name])
    state = load_training_state(training_state_path(tmp_path, "toy"), "toy")
    assert state["best"] == {"epoch": best_epoch, "score": scores[best_epoch - 1]}  # survives a resume


def test_a_best_epoch_without_its_weights_file_is_a_clear_error(tmp_path):
    trainer, module, seen, loop = _linear_trainer(tmp_path, [0.9, 0.1, 0.2])
    trainer.run(2, *loop)
    best_weights_path(tmp_path, "toy").unlink()  # as after resuming a checkpoint older than best-epoch keeping
    with pytest.raises(TrainingError, match="toy-best.pt: missing, so epoch 1's weights were not kept"):
        trainer.select_weights()


def test_keep_last_and_runs_without_validation_keep_the_last_weights(tmp_path):
    trainer, module, seen, loop = _linear_trainer(tmp_path / "last", [0.9, 0.1, 0.2], keep="last")
    trainer.run(2, *loop)
    last = {k: v.clone() for k, v in module.state_dict().items()}
    assert trainer.select_weights() == {"keep": "last", "epoch": 3}
    assert all(torch.equal(v, last[k]) for k, v in module.state_dict().items())

    trainer, module, seen, loop = _linear_trainer(tmp_path / "none", [None, None], epochs=2)
    trainer.run(2, *loop)
    assert trainer.select_weights() == {"keep": "last", "epoch": 2}
    assert not best_weights_path(tmp_path / "none", "toy").exists()
    with pytest.raises(TrainingError, match="--keep"):
        TrainOptions(keep="first").check()


@pytest.mark.slow
def test_stage1_trains_resumes_and_its_bundle_synthesises(data_dir, tmp_path):
    first = train_stage1(_stage1_options(data_dir, tmp_path))
    assert first.epochs_done == 1 and not first.stopped_early
    row = first.history[0]
    assert np.isfinite(row["train_total"]) and 0 < row["val_ssim"] <= 1
    assert {f"val_ssim_{s.value}" for s in SEQUENCES} <= set(row)
    after_one = {k: v.clone() for k, v in load_bundle(tmp_path).stage1.state_dict().items()}

    kept = json.loads((tmp_path / "bundle.json").read_text())["metadata"]["training"]["stage1"]["kept"]
    assert kept == {"keep": "best", "epoch": 1, "selected_by": "val_ssim", "score": row["val_ssim"]}

    resumed = train_stage1(_stage1_options(data_dir, tmp_path, epochs=2, resume=True, keep="last"))
    assert resumed.epochs_done == 2 and resumed.global_step == 4
    assert [r["epoch"] for r in resumed.history] == [1, 2] and resumed.history[0] == first.history[0]
    state = load_training_state(training_state_path(tmp_path, "stage1"), "stage1")
    adam_steps = [float(s["step"]) for s in state["optimizers"]["generator"]["state"].values()]
    assert max(adam_steps) == 4.0  # the optimiser continued (a restart would count 2)
    bundle = load_bundle(tmp_path)
    assert any(not torch.equal(bundle.stage1.state_dict()[k], v) for k, v in after_one.items())
    best = load_training_state(best_weights_path(tmp_path, "stage1"), "stage1")  # still tracked under --keep last
    scores = [r["val_ssim"] for r in resumed.history]
    assert best["epoch"] == 1 + int(np.argmax(scores)) and best["score"] == max(scores)
    assert json.loads((tmp_path / "bundle.json").read_text())["metadata"]["training"]["stage1"]["kept"] == {
        "keep": "last", "epoch": 2}
    csv_lines = (tmp_path / "stage1-metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "val_ssim" in csv_lines[0]
    assert "resumed stage1" in (tmp_path / "train-stage1.log").read_text()

    images = read_case(data_dir / "Phantom-00033")
    inputs = {s: images[s] for s in (T1N, T2W, T2F)}
    result = pipeline.synthesize(inputs, tmp_path, device="cpu")
    synthetic = result.targets[T1C].synthetic
    assert synthetic.GetSize() == images[T1C].GetSize() and synthetic.GetSpacing() == images[T1C].GetSpacing()


@pytest.mark.slow
def test_segmenter_and_stage2_complete_the_bundle(data_dir, tmp_path):
    train_stage1(_stage1_options(data_dir, tmp_path, steps_per_epoch=1))
    stage1_bytes = (tmp_path / "stage1.pt").read_bytes()
    seg = train_segmenter(SegmenterTrainingOptions(
        data_dir=data_dir, run_dir=tmp_path, epochs=1, batch_size=1, steps_per_epoch=2,
        segmenter_config=TINY_SEGMENTER, crop_size=(32, 32, 32), **FAST))
    assert {f"val_dice_{r}" for r in REGIONS} <= set(seg.history[0])
    assert (tmp_path / "stage1.pt").read_bytes() == stage1_bytes  # untouched: the stage-2 cache key stays valid
    options = Stage2TrainingOptions(data_dir=data_dir, run_dir=tmp_path, epochs=1, batch_size=1, steps_per_epoch=2,
                                    refiner_config=TINY_REFINER, crop_size=(32, 32, 32), val_targets=("t1n",), **FAST)
    stage2 = train_stage2(options)
    row = stage2.history[0]
    for key in ("val_ssim", "val_ssim_tumour", "val_ssim_healthy", "val_dice_WT", "val_stage1_ssim"):
        assert np.isfinite(row[key])
    assert row["val_dice"] == pytest.approx(np.mean([row[f"val_dice_{r}"] for r in REGIONS]))
    manifest = json.loads((tmp_path / "bundle.json").read_text())
    assert manifest["files"] == {"stage1": "stage1.pt", "refiner": "refiner.pt", "segmenter": "segmenter.pt"}
    assert set(manifest["metadata"]["training"]) == {"stage1", "segmenter", "refiner"}
    for kind, score in (("segmenter", seg.history[0]["val_dice"]), ("refiner", row["val_ssim"] + row["val_dice"])):
        kept = manifest["metadata"]["training"][kind]["kept"]
        assert kept["keep"] == "best" and kept["epoch"] == 1 and kept["score"] == pytest.approx(score), kind
    bundle = load_bundle(tmp_path)
    assert bundle.stages == "HF-GAN + Refiner + segmenter"
    # the cached stage-1 volumes are exactly what synthesize() makes at inference
    case_id = json.loads((tmp_path / "split.json").read_text())["validation"][0]
    images = read_case(data_dir / case_id)
    result = pipeline.synthesize({s: images[s] for s in (T1C, T2W, T2F)}, bundle, device="cpu")
    torch.set_num_threads(1)  # synthesize() took every core
    assert result.targets[T1N].tumour_region_source.startswith("segmenter")
    cached_t1n = next((tmp_path / "cache" / "stage1").glob(f"*/{case_id}__t1n__t1c-t2w-t2f.npy"))
    brain = np.load(next((tmp_path / "cache").glob(f"prepared-{SIZE}/{case_id}/brain.npy")))
    stage1 = sitk.GetArrayFromImage(result.targets[T1N].stage1) / pipeline.SYNTHETIC_SCALE
    np.testing.assert_allclose(stage1[brain], np.load(cached_t1n)[brain], atol=1e-5)
    # a second stage-2 run with the same stage-1 checkpoint reuses every cached stage-1 volume
    cached = sorted(p.name for p in (tmp_path / "cache" / "stage1").rglob("*.npy"))
    rerun = train_stage2(dataclasses.replace(options, max_minutes=1e-4))  # one step, no validation
    assert rerun.stopped_early and rerun.global_step == 1
    assert sorted(p.name for p in (tmp_path / "cache" / "stage1").rglob("*.npy")) == cached
    log_lines = (tmp_path / "train-stage2.log").read_text().splitlines()
    cache_lines = [line for line in log_lines if "stage-1 cache:" in line]
    assert len(cache_lines) == 2 and cache_lines[-1].endswith(", 0 computed")


@pytest.mark.slow
def test_cli_train_stage1_end_to_end(data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = cli.main(["train", "stage1", "--data", str(data_dir), "-o", str(run_dir), "--config", "small",
                     "--image-size", str(SIZE), "--epochs", "1", "--batch-size", "2", "--steps-per-epoch", "2",
                     "--device", "cpu", "--threads", "1", "--val-cases", "1", "--seed", "7",
                     "--tumour-fraction", "0.5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "train stage1: 1 epochs, 2 steps" in out and str(run_dir) in out
    assert load_bundle(run_dir).stage1.config == HFGANConfig.small(image_size=SIZE)
    assert "1 of each batch from the" in (run_dir / "train-stage1.log").read_text()
    manifest = json.loads((run_dir / "bundle.json").read_text())
    assert manifest["metadata"]["training"]["stage1"]["tumour_fraction"] == 0.5
    for name in ("train-stage1.log", "stage1-metrics.csv", "stage1-metrics.json", "split.json",
                 "checkpoints/stage1-last.pt"):
        assert (run_dir / name).is_file(), name
    assert cli.main(["train", "stage2", "--data", str(data_dir), "-o", str(run_dir), "--device", "cpu"]) == 2
    assert "no segmenter" in capsys.readouterr().err
