"""Arguments of ``synthesize()`` and of the CLI that were silently ignored or failed late with a Python message.

Each one is now refused with one message that names the argument, before the model is loaded or any
input is read (real phantom images and a real tiny HF-GAN; no mocks).
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.bundles import ModelBundle
from MRISynthesisLib.core.pipeline import synthesize
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.phantom import generate_case
from MRISynthesisLib.sequences import SEQUENCES

T1N, T1C, T2W, T2F = SEQUENCES
EXPECTED = "expected 'mean', '+Ksigma'/'-Ksigma' or a value in [0, 1]"


@pytest.fixture(scope="module")
def case():
    return generate_case(31, small=True)


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    generator = HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))
    return ModelBundle("tiny", generator.eval())


def _inputs(case) -> dict:
    """T1, T2 and FLAIR: T1c is the one missing sequence, so the only target."""
    return {s: case.images[s] for s in (T1N, T2W, T2F)}


def _refused(error_type, words, case, bundle, **arguments) -> str:
    """Call synthesize() with ``arguments``; it must raise ``error_type`` naming ``words`` before any work."""
    reached = []
    with pytest.raises(error_type) as error:
        synthesize(_inputs(case), bundle, device="cpu", progress=lambda f, m: reached.append(m), **arguments)
    message = str(error.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    assert reached == [], f"refused only after {reached}"
    return message


# --------------------------------------------------------------------------- 1. --intensity / intensity=

@pytest.mark.parametrize("value", ["abc", "1.5", "+xsigma", "nan", "infsigma", ""])
def test_cli_refuses_a_bad_intensity_before_reading_the_inputs(tmp_path, capsys, value):
    missing = tmp_path / "no-such-scan.nii.gz"
    code = main(["synthesize", "--input", f"t1n={missing}", "-o", str(tmp_path / "out"), "--device", "cpu",
                 f"--intensity={value}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err == f"mrisynth: error: --intensity {value!r}: {EXPECTED}", err
    assert not (tmp_path / "out").exists()


def test_cli_validate_refuses_a_bad_intensity_before_reading_the_case(tmp_path, capsys):
    code = main(["validate", str(tmp_path / "no-such-case"), "-o", str(tmp_path / "out"), "--intensity", "abc"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"mrisynth: error: --intensity 'abc': {EXPECTED}", err


def test_cli_accepts_what_the_engine_accepts():
    from MRISynthesisLib.cli.main import build_parser
    from MRISynthesisLib.cli.synthesize import run_synthesize

    for value in ("mean", "MEAN", "+1sigma", "-2σ", "sigma", "0", "0.35", "1"):
        args = build_parser().parse_args(["synthesize", "case", "-o", "out", f"--intensity={value}"])
        assert args.handler is run_synthesize and args.intensity == value


def test_parse_intensity_is_the_engines_parsing():
    from MRISynthesisLib.core.pipeline import parse_intensity

    priors = {**dict.fromkeys(SEQUENCES, (0.3, 0.1)), T1C: (0.4, 0.05)}
    assert parse_intensity(None, T1C, priors) == pytest.approx(0.4)
    assert parse_intensity(" Mean ", T1C, priors) == pytest.approx(0.4)
    assert parse_intensity("+2sigma", T1C, priors) == pytest.approx(0.5)
    assert parse_intensity("-1σ", T1C, priors) == pytest.approx(0.35)
    assert parse_intensity("0.7", T1C, priors) == parse_intensity(0.7, T1C, priors) == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"intensity 'abc': expected 'mean'"):
        parse_intensity("abc")
    with pytest.raises(TypeError, match="intensity"):
        parse_intensity([0.5])


@pytest.mark.parametrize("value, error_type", [("abc", ValueError), ([0.5], TypeError), (True, TypeError),
                                               ("nan", ValueError), (float("inf"), ValueError)])
def test_api_refuses_a_bad_intensity_naming_it(case, bundle, value, error_type):
    _refused(error_type, ["intensity"], case, bundle, intensity=value)


# --------------------------------------------------------------------------- 2. silently ignored arguments

def test_ground_truth_for_a_sequence_that_is_not_a_target_is_refused(case, bundle):
    words = ["ground_truth names T1, which is not a target"]
    # T1 is an input here, but this image is not that input: its metrics were silently never computed
    _refused(ValueError, words, case, bundle, ground_truth={"t1n": sitk.Image(case.images[T1N])})
    reached = []
    with pytest.raises(ValueError, match="ground_truth names T1, which is not a target"):
        synthesize({T2W: case.images[T2W], T2F: case.images[T2F]}, bundle, targets=["t1c"], device="cpu",
                   ground_truth={"t1n": case.images[T1N]}, progress=lambda f, m: reached.append(m))
    assert reached == []
    _refused(ValueError, ["ground_truth", "unknown sequence", "dwi"], case, bundle,
             ground_truth={"dwi": case.images[T1C]})


def test_ground_truth_for_the_targets_gives_error_maps_and_metrics(case, bundle):
    """The valid call beside the refusals: ground truth of exactly the targets is used, not ignored."""
    result = synthesize(_inputs(case), bundle, device="cpu", tumour_maps=False,
                        ground_truth={T1C: case.images[T1C]})
    assert list(result.targets) == [T1C] and result.targets[T1C].metrics
    assert result.targets[T1C].error_map is not None


def test_intensity_for_an_unknown_sequence_is_refused(case, bundle):
    _refused(ValueError, ["intensity", "'foo'"], case, bundle, intensity={"foo": 0.5})


def test_intensity_for_a_sequence_that_is_not_a_target_is_refused(case, bundle):
    _refused(ValueError, ["intensity names T2, which is not a target"], case, bundle, intensity={"t2w": 0.5})
    _refused(ValueError, ["intensity['t1c'] 'abc'", EXPECTED], case, bundle, intensity={"t1c": "abc"})


def test_intensity_per_target_accepts_every_spelling_of_the_target(case, bundle):
    result = synthesize(_inputs(case), bundle, device="cpu", tumour_maps=False, intensity={"T1c": 0.33})
    assert result.targets[T1C].intensity == pytest.approx(0.33)


def test_a_2d_label_is_refused(case, bundle):
    flat = case.label[:, :, 30]
    assert flat.GetDimension() == 2
    _refused(ValueError, ["label must be a 3D label image"], case, bundle, label=flat,
             ground_truth={"t1c": case.images[T1C]})


def test_tumour_maps_must_be_a_bool(case, bundle):
    _refused(TypeError, ["tumour_maps must be a bool", "str"], case, bundle, tumour_maps="no")


@pytest.mark.parametrize("name, expected", [
    ("stage1_options", "MRISynthesisLib.core.inference.Stage1Options"),
    ("stage2_options", "MRISynthesisLib.core.inference.Stage2Options"),
])
def test_stage_options_must_be_their_class(case, bundle, name, expected):
    _refused(TypeError, [name, expected, "dict"], case, bundle, **{name: {}})


def test_keep_model_grid_must_be_a_bool(case, bundle):
    _refused(TypeError, ["keep_model_grid must be a bool"], case, bundle, keep_model_grid="yes")
    _refused(TypeError, ["keep_model_grid must be a bool"], case, bundle, keep_model_grid=np.array([1, 2]))
