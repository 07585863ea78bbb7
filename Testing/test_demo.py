"""``mrisynth demo`` and the montage: a real phantom case, a real tiny bundle, real files checked."""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from MRISynthesisLib.evaluation import demo_case as demo, montage
from MRISynthesisLib import metrics, phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.pipeline import TargetResult
from MRISynthesisLib.core.preprocessing import brain_mask
from MRISynthesisLib.sequences import SEQUENCES, Sequence
from MRISynthesisLib.core.bundles import ModelBundle

from test_evaluation import tiny_bundle

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- fast


def test_demo_seed_comes_from_the_bundle_and_warns_inside_the_training_range():
    bundle = ModelBundle(name="m", stage1=None, metadata={"training_seeds": [0, 99], "demo_seed": 500})
    assert demo.demo_seed(bundle) == (500, [])
    assert demo.demo_seed(ModelBundle(name="m", stage1=None)) == (demo.DEFAULT_SEED, [])
    seed, notes = demo.demo_seed(bundle, 42)
    assert seed == 42 and len(notes) == 1 and "0-99" in notes[0]
    assert demo.demo_seed(bundle, 100) == (100, [])


def test_demo_says_when_the_model_grid_is_coarser_than_the_case():
    from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator

    small_case = phantom.generate_case(2, small=True).images[Sequence.T1C]  # 2.5 mm
    full_grid = sitk.Image([240, 240, 155], sitk.sitkFloat32)  # 1 mm, the BraTS grid
    at_2_5_mm = HFGANGenerator(HFGANConfig.small(image_size=96))
    assert demo.resolution_note(at_2_5_mm, small_case) is None
    note = demo.resolution_note(at_2_5_mm, full_grid)
    assert "2.5 mm grid" in note and "1 mm voxels" in note and "\n" not in note
    assert demo.resolution_note(HFGANGenerator(HFGANConfig.small(image_size=240)), full_grid) is None


def test_format_table_rounds_and_marks_missing_values():
    values = {"ssim": 0.91234, "ssim_tumour": math.nan, "ssim_healthy": 0.5, "ssim_volume": 0.97,
              "psnr": 23.456, "psnr_tumour": 19.0, "psnr_healthy": math.inf}
    text = demo.format_table({"stage1": values, "final": dict(values, ssim=0.8)})
    lines = text.splitlines()
    assert "SSIM" in lines[0] and "PSNR (dB)" in lines[0]
    assert lines[1].split() == ["whole", "tumour", "healthy", "volume", "whole", "tumour", "healthy"]
    assert lines[2].split() == ["stage", "1", "0.9123", "n/a", "0.5000", "0.9700", "23.46", "19.00", "n/a"]
    assert lines[3].split()[:2] == ["final", "0.8000"]


def test_demo_rejects_an_unknown_sequence_in_one_line(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--missing", "pd"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pd" in error
    assert not (tmp_path / "d").exists()


def _image(array: np.ndarray, spacing=(1.2, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    return image


@pytest.fixture(scope="module")
def toy():
    """An ellipsoid 'brain' with a spherical 'tumour' off centre; spacing anisotropic."""
    z, y, x = np.indices((30, 48, 40))
    brain = ((z - 15) / 13.0) ** 2 + ((y - 24) / 21.0) ** 2 + ((x - 20) / 17.0) ** 2 < 1
    tumour = (z - 18) ** 2 + (y - 30) ** 2 + (x - 12) ** 2 < 5 ** 2
    rng = np.random.default_rng(0)
    texture = rng.uniform(0.8, 1.2, brain.shape)
    images = {s: _image(np.where(brain, (i + 1) * 100 * texture + 300 * tumour, 0)) for i, s in enumerate(SEQUENCES)}
    synthetic = _image(np.where(brain, 900 * texture, 0))
    stage1 = _image(np.where(brain, 880 * texture, 0))
    change = sitk.GetArrayFromImage(synthetic) - sitk.GetArrayFromImage(stage1)
    mask = sitk.Cast(_image(tumour), sitk.sitkUInt8)
    target = TargetResult(sequence=Sequence.T1C, synthetic=synthetic, stage1=stage1,
                          refinement_map=_image(change), tumour_map=_image(np.abs(change) * tumour),
                          tumour_mask=mask, sources=[Sequence.T1N, Sequence.T2W, Sequence.T2F])
    label = sitk.Cast(_image(tumour.astype(np.uint8) * 2), sitk.sitkUInt8)
    return {"images": images, "target": target, "label": label, "tumour": tumour, "brain": brain}


def test_montage_has_the_planned_size_and_content(tmp_path, toy):
    inputs = {s: toy["images"][s] for s in (Sequence.T1N, Sequence.T2W, Sequence.T2F)}
    path = montage.save_montage(tmp_path / "m.png", inputs, toy["target"], ground_truth=toy["images"][Sequence.T1C],
                                label=toy["label"], title="toy")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert montage.montage_size(7) == (1585, 1080)  # 0.45 + 7 x 2.2 in by 0.85 + 4 x 2.3 + 0.75 in at 100 dpi
    with Image.open(path) as picture:
        assert picture.size == montage.montage_size(7)
        pixels = np.asarray(picture.convert("L"), dtype=float)
    assert pixels.std() > 20
    bare = TargetResult(sequence=Sequence.T1C, synthetic=toy["target"].synthetic, stage1=toy["target"].stage1)
    path = montage.save_montage(tmp_path / "bare.png", inputs, bare)
    with Image.open(path) as picture:
        assert picture.size == montage.montage_size(4)  # three inputs + the synthetic


def test_montage_slices_through_the_tumour_centre(toy):
    assert montage.tumour_centre(toy["tumour"], toy["brain"]) == (18, 30, 12)
    assert montage.tumour_centre(np.zeros_like(toy["tumour"]), toy["brain"]) == (15, 24, 20)


# --------------------------------------------------------------------------- slow: the whole command


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    bundle = tiny_bundle(root / "bundle")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["metadata"] = {"training_seeds": [0, 5], "demo_seed": 7}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    out = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--small", "--model", str(bundle), "-o", str(out), "--device", "cpu"])
    assert code == 0
    return {"out": out, "stdout": stdout.getvalue()}


@pytest.mark.slow
def test_demo_writes_exactly_the_expected_files(demo_run):
    case = "Phantom-00007"
    expected = {f"{case}-{s}.nii.gz" for s in ("t1n", "t2w", "t2f", "seg", "t1c-ground-truth", "t1c",
                                                 "t1c-stage1", "t1c-refinement", "t1c-tumor-map",
                                                 "t1c-error-map")}
    expected |= {f"{case}-report.json", "montage.png", ".mrisynth-demo.json"}
    assert {p.name for p in demo_run["out"].iterdir()} == expected
    with Image.open(demo_run["out"] / "montage.png") as picture:
        assert picture.size == montage.montage_size(7)
    report = json.loads((demo_run["out"] / f"{case}-report.json").read_text())
    assert report["demo"]["phantom_seed"] == 7 and report["demo"]["hidden"] == "t1c"
    assert report["targets"]["t1c"]["synthesised_from"] == ["t1n", "t2w", "t2f"]


@pytest.mark.slow
def test_demo_inputs_and_hidden_truth_are_the_phantom_case(demo_run):
    case = phantom.generate_case(7, small=True)
    out = demo_run["out"]
    for sequence in (Sequence.T1N, Sequence.T2W, Sequence.T2F):
        written = sitk.ReadImage(str(out / f"Phantom-00007-{sequence.value}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(case.images[sequence]))
        assert written.GetSpacing() == case.images[sequence].GetSpacing()
    truth = sitk.ReadImage(str(out / "Phantom-00007-t1c-ground-truth.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(truth), sitk.GetArrayFromImage(case.images[Sequence.T1C]))


@pytest.mark.slow
def test_demo_prints_metrics_equal_to_metrics_py_on_the_written_files(demo_run):
    out = demo_run["out"]

    def read(name):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"Phantom-00007-{name}.nii.gz")))

    brain = brain_mask([read(s) for s in ("t1n", "t2w", "t2f")])
    tumour = (read("seg") > 0) & brain
    truth = read("t1c-ground-truth")
    lines = demo_run["stdout"].splitlines()
    for stage, name in (("stage 1", "t1c-stage1"), ("final", "t1c")):
        synthetic = read(name)
        values = metrics.image_metrics(truth, synthetic, brain, tumour)
        a, b = metrics.normalise_for_metrics(truth, brain), metrics.normalise_for_metrics(synthetic, brain)
        psnr = [metrics.psnr(a, b, region, data_range=1.0) for region in (brain, tumour, brain & ~tumour)]
        expected = ([f"{values[k]:.4f}" for k in ("ssim", "ssim_tumour", "ssim_healthy", "ssim_volume")]
                    + [f"{v:.2f}" for v in psnr])
        row = next(line for line in lines if line.startswith(stage))
        assert row[len(stage):].split() == expected
    assert "montage.png" in demo_run["stdout"] and "ground-truth" in demo_run["stdout"]
