"""``mrisynth reproduce`` end to end on small phantoms with tiny budgets: every stage and ablation is
trained, every evaluation runs with the BraSyn protocol, Tables 1-4 carry the paper's numbers beside
the reproduced ones, a second run resumes instead of starting over, and the time estimate of the
full recipe is the measured step time times the recipe's steps."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from MRISynthesisLib import phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.evaluation.paper_tables import PUBLISHED, read_rows
from MRISynthesisLib.training.presets import preset_values
from MRISynthesisLib.training.reproduction import EVALUATIONS, RUNS, full_recipe_estimate

pytestmark = pytest.mark.slow

TINY = ["--device", "cpu", "--config", "small", "--stage1-epochs", "1", "--segmenter-epochs", "1",
        "--stage2-epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--image-size", "96",
        "--crop-size", "32", "--val-cases", "1"]


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    """One tiny reproduction on four small phantom cases (three trained on, one held out)."""
    root = tmp_path_factory.mktemp("reproduce")
    phantom.generate_cases(root / "data", 4, 300, grid="small")
    output = root / "out"
    code = main(["reproduce", "--data", str(root / "data"), "-o", str(output), *TINY])
    assert code == 0
    return root, output


def _cell(tables: str, row: str, column: int) -> str:
    """The text of one cell (0 = first value column) of the first table row named ``row``."""
    line = next(line for line in tables.splitlines() if line.startswith(f"| {row} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1 + column]


def test_every_model_and_evaluation_exists(reproduction):
    _, output = reproduction
    for run, switches in RUNS.items():
        bundle = json.loads((output / "runs" / run / "bundle.json").read_text(encoding="utf-8"))
        ablation = bundle["metadata"]["training"]["stage1"]["ablation"]
        assert ablation["intensity_encoding"] == ("--no-intensity-encoding" not in switches)
        assert ablation["ssim_loss"] == ("--no-ssim-loss" not in switches)
        assert ablation["tumour_ssim_loss"] == ("--no-tumour-ssim-loss" not in switches)
    expected_rows = {"hfgan": "HF-GAN", "ssim-loss": "+SSIM loss", "two-stage": "+Intensity Encoding"}
    for run, row in expected_rows.items():
        recipe = json.loads((output / "runs" / run / "stage1-recipe.json").read_text(encoding="utf-8"))
        assert recipe["ablation"]["table1_row"] == row
    assert (output / "runs" / "two-stage" / "refiner.pt").is_file()
    assert (output / "runs" / "two-stage" / "segmenter.pt").is_file()
    held_out = sorted(p.name for p in (output / "data" / "held-out").iterdir())
    trained_on = sorted(p.name for p in (output / "data" / "train").iterdir())
    assert held_out == ["Phantom-00303"] and not set(held_out) & set(trained_on)
    for run, intensity in EVALUATIONS:
        rows = read_rows(output / "evaluations" / f"{run}-{intensity}" / "evaluation.csv")
        assert {row["protocol"] for row in rows} == {"brasyn"}
        assert {row["intensity"] for row in rows if row["stage"] != "acquired"} == {intensity}


def test_tables_hold_reproduced_and_published_numbers(reproduction):
    _, output = reproduction
    tables = (output / "tables.md").read_text(encoding="utf-8")
    for heading in ("Table 1.", "Table 2.", "Table 3.", "Table 4."):
        assert heading in tables
    # Table 1, "+Intensity Encoding (mean)", T1: the mean stage-1 SSIM-Whole of the t1n rows, and the paper's.
    rows = read_rows(output / "evaluations" / "two-stage-mean" / "evaluation.csv")
    t1 = np.mean([r["ssim_whole"] for r in rows if r["stage"] == "stage1" and r["target"] == "t1n"])
    published = PUBLISHED["table1"]["+Intensity Encoding (mean)"][0]
    assert _cell(tables, "+Intensity Encoding (mean)", 0) == f"{t1:.4f} ({published:.4f}, {t1 - published:+.4f})"
    # Table 3, after the Refiner, WT: pseudo-label Dice of the final rows.
    wt = np.mean([r["pseudo_dice_WT"] for r in rows if r["stage"] == "final"])
    table3 = tables[tables.index("## Table 3."):tables.index("## Table 4.")]
    assert _cell(table3, "+ Refiner", 0) == f"{wt:.4f} (0.9318, {wt - 0.9318:+.4f})"
    # every row of Table 1 was measured (no n/a left)
    table1 = tables[tables.index("## Table 1."):tables.index("## Table 2.")]
    assert "n/a" not in table1
    for name in PUBLISHED["table1"]:
        assert f"| {name} |" in table1


def test_time_estimate_is_measured_step_time_times_recipe_steps(reproduction):
    _, output = reproduction
    history = json.loads((output / "runs" / "two-stage" / "stage1-metrics.json").read_text(encoding="utf-8"))
    recipe = json.loads((output / "runs" / "two-stage" / "stage1-recipe.json").read_text(encoding="utf-8"))
    per_step = sum(e["step_s"] * e["steps"] for e in history) / sum(e["steps"] for e in history)
    steps = preset_values("stage1", "small")["epochs"] * recipe["full_epoch_steps"]
    entry = full_recipe_estimate(output, "small")["two-stage/stage1"]
    assert entry["full_recipe_steps"] == steps and entry["measured_steps"] == 2
    assert entry["full_recipe_hours"] == pytest.approx(per_step * steps / 3600.0, abs=0.01)
    # this run changed the slice size and the batch: its step is not the recipe's, and the record says so
    recorded = json.loads((output / "reproduction.json").read_text(encoding="utf-8"))["full_recipe_estimate"]["two-stage/stage1"]
    assert recorded["full_recipe_hours"] is None and "--image-size" in recorded["why"]
    tables = (output / "tables.md").read_text(encoding="utf-8")
    assert "changed by --stage1-epochs 1" in tables and "not comparable with the paper" in tables


def test_second_run_resumes_where_the_first_stopped(reproduction, capsys):
    root, output = reproduction
    # an interrupted evaluation and an interrupted training (its resumable state kept, its result gone)
    shutil.rmtree(output / "evaluations" / "two-stage-gt")
    (output / "runs" / "hfgan" / "stage1.pt").unlink()
    capsys.readouterr()
    assert main(["reproduce", "--data", str(root / "data"), "-o", str(output), *TINY]) == 0
    printed = capsys.readouterr().out
    steps = len(RUNS) + 2 + len(EVALUATIONS)  # stage-1 models, segmenter, Refiner, evaluations
    # made again: the interrupted training, the lost evaluation and the evaluation of the retrained model
    assert printed.count("done earlier") == steps - 3
    assert "evaluate hfgan (mean) ..." in printed
    assert (output / "runs" / "hfgan" / "stage1.pt").is_file()
    commands = [line for line in next((output / "logs").glob("01-*.log")).read_text(encoding="utf-8").splitlines()
                if line.startswith("$ mrisynth train stage1")]
    assert len(commands) == 2 and "--resume" not in commands[0] and commands[1].endswith("--resume")
    assert (output / "evaluations" / "two-stage-gt" / "evaluation.csv").is_file()


def test_bad_budget_is_one_line(tmp_path, capsys):
    code = main(["reproduce", "--data", str(tmp_path), "-o", str(tmp_path / "out"), "--stage1-epochs", "0"])
    error = capsys.readouterr().err.strip()
    assert code != 0 and "--stage1-epochs must be at least 1" in error and "\n" not in error


def test_another_reproduction_in_the_same_folder_is_refused(reproduction, tmp_path, capsys):
    root, output = reproduction
    other = tmp_path / "other-data"
    shutil.copytree(root / "data", other)
    code = main(["reproduce", "--data", str(other), "-o", str(output), *TINY])
    error = capsys.readouterr().err.strip()
    assert code != 0 and "use another --output-dir" in error and "\n" not in error
    changed = [arg if arg != "2" else "3" for arg in TINY]  # other budgets, same data
    code = main(["reproduce", "--data", str(root / "data"), "-o", str(output), *changed])
    error = capsys.readouterr().err.strip()
    assert code != 0 and "made by another command" in error and "\n" not in error
