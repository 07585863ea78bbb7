"""``mrisynth evaluate`` on cases with and without a label map: pseudo-label Dice (the paper's Table 3
protocol), the pseudo-label as the tumour region of unlabelled cases, and ``--segmenter``.

Real phantom cases, a real tiny bundle without a segmenter and the packaged demo bundle's trained
segmenter given with ``--segmenter`` (so that the pseudo-labels hold real tumour labels); every number
is checked against :mod:`metrics` recomputed from the files the command wrote.
"""
from __future__ import annotations

import contextlib
import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MRISynthesisLib import metrics, phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.bundles import CATALOGUE_DIR, load_segmenter
from MRISynthesisLib.core.checkpoints import CheckpointError
from MRISynthesisLib.core.preprocessing import brain_mask
from MRISynthesisLib.evaluation import cases as evaluation
from MRISynthesisLib.sequences import SEQUENCES, Sequence

from test_evaluation import tiny_bundle
from markdown_tables import table_lines

DEMO_SEGMENTER = CATALOGUE_DIR / "demo" / "segmenter.pt"
IMAGE_KEYS = ("ssim", "ssim_tumour", "ssim_healthy", "psnr", "nmse", "mae", "ssim_volume")
SEG_KEYS = ("dice_WT", "dice_TC", "dice_ET", "hd95_WT", "hd95_TC", "hd95_ET")
PSEUDO_KEYS = tuple(f"pseudo_{key}" for key in SEG_KEYS)
LABELLED, UNLABELLED = "Phantom-00300", "Phantom-00301"


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _run(arguments: list) -> tuple:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(arguments)
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two phantom cases (the second without its -seg file), a tiny bundle without a segmenter, the demo
    segmenter given with --segmenter, target T1c, volumes saved."""
    root = tmp_path_factory.mktemp("pseudo")
    bundle = tiny_bundle(root / "bundle", segmenter=False)
    folders = phantom.generate_cases(root / "data", 2, 300, small=True)
    (folders[1] / f"{UNLABELLED}-seg.nii.gz").unlink()
    out = root / "out"
    code, stdout = _run(["evaluate", "--data", str(root / "data"), "--model", str(bundle), "-o", str(out),
                         "--device", "cpu", "--targets", "t1c", "--save-volumes", "--segmenter", str(DEMO_SEGMENTER)])
    assert code == 0
    with open(out / "evaluation.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {"root": root, "out": out, "folders": dict(zip((LABELLED, UNLABELLED), folders)), "rows": rows,
            "stdout": stdout, "bundle": bundle}


def _row(rows: list, case: str, target: str, stage: str) -> dict:
    return next(r for r in rows if (r["case"], r["target"], r["stage"]) == (case, target, stage))


def test_unlabelled_case_is_found_and_incomplete_cases_still_refused(tmp_path, write_brats_case):
    folder = write_brats_case(tmp_path / "data", label=False)
    found = evaluation.find_evaluation_cases(tmp_path / "data")
    assert [c.folder for c in found] == [folder] and found[0].label is None
    with pytest.raises(evaluation.EvaluationError, match="no label map"):
        evaluation.read_label(found[0], sitk.ReadImage(str(next(iter(found[0].sequences.values())))))
    shutil.rmtree(folder)
    write_brats_case(tmp_path / "data", sequences=[s for s in SEQUENCES if s != Sequence.T2F], label=False)
    with pytest.raises(evaluation.EvaluationError, match="missing T2-FLAIR") as error:
        evaluation.find_evaluation_cases(tmp_path / "data")
    assert "\n" not in str(error.value)


def test_columns_and_label_sources(evaluated):
    rows = evaluated["rows"]
    columns = list(rows[0])
    for key in (*SEG_KEYS, *PSEUDO_KEYS, "label_source", "intensity", "intensity_value"):
        assert key in columns, key
    assert [(r["case"], r["target"], r["stage"]) for r in rows] == [
        (case, target, stage) for case in (LABELLED, UNLABELLED)
        for target, stage in (("t1c", "stage1"), ("t1c", "final"), ("none", "acquired"))]
    for row in rows:
        labelled = row["case"] == LABELLED
        assert row["label_source"] == ("truth" if labelled else "pseudo")
        assert row["intensity"] == "mean"
        for key in SEG_KEYS:  # Dice against the truth only where there is a label map
            assert (row[key] != "") is labelled, (row["case"], key)
        for key in PSEUDO_KEYS:  # Dice against the pseudo-label everywhere
            assert np.isfinite(float(row[key])), (row["case"], key)


def test_pseudo_label_is_the_segmenter_on_the_acquired_four_and_scores_one_against_itself(evaluated):
    out, rows = evaluated["out"], evaluated["rows"]
    segmenter_labels = {}
    for case in (LABELLED, UNLABELLED):
        pseudo = _read(out / f"{case}-segmentation-acquired.nii.gz")
        # the demo segmenter finds a real tumour in every scored region (whole tumour: any label; tumour core:
        # 1 or 3; enhancing: 3), so the 1.0 below is not "both empty"
        found = set(np.unique(pseudo).tolist())
        assert found <= {0, 1, 2, 3} and 3 in found and len(found - {0}) >= 2, (case, found)
        segmenter_labels[case] = pseudo
        reference = _row(rows, case, "none", "acquired")
        for region in ("WT", "TC", "ET"):
            assert float(reference[f"pseudo_dice_{region}"]) == 1.0
            assert float(reference[f"pseudo_hd95_{region}"]) == 0.0
    # the labelled case's reference row is scored against its real label map, and is not perfect
    truth_image = sitk.ReadImage(str(evaluated["folders"][LABELLED] / f"{LABELLED}-seg.nii.gz"))
    expected = metrics.segmentation_metrics(segmenter_labels[LABELLED], sitk.GetArrayFromImage(truth_image),
                                            truth_image.GetSpacing()[::-1])
    reference = _row(rows, LABELLED, "none", "acquired")
    for key in SEG_KEYS:
        assert float(reference[key]) == pytest.approx(expected[key], rel=1e-9, abs=1e-9), key
    assert float(reference["dice_WT"]) < 1.0


def test_pseudo_dice_of_completed_sets_equals_metrics_on_the_written_label_maps(evaluated):
    out, rows = evaluated["out"], evaluated["rows"]
    for case in (LABELLED, UNLABELLED):
        pseudo_image = sitk.ReadImage(str(out / f"{case}-segmentation-acquired.nii.gz"))
        pseudo = sitk.GetArrayFromImage(pseudo_image)
        spacing = pseudo_image.GetSpacing()[::-1]
        for stage, name in (("stage1", f"{case}-t1c-segmentation-stage1.nii.gz"),
                            ("final", f"{case}-t1c-segmentation.nii.gz")):
            predicted = _read(out / name)
            expected = metrics.segmentation_metrics(predicted, pseudo, spacing)
            row = _row(rows, case, "t1c", stage)
            for key in SEG_KEYS:
                assert float(row[f"pseudo_{key}"]) == pytest.approx(expected[key], rel=1e-9, abs=1e-9), (case, key)
            assert float(row["pseudo_dice_WT"]) < 1.0  # the tiny stage 1 does change the segmentation


def test_tumour_region_is_the_label_map_or_else_the_pseudo_label(evaluated):
    out, rows = evaluated["out"], evaluated["rows"]
    for case, folder in evaluated["folders"].items():
        acquired = {s: _read(folder / f"{case}-{s.value}.nii.gz") for s in SEQUENCES}
        brain = brain_mask(acquired.values())
        pseudo = (_read(out / f"{case}-segmentation-acquired.nii.gz") > 0) & brain
        truth_file = folder / f"{case}-seg.nii.gz"
        tumour = (_read(truth_file) > 0) & brain if truth_file.exists() else pseudo
        assert not np.array_equal(tumour, brain) and tumour.any()
        for stage, file_name in (("stage1", f"{case}-t1c-stage1.nii.gz"), ("final", f"{case}-t1c.nii.gz")):
            synthetic = _read(out / file_name)
            expected = metrics.image_metrics(acquired[Sequence.T1C], synthetic, brain, tumour)
            row = _row(rows, case, "t1c", stage)
            for key in IMAGE_KEYS:
                assert float(row[key]) == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (case, stage, key)
            if case == LABELLED:  # the label map, not the pseudo-label, when there is one
                with_pseudo = metrics.image_metrics(acquired[Sequence.T1C], synthetic, brain, pseudo)
                assert float(row["ssim_tumour"]) != pytest.approx(with_pseudo["ssim_tumour"], rel=1e-6)


def test_markdown_has_the_papers_pseudo_label_table_naming_the_segmenter(evaluated):
    text = (evaluated["out"] / "evaluation.md").read_text(encoding="utf-8")
    heading = "## Table 3 (pseudo-labels). Dice score against pseudo-labels"
    assert heading in text
    section = text.split(heading, 1)[1]
    assert str(DEMO_SEGMENTER) in section.split("|", 1)[0] and "FeTS" in section.split("|", 1)[0]
    table = table_lines(text, heading)
    assert table[0] == "| Method | WT | ET | TC | Avg |"
    rows = evaluated["rows"]
    final = [r for r in rows if r["stage"] == "final"]
    cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert cells[0] == "+ Refiner"
    for index, region in enumerate(("WT", "ET", "TC"), start=1):
        values = [float(r[f"pseudo_dice_{region}"]) for r in final]
        assert cells[index] == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
    averages = [np.mean([float(r[f"pseudo_dice_{g}"]) for g in ("WT", "ET", "TC")]) for r in final]
    assert cells[4] == f"{np.mean(averages):.4f} ± {np.std(averages, ddof=1):.4f}"
    # Dice against the truth: only the labelled case contributes
    truth_table = table_lines(text, "## Table 3. Dice score")
    labelled_final = float(_row(rows, LABELLED, "t1c", "final")["dice_WT"])
    assert truth_table[3].split(" | ")[1] == f"{labelled_final:.4f}"
    assert "Dice against the pseudo-labels" in evaluated["stdout"]


def test_all_unlabelled_run_with_the_bundles_own_segmenter(evaluated, tmp_path):
    """Only unlabelled cases: empty dice columns, Table 3 says so, the bundle's segmenter makes the labels."""
    data = tmp_path / "data"
    shutil.copytree(evaluated["folders"][UNLABELLED], data / UNLABELLED)
    bundle = tiny_bundle(tmp_path / "bundle", segmenter=True, refiner=False)
    out = tmp_path / "out"
    code, _ = _run(["evaluate", "--data", str(data), "--model", str(bundle), "-o", str(out), "--device", "cpu",
                    "--targets", "t2f"])
    assert code == 0
    with open(out / "evaluation.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["target"], r["stage"], r["label_source"]) for r in rows] == [
        ("t2f", "stage1", "pseudo"), ("none", "acquired", "pseudo")]
    assert all(r[key] == "" for r in rows for key in SEG_KEYS)
    assert float(rows[1]["pseudo_dice_WT"]) == 1.0 and rows[0]["pseudo_dice_WT"] != ""
    text = (out / "evaluation.md").read_text(encoding="utf-8")
    assert "No case has a label map" in text and "the segmenter of tiny" in text


def test_segmenter_folder_and_file_load_the_same_network():
    from_file = load_segmenter(DEMO_SEGMENTER)
    from_folder = load_segmenter(DEMO_SEGMENTER.parent)
    for (name, a), (_, b) in zip(from_file.state_dict().items(), from_folder.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("problem, expected", [
    ("missing", "no such segmenter checkpoint file or folder"),
    ("stage1", "holds a stage1 checkpoint, not a segmenter"),
    ("empty_folder", "no segmenter in this folder"),
    ("no_segmenter_bundle", "the bundle lists no segmenter"),
    ("not_a_checkpoint", "not a readable PyTorch checkpoint"),
])
def test_bad_segmenter_is_a_one_line_error_naming_it(evaluated, tmp_path, capsys, problem, expected):
    if problem == "missing":
        path = tmp_path / "nothing.pt"
    elif problem == "stage1":
        path = evaluated["bundle"] / "stage1.pt"
    elif problem == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif problem == "no_segmenter_bundle":
        path = evaluated["bundle"]  # the tiny bundle has no segmenter
    else:
        path = tmp_path / "weights.pt"
        path.write_bytes(b"FeTS weights would go here")
    out = tmp_path / "out"
    code, _ = _run(["evaluate", "--data", str(evaluated["folders"][LABELLED]), "--model", str(evaluated["bundle"]),
                    "-o", str(out), "--device", "cpu", "--segmenter", str(path)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error and str(path) in error
    assert not out.exists()
    with pytest.raises(CheckpointError, match=expected):
        load_segmenter(path)
