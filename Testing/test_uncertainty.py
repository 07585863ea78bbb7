"""The uncertainty map (``core.uncertainty`` through ``pipeline.synthesize``), its files, report, montage
column, worker transfer and CLI options, and its calibration measures (``evaluation.calibration``), on small
phantom cases with real tiny torch models."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from MRISynthesisLib import phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core import uncertainty
from MRISynthesisLib.core.bundles import ModelBundle, save_bundle
from MRISynthesisLib.core.io import image_description
from MRISynthesisLib.core.pipeline import synthesize
from MRISynthesisLib.core.result_files import build_report, write_result
from MRISynthesisLib.evaluation import calibration
from MRISynthesisLib.evaluation.montage import montage_size, save_montage
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.sequences import SEQUENCES, Sequence
from MRISynthesisLib.worker.protocol import RequestError, WorkerRequest, read_request, write_request
from MRISynthesisLib.worker.transfer import load_results, save_results

T1N, T1C, T2W, T2F = SEQUENCES


def tiny_generator(dropout: float = 0.1) -> HFGANGenerator:
    torch.manual_seed(0)
    config = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96, dropout=dropout)
    return HFGANGenerator(config).eval()


def tiny_refiner() -> Refiner:
    torch.manual_seed(1)
    refiner = Refiner(RefinerConfig(channels=4)).eval()
    with torch.no_grad():  # the zero-initialised head would make the refiner the identity
        refiner.head.weight.normal_(0.0, 0.5)
        refiner.head.bias.fill_(0.05)
    return refiner


@pytest.fixture(scope="module")
def case():
    return phantom.generate_case(21, grid="small")


@pytest.fixture(scope="module")
def bundle():
    return ModelBundle(name="tiny-uncertainty", stage1=tiny_generator(), refiner=tiny_refiner())


@pytest.fixture(scope="module")
def made(case, bundle):
    """The same synthesis without a map, with 3 samples (seed 0, twice) and with seed 1."""
    inputs = {s: case.images[s] for s in (T1N, T2W, T2F)}
    run = lambda **kw: synthesize(inputs, bundle, targets=["t1c"], device="cpu", **kw)  # noqa: E731
    return {"plain": run(), "seed0": run(uncertainty=3), "again": run(uncertainty=3),
            "seed1": run(uncertainty=3, uncertainty_seed=1), "inputs": inputs}


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


# --------------------------------------------------------------------------- the map


def test_same_seed_gives_the_same_map_another_seed_another(made):
    first = _array(made["seed0"].targets[T1C].uncertainty_map)
    assert np.array_equal(first, _array(made["again"].targets[T1C].uncertainty_map))
    other = _array(made["seed1"].targets[T1C].uncertainty_map)
    assert not np.array_equal(first, other)
    assert np.abs(first - other).max() > 1e-3


def test_map_lies_on_the_synthetic_grid_positive_in_the_brain_zero_outside(made):
    target = made["seed0"].targets[T1C]
    spread, synthetic = target.uncertainty_map, target.synthetic
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(spread, getter)() == getattr(synthetic, getter)()
    values = _array(spread)
    brain = calibration.synthesis_brain(made["inputs"])
    assert np.isfinite(values).all() and values.min() >= 0.0
    assert (~brain).any() and values[~brain].max() == 0.0
    assert np.mean(values[brain] > 0) > 0.9  # the samples differ almost everywhere in the brain


def test_samples_do_not_change_the_synthesis_itself(made):
    plain, sampled = made["plain"].targets[T1C], made["seed0"].targets[T1C]
    assert np.array_equal(_array(plain.synthetic), _array(sampled.synthetic))
    assert plain.uncertainty_map is None and plain.uncertainty == {}


def test_summary_means_over_tumour_region_and_healthy_brain(made):
    target = made["seed0"].targets[T1C]
    summary = target.uncertainty
    assert summary["samples"] == 3 and summary["seed"] == 0
    assert summary["sources"] == ["flip", "dropout", "intensity", "refiner_shift", "position", "contrast", "rarity"]
    values = _array(target.uncertainty_map)
    region = _array(target.tumour_mask) > 0
    brain = calibration.synthesis_brain(made["inputs"])
    assert summary["mean_brain"] == pytest.approx(float(values[brain].mean()), rel=1e-5)
    assert summary["mean_healthy"] == pytest.approx(float(values[brain & ~region].mean()), rel=1e-5)
    if region.any():
        assert summary["mean_tumour"] == pytest.approx(float(values[region & brain].mean()), rel=1e-5)
    else:  # the untrained refiner's strongest changes are scattered voxels: the fallback region is empty
        assert summary["mean_tumour"] is None
    assert summary["tumour_region"] == target.tumour_region_source


def test_region_summary_on_known_regions():
    spread = np.zeros((4, 4, 4), dtype=np.float32)
    brain = np.zeros(spread.shape, dtype=bool)
    brain[1:3] = True
    tumour = np.zeros(spread.shape, dtype=bool)
    tumour[1, :2] = True
    spread[tumour] = 6.0
    spread[brain & ~tumour] = 2.0
    summary = uncertainty.region_summary(spread, brain, tumour)
    assert summary == {"mean_brain": pytest.approx(3.0), "mean_tumour": 6.0, "mean_healthy": 2.0}
    assert uncertainty.region_summary(spread, brain, None) == {"mean_brain": pytest.approx(3.0),
                                                                "mean_tumour": None, "mean_healthy": None}


def test_files_and_report_with_and_without_the_map(made, bundle, tmp_path):
    written = write_result(made["seed0"], tmp_path / "on", "case")
    path = Path(written["t1c"]["uncertainty_map"])
    assert path.name == "case-t1c-uncertainty.nii.gz" and path.is_file()
    assert image_description(path).startswith("SYNTHETIC T1c uncertainty map")
    on_disk = sitk.ReadImage(str(path))
    assert np.allclose(_array(on_disk), _array(made["seed0"].targets[T1C].uncertainty_map))
    report = build_report(made["seed0"], "case", {}, written, bundle)
    entry = report["targets"]["t1c"]
    assert entry["outputs"]["uncertainty_map"] == str(path)
    assert set(entry["uncertainty"]) >= {"samples", "seed", "sources", "mean_brain", "mean_tumour", "mean_healthy"}
    json.dumps(report, allow_nan=False)

    plain = write_result(made["plain"], tmp_path / "off", "case")
    assert "uncertainty_map" not in plain["t1c"]
    assert not list((tmp_path / "off").glob("*uncertainty*"))
    assert build_report(made["plain"], "case", {}, plain, bundle)["targets"]["t1c"]["uncertainty"] is None


def test_montage_gets_an_uncertainty_column(made, case, tmp_path):
    with_map = save_montage(tmp_path / "with.png", made["inputs"], made["seed0"].targets[T1C],
                            ground_truth=case.images[T1C], label=case.label)
    without = save_montage(tmp_path / "without.png", made["inputs"], made["plain"].targets[T1C],
                           ground_truth=case.images[T1C], label=case.label)
    with Image.open(with_map) as a, Image.open(without) as b:
        columns = 3 + 1 + 1 + 2  # inputs, synthetic, truth, refinement and tumour maps
        assert b.size == montage_size(columns)
        assert a.size == montage_size(columns + 1)


def test_worker_transfer_carries_the_map_and_summary(made, tmp_path):
    save_results([made["seed0"]], tmp_path)
    [back] = load_results(tmp_path)
    target = back.targets[T1C]
    assert np.allclose(_array(target.uncertainty_map), _array(made["seed0"].targets[T1C].uncertainty_map))
    assert target.uncertainty["mean_tumour"] == pytest.approx(made["seed0"].targets[T1C].uncertainty["mean_tumour"])


def test_worker_request_field(tmp_path):
    request = WorkerRequest(kind="synthesis", inputs={T1N: "t1n.nrrd"}, uncertainty_samples=6)
    (tmp_path / "t1n.nrrd").write_bytes(b"x")
    assert read_request(write_request(request, tmp_path / "request.json")).uncertainty_samples == 6
    for bad in (1, -2, "4", 1000):
        data = json.loads((tmp_path / "request.json").read_text(encoding="utf-8"))
        data["uncertainty_samples"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(RequestError, match="uncertainty_samples"):
            read_request(tmp_path / "bad.json")


# --------------------------------------------------------------------------- the samples


def test_plan_varies_what_the_model_allows(bundle):
    plan = uncertainty.plan_samples(6, 0, T1C, bundle.stage1, bundle.refiner, 0.24)
    assert plan.flips == (True, False, True, False, True, False)  # the unflipped synthesis comes first
    mean, sigma = bundle.stage1.intensity_priors[T1C]
    assert all(mean - 2 * sigma - 1e-9 <= v <= mean + 2 * sigma + 1e-9 for v in plan.intensities)
    assert len(set(plan.intensities)) == 6
    assert all(abs(o) <= uncertainty.MAX_SHIFT for offset in plan.offsets for o in offset)
    assert plan.dropout and plan.sources == uncertainty.SOURCES
    assert plan == uncertainty.plan_samples(6, 0, T1C, bundle.stage1, bundle.refiner, 0.24)

    no_dropout = tiny_generator(dropout=0.0)
    plain = uncertainty.plan_samples(4, 0, T1C, no_dropout, None, float("nan"))
    assert not plain.dropout and plain.sources == ("flip", "position", "contrast", "rarity")
    assert plain.intensities == (None,) * 4 and plain.offsets == ((0, 0, 0),) * 4


def test_positional_spread_is_the_spread_over_one_voxel_moves():
    volume = np.zeros((9, 9, 9), dtype=np.float32)
    volume[:, :, 4:] = 1.0  # a tissue border between columns 3 and 4
    brain = np.ones(volume.shape, dtype=bool)
    spread = uncertainty.positional_spread(volume, brain)
    inner = (slice(1, -1),) * 2
    # Columns 3 and 4: a third of the 27 placements fall on the other side (sd sqrt(1/3 * 2/3)).
    assert np.allclose(spread[inner + (slice(3, 5),)], np.sqrt(2.0) / 3.0, atol=1e-6)
    assert np.allclose(spread[inner + (slice(0, 3),)], 0.0) and np.allclose(spread[inner + (slice(5, 8),)], 0.0)
    # Outside the brain the synthesis has no signal: the brain's border is an edge, its flat inside is not.
    brain[:, :, 7:] = False
    bordered = uncertainty.positional_spread(volume, brain)
    assert np.allclose(bordered[inner + (slice(6, 8),)], np.sqrt(2.0) / 3.0, atol=1e-6)
    assert np.allclose(bordered[inner + (slice(5, 6),)], 0.0, atol=1e-6)


def test_contrast_spread_grows_with_the_distance_from_the_brain_median():
    volume = np.zeros((4, 5, 6), dtype=np.float32)
    volume[1:3, 1:4, 1:5] = np.linspace(1.0, 3.0, 24, dtype=np.float32).reshape(2, 3, 4)
    brain = volume > 0
    spread = uncertainty.contrast_spread(volume, brain, factor=0.5)
    median = float(np.median(volume[brain]))
    assert np.allclose(spread[brain], 0.5 * np.abs(volume[brain] - median), atol=1e-6)
    assert np.all(spread[~brain] == 0.0) and spread.dtype == np.float32
    # Brighter and darker than the median alike; the default factor is the module's constant.
    darkest, brightest = np.unravel_index(np.argmin(np.where(brain, volume, 9)), volume.shape), (2, 3, 4)
    assert spread[darkest] > 0 and spread[brightest] > 0
    assert np.allclose(uncertainty.contrast_spread(volume, brain),
                       uncertainty.CONTRAST_SPREAD / 0.5 * spread, atol=1e-6)
    assert not uncertainty.contrast_spread(volume, np.zeros_like(brain)).any()


def test_rarity_is_zero_for_common_tissue_and_grows_with_rareness():
    """Three inputs over a brain of one common tissue, a smaller second one and a few voxels of a third: the
    common tissues score 0, the rare one e-folds above; scale and offset of an input do not matter."""
    rng = np.random.default_rng(3)
    shape = (20, 20, 20)
    brain = np.zeros(shape, dtype=bool)
    brain[2:18, 2:18, 2:18] = True
    tissue = np.zeros(shape, dtype=np.int64)
    tissue[2:18, 2:18, 10:18] = 1   # half of the brain: a second common tissue
    tissue[8:11, 8:11, 4:7] = 2     # 27 voxels of 4096: rare ("tumour")
    means = np.array([[100.0, 60.0, 80.0], [140.0, 40.0, 70.0], [60.0, 200.0, 160.0]])
    inputs = [np.where(brain, means[tissue, k] + rng.normal(0.0, 2.0, shape), 0.0) for k in range(3)]
    rarity = uncertainty.input_rarity(inputs, brain)
    assert rarity.dtype == np.float32 and np.all(rarity[~brain] == 0.0)
    common = rarity[brain & (tissue < 2)]
    assert np.median(common) == 0.0 and np.percentile(common, 95) < 0.5
    assert rarity[tissue == 2].min() > 2.0  # at least e^2 rarer than the typical voxel
    assert rarity[tissue == 2].min() > common.max()  # every rare voxel above every common one
    moved = [7.0 * inputs[0] + 300.0, inputs[1], 0.01 * inputs[2]]
    assert np.allclose(uncertainty.input_rarity(moved, brain), rarity, atol=1e-4)
    # Integer volumes (as scanners store them) give what the same values as floats give.
    whole = [np.round(volume) for volume in inputs]
    assert np.array_equal(uncertainty.input_rarity([v.astype(np.uint16) for v in whole], brain),
                          uncertainty.input_rarity(whole, brain))
    # Fewer inputs work; inputs that do not vary and an empty brain give no rarity.
    assert uncertainty.input_rarity(inputs[:1], brain)[tissue == 2].min() > 0.0
    assert not uncertainty.input_rarity([np.full(shape, 5.0)] * 2, brain).any()
    assert not uncertainty.input_rarity(inputs, np.zeros_like(brain)).any()


def test_the_rarity_part_never_sees_the_acquired_target(made, bundle, case):
    """Validating (the acquired T1c given as well, as evaluate does) makes the same map as synthesising from
    the three other sequences: the target's own volume is not among the rarity part's inputs."""
    both = synthesize({**made["inputs"], T1C: case.images[T1C]}, bundle, targets=["t1c"], device="cpu",
                      ground_truth={T1C: case.images[T1C]}, uncertainty=3)
    assert both.targets[T1C].error_map is not None  # the acquired T1c was there, as ground truth
    assert np.array_equal(_array(both.targets[T1C].uncertainty_map), _array(made["seed0"].targets[T1C].uncertainty_map))


def test_rarity_spread_is_scaled_by_the_synthesis_brain_median():
    rng = np.random.default_rng(4)
    brain = np.zeros((10, 10, 10), dtype=bool)
    brain[1:9, 1:9, 1:9] = True
    inputs = [np.where(brain, rng.gamma(2.0, 50.0, brain.shape), 0.0) for _ in range(2)]
    synthesis = np.where(brain, rng.uniform(0.2, 0.6, brain.shape), 0.0)
    median = float(np.median(synthesis[brain]))
    spread = uncertainty.rarity_spread(inputs, synthesis, brain, factor=0.5)
    assert np.allclose(spread, 0.5 * median * uncertainty.input_rarity(inputs, brain), atol=1e-6)
    assert np.allclose(uncertainty.rarity_spread(inputs, synthesis, brain),
                       uncertainty.RARITY_SPREAD / 0.5 * spread, atol=1e-6)
    assert spread[brain].max() > 0 and not spread[~brain].any()
    assert not uncertainty.rarity_spread(inputs, synthesis, np.zeros_like(brain)).any()


def test_map_adds_the_samples_spread_to_its_three_parts(made):
    """sqrt(variance over the synthesis and its samples + positional^2 + contrast^2 + rarity^2) (the model
    grid is the input grid here: 2.5 mm, 96 x 96): never below the three parts of the synthesis together,
    above them where the samples differ."""
    target = made["seed0"].targets[T1C]
    brain = calibration.synthesis_brain(made["inputs"])
    values = _array(target.uncertainty_map)[brain].astype(np.float64)
    synthetic = _array(target.synthetic)
    position = uncertainty.positional_spread(synthetic, brain)[brain].astype(np.float64)
    contrast = uncertainty.contrast_spread(synthetic, brain)[brain].astype(np.float64)
    inputs = [_array(made["inputs"][s]) for s in (T1N, T2W, T2F)]
    rarity = uncertainty.rarity_spread(inputs, synthetic, brain)[brain].astype(np.float64)
    parts = np.sqrt(position ** 2 + contrast ** 2 + rarity ** 2)
    assert np.all(values >= parts - 1e-3 * parts.max())
    assert np.mean(values > parts * 1.01 + 1e-6) > 0.5
    assert np.mean(contrast > position) > 0.1  # the contrast part is not negligible beside the positional one
    assert np.mean(rarity > position) > 0.02  # nor is the rarity part, where the inputs are rare


def test_dropout_is_on_only_in_the_bottleneck_and_restored():
    generator = tiny_generator()
    assert uncertainty.has_dropout(generator) and not uncertainty.has_dropout(tiny_generator(dropout=0.0))
    with uncertainty.dropout_on(generator):
        trained = {name for name, module in generator.named_modules() if module.training}
        assert trained and all(name.startswith("middle.") for name in trained)
    assert not any(module.training for module in generator.modules())


def test_sample_counts_are_checked():
    assert uncertainty.check_samples(0) == 0 and uncertainty.check_samples(5) == 5
    with pytest.raises(ValueError, match="0 or more"):
        uncertainty.check_samples(-1)
    with pytest.raises(ValueError, match="at least 2"):
        uncertainty.check_samples(1)
    for bad in (True, 2.5, "4"):
        with pytest.raises(TypeError):
            uncertainty.check_samples(bad)


@pytest.mark.parametrize("arguments, message", [
    (["--uncertainty", "-1"], "--uncertainty must be 0 or more"),
    (["--uncertainty", "x"], "--uncertainty must be a whole number"),
    (["--uncertainty", "1"], "at least 2"),
    (["--uncertainty-seed", "-3"], "--uncertainty-seed"),
])
def test_cli_refuses_bad_sample_counts_in_one_line(tmp_path, arguments, message, capsys):
    code = main(["synthesize", str(tmp_path), "-o", str(tmp_path / "out"), *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1


def test_cli_synthesize_writes_the_map(case, bundle, tmp_path):
    torch.manual_seed(0)
    folder = save_bundle(tmp_path / "bundle", "tiny", bundle.stage1, bundle.refiner, None)
    data = phantom.write_case(case, tmp_path / "cases")
    for image in data.glob("*t1c*"):
        image.unlink()
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["synthesize", str(data), "-o", str(out), "--model", str(folder), "--device", "cpu",
                     "--uncertainty", "2"]) == 0
    [report_path] = out.glob("*-report.json")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    entry = report["targets"]["t1c"]
    assert Path(entry["outputs"]["uncertainty_map"]).name.endswith("-t1c-uncertainty.nii.gz")
    assert entry["uncertainty"]["samples"] == 2 and entry["uncertainty"]["mean_brain"] > 0
    assert "mean_tumour" in entry["uncertainty"] and "mean_healthy" in entry["uncertainty"]


# --------------------------------------------------------------------------- calibration


def test_calibration_of_a_map_that_is_the_error_and_of_a_constant():
    rng = np.random.default_rng(0)
    error = rng.gamma(2.0, 10.0, size=(8, 9, 10))
    brain = np.ones(error.shape, dtype=bool)
    brain[0] = False
    scores = calibration.calibration_scores(error, error, brain, refinement=-error, position=-error[::-1],
                                            contrast=2 * error, rarity=error + 1.0)
    assert scores["uncertainty_auroc"] == pytest.approx(1.0)
    assert 0.35 < scores["position_auroc"] < 0.65  # |position| = the error, mirrored: unrelated
    assert scores["contrast_auroc"] == pytest.approx(1.0) and scores["contrast_spearman"] == pytest.approx(1.0)
    assert scores["rarity_auroc"] == pytest.approx(1.0) and scores["rarity_spearman"] == pytest.approx(1.0)
    assert scores["uncertainty_spearman"] == pytest.approx(1.0)
    assert scores["refinement_auroc"] == pytest.approx(1.0)
    assert scores["constant_auroc"] == pytest.approx(0.5)
    constant = calibration.calibration_scores(np.full(error.shape, 3.0), error, brain)
    assert constant["uncertainty_auroc"] == pytest.approx(0.5) and constant["uncertainty_spearman"] is None
    assert constant["refinement_auroc"] is None and constant["position_auroc"] is None
    assert constant["contrast_auroc"] is None and constant["rarity_auroc"] is None
    inverse = calibration.calibration_scores(-error, error, brain)
    assert inverse["uncertainty_auroc"] == pytest.approx(0.0) and inverse["uncertainty_spearman"] == pytest.approx(-1)
    noise = calibration.calibration_scores(rng.random(error.shape), error, brain)
    assert 0.35 < noise["uncertainty_auroc"] < 0.65


def test_worst_voxels_are_the_top_tenth():
    error = np.arange(100.0)[::-1]
    worst = calibration.worst_error_voxels(error)
    assert worst.sum() == 10 and set(np.flatnonzero(worst)) == set(range(10))


def test_reliability_curve_and_diagram(tmp_path):
    spread = np.linspace(0.0, 9.0, 1000).reshape(10, 10, 10)
    error = 2.0 * spread
    curve = calibration.reliability_curve(spread, error, np.ones(spread.shape, dtype=bool))
    assert len(curve[0]) == calibration.RELIABILITY_BINS
    assert np.allclose(curve[1], 2.0 * np.asarray(curve[0])) and np.all(np.diff(curve[0]) > 0)
    path = calibration.save_reliability_diagram(tmp_path / "reliability.png", {"t1c": curve})
    with Image.open(path) as image:
        assert image.format == "PNG" and image.info.get("Software", "").startswith("MRISynthesis")


def test_calibration_of_a_real_synthesis(made, case):
    brain = calibration.synthesis_brain(made["inputs"])
    truth = {T1C: case.images[T1C]}
    validated = synthesize(made["inputs"], ModelBundle(name="tiny", stage1=tiny_generator(),
                                                       refiner=tiny_refiner()),
                           targets=["t1c"], device="cpu", ground_truth=truth, uncertainty=2)
    acquired, _ = calibration.synthesis_grid(made["inputs"])
    scores = calibration.target_calibration(validated.targets[T1C], brain, acquired)
    for key in calibration.CALIBRATION_COLUMNS:
        assert scores[key] is not None and np.isfinite(scores[key])
    assert scores["constant_auroc"] == 0.5
    # With the acquired T1c among the arrays (as evaluate has it), the rarity part still uses the other three.
    with_target, _ = calibration.synthesis_grid({**made["inputs"], T1C: case.images[T1C]})
    assert T1C in with_target
    assert calibration.target_calibration(validated.targets[T1C], brain, with_target)["rarity_auroc"] == \
        scores["rarity_auroc"]
    without_inputs = calibration.target_calibration(validated.targets[T1C], brain)
    assert without_inputs["rarity_auroc"] is None  # the rarity part needs the inputs
    assert without_inputs["uncertainty_auroc"] == scores["uncertainty_auroc"]
    assert calibration.target_calibration(made["plain"].targets[T1C], brain) is None  # no map, no error map


def test_evaluate_adds_calibration_columns_and_the_reliability_diagram(bundle, tmp_path):
    folder = save_bundle(tmp_path / "bundle", "tiny", bundle.stage1, bundle.refiner, None)
    phantom.generate_cases(tmp_path / "data", 1, 400, small=True)
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["evaluate", "--data", str(tmp_path / "data"), "--model", str(folder), "-o", str(out),
                     "--device", "cpu", "--targets", "t1c", "--uncertainty", "2"]) == 0
    header, *rows = (out / "evaluation.csv").read_text(encoding="utf-8").splitlines()
    columns = header.split(",")
    assert set(calibration.CALIBRATION_COLUMNS) <= set(columns)
    final = [dict(zip(columns, row.split(","))) for row in rows if ",final," in row]
    assert final and all(0.0 <= float(row["uncertainty_auroc"]) <= 1.0 for row in final)
    assert (out / "reliability.png").is_file()
    summary = (out / "evaluation.md").read_text(encoding="utf-8")
    assert "## Uncertainty map: calibration" in summary and "refinement magnitude" in summary
    assert "| positional part alone |" in summary and "| rarity part alone |" in summary
    assert all(0.0 <= float(row["rarity_auroc"]) <= 1.0 for row in final)
    assert "Uncertainty map: calibration" in printed.getvalue()
