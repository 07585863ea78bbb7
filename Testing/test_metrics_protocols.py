"""Scoring protocols (``metrics.protocols``, ``metrics.brasyn``): the BraSyn numbers equal torchmetrics run the
way BraSyn's scripts run it (written again here, independently), the brain protocol is the old image_metrics,
and ``mrisynth evaluate``/``validate --protocol brasyn`` write the protocol and the torchmetrics version.

Real phantom volumes, real files, real torch and torchmetrics; the tiny bundles are real networks.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torchmetrics
from scipy import ndimage

from MRISynthesisLib import metrics, phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.metrics import MetricsError, protocol_columns, protocol_metrics
from MRISynthesisLib.sequences import Sequence
from MRISynthesisLib.worker.protocol import RequestError, WorkerRequest, read_request, write_request

BRASYN_KEYS = ("ssim_whole", "ssim_tumour", "ssim_healthy", "psnr_whole", "psnr_tumour", "psnr_healthy",
               "mse_whole", "mse_tumour", "mse_healthy")


def brasyn_by_hand(acquired: np.ndarray, synthetic: np.ndarray, label: np.ndarray) -> dict:
    """BraSyn's convention, written out: own whole-volume 0.5/99.5 percentiles (low bound >= 0), clip, scale,
    then torchmetrics on (1, 1, Z, Y, X) tensors, preds = synthetic; regions by multiplication with the mask."""
    from torchmetrics.functional.image import peak_signal_noise_ratio
    from torchmetrics.functional.regression import mean_squared_error
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    def to_unit(volume: np.ndarray) -> np.ndarray:
        values = volume.astype(np.float64)
        low, high = np.percentile(values, 0.5), np.percentile(values, 99.5)
        low = max(low, 0.0)
        return (np.clip(values, low, high) - low) / (high - low)

    truth, synth = to_unit(acquired), to_unit(synthetic)
    mask = (label > 0).astype(np.float64)
    out = {}
    for name, weight in (("whole", np.ones_like(mask)), ("tumour", mask), ("healthy", 1.0 - mask)):
        preds = torch.tensor(synth * weight, dtype=torch.float32).unsqueeze(0).unsqueeze(0)
        target = torch.tensor(truth * weight, dtype=torch.float32).unsqueeze(0).unsqueeze(0)
        out[f"ssim_{name}"] = float(StructuralSimilarityIndexMeasure()(preds, target))
        out[f"psnr_{name}"] = float(peak_signal_noise_ratio(preds, target, data_range=1.0))
        out[f"mse_{name}"] = float(mean_squared_error(preds, target))
    return out


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(np.float32)


@pytest.fixture(scope="module")
def case():
    """A small phantom case (96 x 96 x 64, with a tumour) as arrays."""
    made = phantom.generate_case(7, grid="small")
    return {"images": {s: _array(made.images[s]) for s in made.images},
            "label": sitk.GetArrayFromImage(made.label)}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, save_tiny_bundle):
    return save_tiny_bundle(tmp_path_factory.mktemp("bundle"), "tiny-protocols")


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    return phantom.write_case(phantom.generate_case(23, small=True), tmp_path_factory.mktemp("cases"))


# --------------------------------------------------------------------------- the numbers


def test_brasyn_equals_torchmetrics_by_hand_on_a_phantom_pair(case):
    acquired, synthetic = case["images"][Sequence.T2W], case["images"][Sequence.T2F]
    label = case["label"]
    assert (label > 0).any()
    brain = acquired > 0

    scores = protocol_metrics("brasyn", acquired, synthetic, brain, label > 0)

    assert tuple(scores) == protocol_columns("brasyn") == BRASYN_KEYS
    expected = brasyn_by_hand(acquired, synthetic, label)
    for key in BRASYN_KEYS:
        assert scores[key] == pytest.approx(expected[key], abs=1e-4), key
    # The three regions are really different numbers (not the same computation thrice).
    assert len({round(scores[k], 4) for k in ("ssim_whole", "ssim_tumour", "ssim_healthy")}) == 3


def test_brasyn_on_files_with_a_negative_offset_and_an_intensity_scale(tmp_path, case):
    """A synthetic volume that is blurred, scaled and shifted below 0 (its low percentile is negative and is
    raised to 0), written and read as NIfTI: still exactly BraSyn's numbers."""
    acquired = case["images"][Sequence.T1C]
    synthetic = ndimage.gaussian_filter(acquired, 1.2) * 3.0 - 150.0
    paths = {}
    for name, array in (("acquired", acquired), ("synthetic", synthetic)):
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.SetSpacing((2.5, 2.5, 2.5))
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    acquired_read = _array(sitk.ReadImage(str(paths["acquired"])))
    synthetic_read = _array(sitk.ReadImage(str(paths["synthetic"])))
    assert np.percentile(synthetic_read, 0.5) < 0

    scores = protocol_metrics("brasyn", acquired_read, synthetic_read, acquired_read > 0, case["label"] > 0)

    expected = brasyn_by_hand(acquired_read, synthetic_read, case["label"])
    for key in BRASYN_KEYS:
        assert scores[key] == pytest.approx(expected[key], abs=1e-4), key


def test_brasyn_without_or_with_an_empty_tumour_mask(case):
    acquired, synthetic = case["images"][Sequence.T2W], case["images"][Sequence.T1N]
    brain = acquired > 0
    without = protocol_metrics("brasyn", acquired, synthetic, brain, None)
    assert all(math.isnan(without[f"{m}_{r}"]) for m in ("ssim", "psnr", "mse") for r in ("tumour", "healthy"))
    assert not math.isnan(without["ssim_whole"])
    empty = protocol_metrics("brasyn", acquired, synthetic, brain, np.zeros(acquired.shape, dtype=bool))
    assert math.isnan(empty["ssim_tumour"]) and math.isnan(empty["psnr_tumour"])
    # An empty tumour mask leaves the whole volume healthy: its complement multiplies by 1.
    assert empty["ssim_healthy"] == pytest.approx(without["ssim_whole"], abs=1e-6)
    assert empty["mse_healthy"] == pytest.approx(without["mse_whole"], abs=1e-9)


def test_brain_protocol_is_image_metrics_unchanged(case):
    acquired, synthetic = case["images"][Sequence.T2W], case["images"][Sequence.T2F]
    brain = acquired > 0
    tumour = case["label"] > 0
    scores = protocol_metrics("brain", acquired, synthetic, brain, tumour)
    assert scores == metrics.image_metrics(acquired, synthetic, brain, tumour)
    assert tuple(scores) == protocol_columns("brain") == metrics.IMAGE_METRICS


def test_brasyn_identical_volumes_score_one(case):
    acquired = case["images"][Sequence.T1N]
    scores = protocol_metrics("brasyn", acquired, acquired.copy(), acquired > 0, case["label"] > 0)
    assert scores["ssim_whole"] == pytest.approx(1.0, abs=1e-5)
    assert scores["mse_whole"] == 0.0 and math.isinf(scores["psnr_whole"])


@pytest.mark.parametrize("name", ["BraSyn", "whole", None, ""])
def test_an_unknown_protocol_is_one_line(case, name):
    acquired = case["images"][Sequence.T1N]
    with pytest.raises(MetricsError) as error:
        protocol_metrics(name, acquired, acquired, acquired > 0, None)
    message = str(error.value)
    assert message == f"metrics protocol {name!r} is unknown; expected one of brain, brasyn"
    with pytest.raises(MetricsError, match="is unknown"):
        protocol_columns(name)


def test_protocol_descriptions_and_provenance():
    assert "brain" in metrics.protocol_description("brain")
    assert "torchmetrics" in metrics.protocol_description("brasyn")
    assert metrics.protocol_provenance("brain") == {"metrics_protocol": "brain"}
    assert metrics.protocol_provenance("brasyn") == {"metrics_protocol": "brasyn",
                                                      "torchmetrics_version": torchmetrics.__version__}


def test_a_torchvision_that_cannot_load_is_named_in_one_line(tmp_path):
    """The real failure: a torchvision installed beside torch that raises when imported (a CUDA build next to a
    CPU torch does so). torchmetrics imports it; the error must say so in one line, not hide it."""
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    (site / "torchvision-0.99.0.dist-info").mkdir()
    (site / "torchvision-0.99.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0\n")
    code = ("import sys\nfrom MRISynthesisLib.metrics.brasyn import load_torchmetrics\n"
            "try:\n    load_torchmetrics()\nexcept Exception as error:\n    print(type(error).__name__, error)\n"
            "    sys.exit(3)\n")
    env = {"PYTHONPATH": f"{site}:{':'.join(sys.path[1:])}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 3, done.stderr
    line = done.stdout.strip()
    assert "\n" not in line and line.startswith("MetricsError torchmetrics cannot be imported")
    assert "torchvision::nms does not exist" in line and "torchvision build cannot load with this torch" in line


def test_synthesize_refuses_an_unknown_protocol_before_loading_a_model(tmp_path, case):
    from MRISynthesisLib.core.pipeline import synthesize

    images = {s: sitk.GetImageFromArray(case["images"][s]) for s in (Sequence.T1N, Sequence.T2W, Sequence.T2F)}
    with pytest.raises(MetricsError, match=r"^metrics protocol 'paper' is unknown"):
        synthesize(images, tmp_path / "no-such-bundle", metrics_protocol="paper")


def test_worker_request_carries_the_protocol(tmp_path):
    image = tmp_path / "t1n.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 4, 4), np.float32)), str(image))
    request = WorkerRequest(kind="validation", inputs={Sequence.T1N: image.name}, metrics_protocol="brasyn")
    path = write_request(request, tmp_path / "request.json")
    assert read_request(path).metrics_protocol == "brasyn"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("metrics_protocol")
    path.write_text(json.dumps(data))
    assert read_request(path).metrics_protocol == "brain"  # older requests: the default
    data["metrics_protocol"] = "paper"
    path.write_text(json.dumps(data))
    with pytest.raises(RequestError) as error:
        read_request(path)
    assert str(error.value) == f"{path}: field 'metrics_protocol' is 'paper'; expected brain or brasyn"


# --------------------------------------------------------------------------- the commands


def test_validate_brasyn_writes_the_protocol_the_version_and_torchmetrics_numbers(tmp_path, tiny_bundle,
                                                                                   case_dir, capsys):
    out = tmp_path / "val"
    assert main(["validate", str(case_dir), "-o", str(out), "--model", str(tiny_bundle), "--device", "cpu",
                 "--protocol", "brasyn"]) == 0
    printed = capsys.readouterr().out
    assert f"Scoring protocol: brasyn (torchmetrics {torchmetrics.__version__})" in printed
    assert "ssim_whole" in printed and "t1c (final)" in printed
    case = case_dir.name
    with open(out / f"{case}-validation.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["target", "stage", "protocol", *BRASYN_KEYS] and len(rows) == 8
    assert {row["protocol"] for row in rows} == {"brasyn"}
    report = json.loads((out / f"{case}-report.json").read_text(encoding="utf-8"))
    assert report["metrics_protocol"] == "brasyn" and report["torchmetrics_version"] == torchmetrics.__version__
    assert set(report["targets"]["t2w"]["metrics"]) == set(BRASYN_KEYS)
    summary = (out / f"{case}-validation.md").read_text(encoding="utf-8")
    assert f"torchmetrics {torchmetrics.__version__}" in summary and "BraSyn protocol" in summary

    final = next(row for row in rows if row["target"] == "t2w" and row["stage"] == "final")
    synthetic = _array(sitk.ReadImage(str(out / f"{case}-t2w.nii.gz")))
    acquired = _array(sitk.ReadImage(str(case_dir / f"{case}-t2w.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / f"{case}-seg.nii.gz")))
    expected = brasyn_by_hand(acquired, synthetic, label)
    for key in BRASYN_KEYS:
        assert float(final[key]) == pytest.approx(expected[key], abs=1e-4), key


def test_validate_brain_says_its_protocol_and_keeps_its_columns(tmp_path, tiny_bundle, case_dir, capsys):
    out = tmp_path / "val"
    assert main(["validate", str(case_dir), "-o", str(out), "--model", str(tiny_bundle), "--device", "cpu"]) == 0
    assert "Scoring protocol: brain\n" in capsys.readouterr().out
    case = case_dir.name
    header = (out / f"{case}-validation.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["target", "stage", "protocol", *metrics.IMAGE_METRICS]
    report = json.loads((out / f"{case}-report.json").read_text(encoding="utf-8"))
    assert report["metrics_protocol"] == "brain" and "torchmetrics_version" not in report


def test_evaluate_brasyn_writes_the_protocol_column_and_the_papers_tables(tmp_path, tiny_bundle, case_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / case_dir.name).symlink_to(case_dir, target_is_directory=True)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--model", str(tiny_bundle), "-o", str(out), "--device", "cpu",
                 "--targets", "t1c", "--protocol", "brasyn", "--save-volumes"]) == 0
    printed = capsys.readouterr().out
    line = f"Scoring protocol: brasyn (torchmetrics {torchmetrics.__version__})"
    assert line in printed and "SSIM-Tumour region" in printed
    with open(out / "evaluation.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:4 + len(BRASYN_KEYS)] == ["case", "target", "stage", "protocol", *BRASYN_KEYS]
    assert [(r["target"], r["stage"], r["protocol"]) for r in rows] == [("t1c", "stage1", "brasyn"),
                                                                       ("t1c", "final", "brasyn")]
    summary = (out / "evaluation.md").read_text(encoding="utf-8")
    assert line in summary and "## Table 1. SSIM-Whole" in summary and "SSIM-Healthy region" in summary
    assert "## MSE" in summary and "## NMSE" not in summary

    case = case_dir.name
    acquired = _array(sitk.ReadImage(str(case_dir / f"{case}-t1c.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / f"{case}-seg.nii.gz")))
    for row, name in ((rows[0], f"{case}-t1c-stage1.nii.gz"), (rows[1], f"{case}-t1c.nii.gz")):
        expected = brasyn_by_hand(acquired, _array(sitk.ReadImage(str(out / name))), label)
        for key in BRASYN_KEYS:
            assert float(row[key]) == pytest.approx(expected[key], abs=1e-4), (row["stage"], key)


@pytest.mark.parametrize("command", ["evaluate", "validate"])
def test_a_bad_protocol_on_the_command_line_is_one_error_line(tmp_path, case_dir, command, capsys):
    argv = (["evaluate", "--data", str(case_dir)] if command == "evaluate" else ["validate", str(case_dir)])
    with pytest.raises(SystemExit) as done:
        main(argv + ["-o", str(tmp_path / "out"), "--protocol", "paper"])
    assert done.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --protocol: invalid choice: 'paper'" in error and "brasyn" in error
    assert not (tmp_path / "out").exists()
