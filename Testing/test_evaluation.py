"""``mrisynth evaluate`` and MRISynthesisLib.evaluation: real phantom cases, a real tiny bundle, and every
number checked against metrics.py recomputed from the files the command wrote."""
from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from MRISynthesisLib.evaluation import cases as evaluation, plots, tables, writing
from MRISynthesisLib import metrics, phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.evaluation.cases import EvaluationError
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.models.segmenter import (
    SegmenterConfig,
    build_segmenter,
    predict_region_probabilities,
    regions_to_label,
)
from MRISynthesisLib.core.model_grid_inputs import brain_box
from MRISynthesisLib.core.preprocessing import brain_mask
from MRISynthesisLib.sequences import SEQUENCES, Sequence
from MRISynthesisLib.core.bundles import load_bundle, save_bundle
from markdown_tables import table_lines

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_KEYS = ("ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume")
SEG_KEYS = ("dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_TC", "hd95_ET")


def tiny_bundle(folder: Path, segmenter: bool = True, refiner: bool = True) -> Path:
    """The brief's tiny bundle; the refiner's zero-initialised head is perturbed so that it changes the volume."""
    torch.manual_seed(0)
    generator = HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))
    refine = Refiner(RefinerConfig(channels=4)) if refiner else None
    if refine is not None:
        with torch.no_grad():
            refine.head.weight.normal_(0.0, 0.5)
            refine.head.bias.fill_(0.05)
    segment = build_segmenter(SegmenterConfig(init_filters=8, blocks_down=(1, 1, 1, 1))) if segmenter else None
    return save_bundle(folder, "tiny", generator, refine, segment)


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _csv_rows(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- fast: cases and errors


def test_find_cases_sorted_limited_and_the_folder_itself(tmp_path, write_brats_case):
    first = write_brats_case(tmp_path)
    shutil.copytree(first, tmp_path / "AAA-copy")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes").mkdir()  # no images: not a case
    cases = evaluation.find_evaluation_cases(tmp_path)
    assert [c.folder.name for c in cases] == ["AAA-copy", "BraTS-GLI-00000-000"]
    assert [c.folder.name for c in evaluation.find_evaluation_cases(tmp_path, limit=1)] == ["AAA-copy"]
    single = evaluation.find_evaluation_cases(first)
    assert len(single) == 1 and set(single[0].sequences) == set(SEQUENCES) and single[0].label is not None


@pytest.mark.parametrize("problem, expected", [
    ("empty", "no case folders"),
    ("missing", "missing T1 contrast-enhanced"),
])
def test_evaluate_errors_are_one_line(tmp_path, write_brats_case, capsys, problem, expected):
    data = tmp_path / "data"
    data.mkdir()
    if problem == "missing":
        write_brats_case(data, sequences=[s for s in SEQUENCES if s != Sequence.T1C])
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(data), "-o", str(out), "--model", str(tmp_path / "nothing")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error
    if problem != "empty":
        assert "BraTS-GLI-00000-000" in error
    assert not out.exists()
    with pytest.raises(EvaluationError, match=expected):
        evaluation.find_evaluation_cases(data)


# --------------------------------------------------------------------------- fast: tables and figures


def _fake_rows(cases: int = 3) -> list:
    """Rows shaped like evaluate_cases output, with known random values."""
    rng = np.random.default_rng(5)
    rows = []
    for case in range(cases):
        for target in SEQUENCES:
            for stage in ("stage1", "final"):
                row = {"case": f"C{case}", "target": target.value, "stage": stage}
                row.update({k: float(rng.uniform(0.5, 1.0)) for k in IMAGE_KEYS})
                row.update({k: float(rng.uniform(0.0, 1.0) if k.startswith("dice") else rng.uniform(1, 40))
                            for k in SEG_KEYS})
                rows.append(row)
        reference = {"case": f"C{case}", "target": "none", "stage": "acquired", **{k: None for k in IMAGE_KEYS}}
        reference.update({k: float(rng.uniform(0.0, 1.0)) for k in SEG_KEYS})
        rows.append(reference)
    return rows


def _cell(values) -> str:
    values = list(values)
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def test_summary_tables_follow_the_papers_layout_with_mean_and_std():
    rows = _fake_rows()
    text = tables.summary_markdown(rows, "tiny", segmenter=True, refiner=True)
    table1 = table_lines(text, "## Table 1. SSIM-Whole")
    assert table1[0] == "| Method | T1 | T2 | FLAIR | T1ce | Avg. |"
    stage1 = table1[2].split(" | ")
    order = ["t1n", "t2w", "t2f", "t1c"]
    for column, target in enumerate(order, start=1):
        expected = _cell(r["ssim"] for r in rows if r["stage"] == "stage1" and r["target"] == target)
        assert stage1[column] == expected
    per_case = [statistics.mean(r["ssim"] for r in rows if r["stage"] == "final" and r["case"] == c)
                for c in ("C0", "C1", "C2")]
    assert table1[3].rstrip(" |").endswith(_cell(per_case))
    assert table1[3].startswith("| + Refiner |")

    volume = table_lines(text, "Compare this one with the paper's Table 1.")
    assert volume[0] == table1[0] and volume[2] != table1[2]
    assert _cell(r["ssim_volume"] for r in rows if r["stage"] == "final" and r["target"] == "t2w") in volume[3]

    tumour = table_lines(text, "SSIM-Tumour region")
    healthy = table_lines(text, "SSIM-Healthy region")
    assert _cell(r["ssim_tumour"] for r in rows if r["stage"] == "final" and r["target"] == "t1c") in tumour[3]
    assert _cell(r["ssim_healthy"] for r in rows if r["stage"] == "stage1" and r["target"] == "t2f") in healthy[2]

    table3 = table_lines(text, "## Table 3. Dice score")
    assert table3[0] == "| Method | WT | ET | TC | Avg |"
    final = [r for r in rows if r["stage"] == "final"]
    cells = table3[3].split(" | ")
    assert cells[1] == _cell(r["dice_WT"] for r in final)
    assert cells[2] == _cell(r["dice_ET"] for r in final)
    assert cells[3] == _cell(r["dice_TC"] for r in final)
    assert cells[4].rstrip(" |") == _cell((r["dice_WT"] + r["dice_ET"] + r["dice_TC"]) / 3 for r in final)
    reference = [r for r in rows if r["stage"] == "acquired"]
    assert table3[4].startswith("| all four acquired (reference) | " + _cell(r["dice_WT"] for r in reference))
    for section in ("## PSNR (dB)", "## NMSE", "HD95 (mm)"):
        assert section in text


def test_summary_without_segmenter_or_refiner_says_so():
    rows = [r for r in _fake_rows(2) if r["stage"] == "stage1"]
    for row in rows:
        for key in SEG_KEYS:
            row.pop(key)
    text = tables.summary_markdown(rows, "tiny", segmenter=False, refiner=False)
    assert "Skipped: the bundle has no segmenter" in text
    assert "no Refiner" in text and "+ Refiner |" not in text
    assert "dice" not in tables.rows_to_csv(rows).splitlines()[0]


def test_csv_has_one_row_per_case_target_stage_and_empty_cells_for_missing_values():
    rows = _fake_rows(2)
    parsed = list(csv.DictReader(tables.rows_to_csv(rows).splitlines()))
    assert len(parsed) == len(rows) == 2 * (4 * 2 + 1)
    assert list(parsed[0]) == ["case", "target", "stage", "protocol", *IMAGE_KEYS, *SEG_KEYS]
    reference = [p for p in parsed if p["stage"] == "acquired"]
    assert all(p["ssim"] == "" and p["target"] == "none" for p in reference)
    assert float(parsed[0]["psnr"]) == rows[0]["psnr"]  # full precision


def test_boxplots_are_png_files(tmp_path):
    paths = plots.save_boxplots(_fake_rows(), tmp_path)
    assert [p.name for p in paths] == ["ssim_boxplot.png", "dice_boxplot.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
    with Image.open(paths[0]) as picture:
        assert picture.size == (1350, 420)
        pixels = np.asarray(picture.convert("L"))
    assert pixels.std() > 10  # drawn, not blank


# --------------------------------------------------------------------------- slow: the whole command


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """`mrisynth evaluate` on two small phantom cases (target T1c) with volumes saved."""
    root = tmp_path_factory.mktemp("evaluate")
    bundle = tiny_bundle(root / "bundle")
    folders = phantom.generate_cases(root / "data", 2, 300, small=True)
    out = root / "out"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["evaluate", "--data", str(root / "data"), "--model", str(bundle), "-o", str(out),
                     "--device", "cpu", "--targets", "t1c", "--save-volumes"])
    assert code == 0
    return {"out": out, "folders": folders, "stdout": stdout.getvalue(), "bundle": bundle,
            "rows": _csv_rows(out / "evaluation.csv")}


@pytest.mark.slow
def test_evaluate_writes_one_row_per_case_target_stage(evaluated):
    rows = evaluated["rows"]
    assert list(rows[0]) == ["case", "target", "stage", "protocol", *IMAGE_KEYS, *SEG_KEYS,
                             *(f"pseudo_{key}" for key in SEG_KEYS), "label_source", "intensity", "intensity_value"]
    assert {(r["label_source"], r["intensity"]) for r in rows} == {("truth", "mean")}
    keys = [(r["case"], r["target"], r["stage"]) for r in rows]
    expected = []
    for case in ("Phantom-00300", "Phantom-00301"):
        expected += [(case, "t1c", "stage1"), (case, "t1c", "final"), (case, "none", "acquired")]
    assert keys == expected
    out = evaluated["out"]
    names = {p.name for p in out.iterdir()}
    assert {"evaluation.csv", "evaluation.md", "ssim_boxplot.png", "dice_boxplot.png"} <= names
    assert [n for n in names if n.startswith(".")] == [".mrisynth-evaluation.json"]  # staging gone, set listed
    listed = json.loads((out / ".mrisynth-evaluation.json").read_text())["files"]
    assert set(listed) == names - {".mrisynth-evaluation.json"}
    assert "SSIM-Whole" in evaluated["stdout"] and "Dice" in evaluated["stdout"]


@pytest.mark.slow
def test_evaluate_image_metrics_equal_metrics_py_on_the_written_volumes(evaluated):
    out = evaluated["out"]
    for folder in evaluated["folders"]:
        case = folder.name
        acquired = {s: _read(folder / f"{case}-{s.value}.nii.gz") for s in SEQUENCES}
        brain = brain_mask(acquired.values())
        tumour = (_read(folder / f"{case}-seg.nii.gz") > 0) & brain
        by_stage = {r["stage"]: r for r in evaluated["rows"] if r["case"] == case and r["target"] == "t1c"}
        stage1 = _read(out / f"{case}-t1c-stage1.nii.gz")
        final = _read(out / f"{case}-t1c.nii.gz")
        assert not np.array_equal(stage1, final)  # the refiner changed something
        for stage, synthetic in (("stage1", stage1), ("final", final)):
            expected = metrics.image_metrics(acquired[Sequence.T1C], synthetic, brain, tumour)
            for key in IMAGE_KEYS:
                assert float(by_stage[stage][key]) == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


@pytest.mark.slow
def test_evaluate_dice_and_hd95_equal_metrics_py_on_the_written_label_maps(evaluated):
    out = evaluated["out"]
    for folder in evaluated["folders"]:
        case = folder.name
        truth_image = sitk.ReadImage(str(folder / f"{case}-seg.nii.gz"))
        truth = sitk.GetArrayFromImage(truth_image)
        spacing = truth_image.GetSpacing()[::-1]
        files = {("t1c", "stage1"): f"{case}-t1c-segmentation-stage1.nii.gz",
                 ("t1c", "final"): f"{case}-t1c-segmentation.nii.gz",
                 ("none", "acquired"): f"{case}-segmentation-acquired.nii.gz"}
        for (target, stage), name in files.items():
            row = next(r for r in evaluated["rows"] if (r["case"], r["target"], r["stage"]) == (case, target, stage))
            expected = metrics.segmentation_metrics(_read(out / name), truth, spacing)
            for key in SEG_KEYS:
                assert float(row[key]) == pytest.approx(expected[key], rel=1e-9, abs=1e-9), (name, key)


def _zscore(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    values = volume[brain & (volume != 0)].astype(np.float64)
    out = np.zeros(volume.shape, np.float32)
    out[brain] = (volume[brain] - values.mean()) / values.std()
    return out


@pytest.mark.slow
def test_evaluate_segments_the_completed_set(evaluated):
    """Recompute the segmenter's input on the case grid (equal to the model grid for these cases)."""
    bundle = load_bundle(evaluated["bundle"])
    out = evaluated["out"]
    folder = evaluated["folders"][0]
    case = folder.name
    image = sitk.ReadImage(str(folder / f"{case}-t1n.nii.gz"))
    assert image.GetSize() == (96, 96, 64) and image.GetSpacing() == (2.5, 2.5, 2.5)  # 240 mm / 96 voxels
    acquired = {s: _read(folder / f"{case}-{s.value}.nii.gz") for s in SEQUENCES}
    brain = brain_mask(acquired.values())
    synthetic = _read(out / f"{case}-t1c.nii.gz")
    for volumes, name in (
        (acquired, f"{case}-segmentation-acquired.nii.gz"),
        ({**acquired, Sequence.T1C: synthetic}, f"{case}-t1c-segmentation.nii.gz"),
    ):
        stacked = np.stack([_zscore(volumes[s].astype(np.float32), brain) for s in SEQUENCES])
        box = brain_box(brain, margin=4)  # the segmenter sees the brain's bounding box, as in the pipeline
        cropped = np.ascontiguousarray(stacked[(slice(None),) + box])
        roi = tuple(-(-n // 8) * 8 for n in cropped.shape[1:])
        probabilities = predict_region_probabilities(bundle.segmenter, torch.from_numpy(cropped)[None],
                                                     roi_size=roi)
        label = np.zeros(brain.shape, np.uint8)
        label[box] = regions_to_label(probabilities[0].numpy())
        label[~brain] = 0
        written = _read(out / name)
        assert np.mean(label == written) > 0.999, name


@pytest.mark.slow
def test_evaluate_markdown_and_plots(evaluated):
    out = evaluated["out"]
    text = (out / "evaluation.md").read_text(encoding="utf-8")
    rows = evaluated["rows"]
    table1 = table_lines(text, "## Table 1. SSIM-Whole")
    stage1 = [float(r["ssim"]) for r in rows if r["stage"] == "stage1"]
    assert table1[2].split(" | ")[4] == _cell(stage1)  # T1ce column
    dice = table_lines(text, "## Table 3. Dice score")
    reference = [float(r["dice_ET"]) for r in rows if r["stage"] == "acquired"]
    assert dice[4].split(" | ")[2] == _cell(reference)
    for name, size in (("ssim_boxplot.png", (1350, 420)), ("dice_boxplot.png", (750, 420))):
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
        with Image.open(path) as picture:
            assert picture.size == size


@pytest.mark.slow
def test_evaluate_cases_without_segmenter_or_refiner(tmp_path, evaluated):
    bundle = load_bundle(tiny_bundle(tmp_path / "plain", segmenter=False, refiner=False))
    rows = evaluation.evaluate_cases([evaluated["folders"][0]], bundle, device="cpu", targets=["t2f"])
    assert [(r["target"], r["stage"]) for r in rows] == [("t2f", "stage1")]
    assert not any(key in rows[0] for key in SEG_KEYS)
    paths = writing.write_evaluation(rows, tmp_path / "out", "plain", segmenter=False, refiner=False)
    assert sorted(paths) == ["csv", "ssim_boxplot", "summary"]
    assert "Skipped: the bundle has no segmenter" in paths["summary"].read_text(encoding="utf-8")
