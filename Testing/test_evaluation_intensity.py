"""``mrisynth evaluate --intensity mean|2sigma|gt [--intensity-seed N]``: the paper's Table 1 ablation of
the intensity-encoding value, on real phantom cases with a real tiny stage-1 bundle whose own priors
differ from the paper's (so that the bundle's priors are seen to be the ones used)."""
from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MRISynthesisLib import phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.bundles import load_bundle, save_bundle
from MRISynthesisLib.core.pipeline import synthesize
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.sequences import INTENSITY_PRIORS, SEQUENCES, Sequence

#: The tiny bundle's own priors: far from the paper's, narrow, so a draw from the wrong prior shows.
PRIORS = {Sequence.T1N: (0.55, 0.02), Sequence.T2W: (0.35, 0.03), Sequence.T2F: (0.45, 0.01),
          Sequence.T1C: (0.30, 0.025)}
TARGETS = "t1c,t2f"


def _stage1_bundle(folder: Path) -> Path:
    torch.manual_seed(0)
    generator = HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))
    generator.intensity_priors = dict(PRIORS)
    return save_bundle(folder, "tiny-ie", generator)


def _evaluate(root: Path, name: str, *extra: str, data: str = "data") -> list:
    out = root / name
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["evaluate", "--data", str(root / data), "--model", str(root / "bundle"), "-o", str(out),
                     "--device", "cpu", "--targets", TARGETS, *extra])
    assert code == 0
    with open(out / "evaluation.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _values(rows: list) -> dict:
    """``{(case, target): intensity_value}`` (one per case and target: every stage row carries the same)."""
    values = {}
    for row in rows:
        key = (row["case"], row["target"])
        assert values.setdefault(key, row["intensity_value"]) == row["intensity_value"]
    return {key: float(value) for key, value in values.items()}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("intensity")
    _stage1_bundle(root / "bundle")
    phantom.generate_cases(root / "data", 2, 300, small=True)
    return root


def test_bundle_keeps_its_own_priors(root):
    assert load_bundle(root / "bundle").stage1.intensity_priors == pytest.approx(PRIORS)
    assert PRIORS != INTENSITY_PRIORS


def test_mean_is_the_default_and_uses_the_bundles_prior_mean(root):
    rows = _evaluate(root, "mean")
    assert {row["intensity"] for row in rows} == {"mean"}
    values = _values(rows)
    assert len(values) == 4
    for (case, target), value in values.items():
        assert value == PRIORS[Sequence(target)][0]
    title = (root / "mean" / "evaluation.md").read_text(encoding="utf-8").splitlines()[0]
    assert title.endswith("intensity encoding: IE (mean)")


def test_2sigma_is_reproducible_seeded_and_clipped_at_two_sigma(root):
    first = _values(_evaluate(root, "seed0", "--intensity", "2sigma"))
    again = _values(_evaluate(root, "seed0-again", "--intensity", "2sigma", "--intensity-seed", "0"))
    other = _values(_evaluate(root, "seed7", "--intensity", "2sigma", "--intensity-seed", "7"))
    assert first == again  # exactly the same numbers
    assert set(first) == set(other) and all(first[key] != other[key] for key in first)
    for values in (first, other):
        assert len(set(values.values())) == len(values)  # one draw per case and target
        for (case, target), value in values.items():
            mean, sigma = PRIORS[Sequence(target)]
            assert mean - 2 * sigma - 1e-12 <= value <= mean + 2 * sigma + 1e-12, (case, target, value)
            assert value != mean
    # a case's draw does not depend on which other cases or targets are evaluated
    single = _values(_evaluate(root, "seed7-one", "--intensity", "2sigma", "--intensity-seed", "7", "--cases", "1"))
    assert single == {key: value for key, value in other.items() if key[0] == "Phantom-00300"}
    text = (root / "seed0" / "evaluation.md").read_text(encoding="utf-8")
    assert text.splitlines()[0].endswith("intensity encoding: IE (2σ)")
    assert "| HF-GAN + IE (2σ) [stage 1] |" in text and "IE (mean)" not in text


def _true_intensity(folder: Path, target: Sequence) -> float:
    """Training's intensity-encoding value recomputed with numpy from the case files: the median brain
    intensity after scaling the volume to [0, 1] by its robust maximum (the brain's 99.5th percentile).

    For these phantoms the case grid is the tiny model's grid (96 x 96 at 2.5 mm), so no resampling.
    """
    arrays = {s: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{folder.name}-{s.value}.nii.gz")))
              .astype(np.float64) for s in SEQUENCES}
    brain = np.zeros(arrays[target].shape, bool)
    for array in arrays.values():
        brain |= array != 0
    from scipy import ndimage

    brain = ndimage.binary_fill_holes(brain)
    for index in range(brain.shape[0]):
        brain[index] = ndimage.binary_fill_holes(brain[index])
    volume = arrays[target]
    high = np.percentile(volume[brain & (volume > 0)], 99.5)
    return float(np.median(np.clip(volume[brain] / high, 0.0, 1.0)))


def test_gt_uses_the_true_targets_own_value_and_synthesis_sees_it(root):
    rows = _evaluate(root, "gt", "--intensity", "gt", "--save-volumes")
    values = _values(rows)
    assert {row["intensity"] for row in rows} == {"gt"}
    for (case, target), value in values.items():
        expected = _true_intensity(root / "data" / case, Sequence(target))
        assert value == pytest.approx(expected, rel=1e-5), (case, target)
        assert value != pytest.approx(PRIORS[Sequence(target)][0], abs=1e-3)
    # stage 1 was conditioned on exactly that value: the pipeline given it reproduces the written volume
    case = root / "data" / "Phantom-00300"
    images = {s: sitk.ReadImage(str(case / f"{case.name}-{s.value}.nii.gz")) for s in SEQUENCES}
    value = values[(case.name, "t1c")]
    result = synthesize(images, root / "bundle", targets=["t1c"], device="cpu", tumour_maps=False, intensity=value)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "gt" / "Phantom-00300-t1c.nii.gz")))
    assert np.allclose(sitk.GetArrayFromImage(result.targets[Sequence.T1C].synthetic), written, atol=1e-3)
    mean_volume = synthesize(images, root / "bundle", targets=["t1c"], device="cpu", tumour_maps=False)
    assert not np.allclose(sitk.GetArrayFromImage(mean_volume.targets[Sequence.T1C].synthetic), written, atol=1e-3)
    assert (root / "gt" / "evaluation.md").read_text(encoding="utf-8").splitlines()[0].endswith("IE (GT)")


@pytest.mark.parametrize("arguments, expected", [
    (["--intensity", "3sigma"], "--intensity '3sigma': expected one of mean, 2sigma, gt"),
    (["--intensity", "MEAN"], "--intensity 'MEAN'"),
    (["--intensity", "2sigma", "--intensity-seed", "-1"], "--intensity-seed -1: expected a non-negative integer"),
])
def test_bad_intensity_settings_are_one_line_errors(root, tmp_path, capsys, arguments, expected):
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(root / "data"), "--model", str(root / "bundle"), "-o", str(out),
                 *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error
    assert not out.exists()
