"""The ``mrisynth`` command: real files in, real files out, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib import __version__, metrics
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.io import image_description
from MRISynthesisLib.phantom import generate_case, write_case


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, save_tiny_bundle):
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle"), "tiny-cli")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return write_case(generate_case(21, small=True), tmp_path_factory.mktemp("cases"))


def _listing(folder) -> set:
    return {p.name for p in folder.iterdir()}


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and __version__ in capsys.readouterr().out
    completed = subprocess.run([sys.executable, "-m", "MRISynthesisLib.cli", "--help"], capture_output=True,
                               text=True, check=True)
    for command in ("phantom", "synthesize", "validate"):
        assert command in completed.stdout


def test_synthesize_case_folder_writes_exactly_the_expected_files(tmp_path, bundle_dir, case_dir):
    hidden = case_dir.parent / "partial"
    hidden.mkdir(exist_ok=True)
    for path in case_dir.glob("*-t[12][nwf].nii.gz"):  # t1n, t2w, t2f; T1c is missing
        (hidden / path.name).write_bytes(path.read_bytes())
    before = {p.name: p.read_bytes() for p in hidden.iterdir()}
    out = tmp_path / "out"
    assert main(["synthesize", str(hidden), "-o", str(out), "--model", str(bundle_dir), "--device", "cpu"]) == 0
    case = "Phantom-00021"
    expected = {f"{case}-t1c.nii.gz", f"{case}-t1c-stage1.nii.gz", f"{case}-t1c-refinement.nii.gz",
                f"{case}-t1c-tumor-map.nii.gz", f"{case}-report.json"}
    assert _listing(out) == expected
    report = json.loads((out / f"{case}-report.json").read_text())
    assert report["case"] == case and report["synthetic"] is True
    assert report["model"]["name"] == "tiny-cli" and report["device"] == "cpu"
    assert set(report["inputs"]) == {"t1n", "t2w", "t2f"}
    roles = report["targets"]["t1c"]["outputs"]
    assert set(roles) == {"synthetic", "stage1", "refinement_map", "tumour_map"}
    assert report["targets"]["t1c"]["synthesised_from"] == ["t1n", "t2w", "t2f"]
    assert report["timings_s"]["total_s"] > 0
    synthetic = sitk.ReadImage(roles["synthetic"])
    reference = sitk.ReadImage(str(hidden / f"{case}-t1n.nii.gz"))
    assert synthetic.GetSize() == reference.GetSize()
    assert np.allclose(synthetic.GetSpacing(), reference.GetSpacing())
    assert np.allclose(synthetic.GetOrigin(), reference.GetOrigin())
    assert np.allclose(synthetic.GetDirection(), reference.GetDirection())
    assert image_description(roles["synthetic"]).startswith("SYNTHETIC T1c from T1+T2+FLAIR")
    assert {p.name: p.read_bytes() for p in hidden.iterdir()} == before, "inputs must not change"


def test_synthesize_with_explicit_inputs_and_targets(tmp_path, bundle_dir, case_dir):
    out = tmp_path / "out"
    code = main(["synthesize", "--input", f"T2={case_dir / 'Phantom-00021-t2w.nii.gz'}",
                 "--input", f"flair={case_dir / 'Phantom-00021-t2f.nii.gz'}", "--targets", "t1n,T1ce",
                 "--case", "p21", "-o", str(out), "--model", str(bundle_dir), "--no-tumour-maps"])
    assert code == 0
    assert _listing(out) == {"p21-t1n.nii.gz", "p21-t1n-stage1.nii.gz", "p21-t1n-refinement.nii.gz",
                             "p21-t1c.nii.gz", "p21-t1c-stage1.nii.gz", "p21-t1c-refinement.nii.gz",
                             "p21-report.json"}


def test_validate_writes_metrics_that_match_metrics_py(tmp_path, bundle_dir, case_dir, capsys):
    out = tmp_path / "val"
    assert main(["validate", str(case_dir), "-o", str(out), "--model", str(bundle_dir)]) == 0
    printed = capsys.readouterr().out
    assert "t1c (final)" in printed and "ssim" in printed
    case = "Phantom-00021"
    assert (out / f"{case}-validation.md").is_file() and (out / f"{case}-report.json").is_file()
    rows = (out / f"{case}-validation.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:2] == ["target", "stage"] and len(rows) == 1 + 8
    final_t2w = dict(zip(header, next(r for r in rows[1:] if r.startswith("t2w,final")).split(",")))
    synthetic = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}-t2w.nii.gz")))
    acquired = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / f"{case}-t2w.nii.gz"))).astype(np.float32)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}-t2w-error-map.nii.gz"))) != 0
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / f"{case}-seg.nii.gz"))) > 0
    union = np.any([sitk.GetArrayFromImage(sitk.ReadImage(str(p))) != 0
                    for p in case_dir.glob("*-t*.nii.gz")], axis=0)
    from MRISynthesisLib.core.preprocessing import brain_mask

    brain = brain_mask([union])
    expected = metrics.image_metrics(acquired, synthetic, brain, label & brain)
    assert float(final_t2w["ssim"]) == pytest.approx(expected["ssim"], abs=1e-6)
    assert float(final_t2w["psnr"]) == pytest.approx(expected["psnr"], abs=1e-4)


def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, bundle_dir, case_dir, capsys):
    out = tmp_path / "out"
    broken = tmp_path / "broken-t1n.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    cases = [
        (["synthesize", "--input", f"t1n={broken}", "-o", str(out), "--model", str(bundle_dir)], "broken-t1n.nii.gz"),
        (["synthesize", "--input", f"dwi={broken}", "-o", str(out), "--model", str(bundle_dir)], "unknown sequence"),
        (["synthesize", str(case_dir), "-o", str(out), "--model", str(bundle_dir)], "nothing is missing"),
        (["synthesize", str(case_dir), "-o", str(out), "--model", str(tmp_path / "none")], "no such model"),
        (["validate", str(tmp_path), "-o", str(out), "--model", str(bundle_dir)], "validation needs all four sequences"),
        (["synthesize", str(case_dir), "--input", f"T1={broken}", "-o", str(out), "--model", str(bundle_dir)],
         "two files for T1"),
        (["synthesize", "--input", f"t2w={broken}", "--input", f"T2={broken}", "-o", str(out),
          "--model", str(bundle_dir)], "two files for T2"),
        (["synthesize", "--input", str(broken), "-o", str(out), "--model", str(bundle_dir)], "expected SEQ=PATH"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mrisynth: error:") and fragment in err and "\n" not in err
        assert not out.exists() or not any(out.iterdir()), "a failed run leaves no output"


def test_phantom_command(tmp_path):
    assert main(["phantom", "-o", str(tmp_path), "--cases", "1", "--seed", "4", "--small"]) == 0
    folder = tmp_path / "Phantom-00004"
    assert {p.name for p in folder.glob("*.nii.gz")} == {f"Phantom-00004-{s}.nii.gz"
                                                         for s in ("t1n", "t1c", "t2w", "t2f", "seg")}


def test_training_choices_match_the_options_they_set():
    """The CLI spells the --keep and --input-patterns choices out (to stay light to import); they must agree."""
    from MRISynthesisLib.cli.main import build_parser
    from MRISynthesisLib.training.options import INPUT_PATTERNS, KEEP_CHOICES

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if hasattr(a, "choices") and isinstance(a.choices, dict))
    for command in ("stage1", "segmenter", "stage2"):
        actions = {a.dest: a for a in train.choices[command]._actions}
        assert tuple(actions["keep"].choices) == KEEP_CHOICES
        if command != "segmenter":
            assert tuple(actions["input_patterns"].choices) == INPUT_PATTERNS
