"""Phantom cases: determinism, BraTS geometry, labels, skull stripping, MR contrast, files on disk.

Contrast is measured on the generated images with the case's own tissue maps (pure white
matter, grey matter and CSF away from the tumour) and label map, so these tests check the
physics end to end rather than the parameters that went in.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull

from MRISynthesisLib import phantom
from MRISynthesisLib.sequences import SEQUENCES, Sequence

#: Seeds of the small cases whose contrast is measured (several protocols among them).
CONTRAST_SEEDS = (0, 1, 2, 3, 4, 5)


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@pytest.fixture(scope="module")
def case() -> phantom.PhantomCase:
    return phantom.generate_case(3, small=True)


@pytest.fixture(scope="module")
def healthy() -> phantom.PhantomCase:
    return phantom.generate_case(3, small=True, tumour=False)


@pytest.fixture(scope="module")
def contrast_cases() -> list[phantom.PhantomCase]:
    return [phantom.generate_case(seed, small=True) for seed in CONTRAST_SEEDS]


class TissueMedians:
    """Median intensity of each sequence in pure tissue (away from the tumour) and in each label."""

    def __init__(self, case: phantom.PhantomCase) -> None:
        label = _array(case.label)
        near_tumour = ndimage.binary_dilation(label > 0, iterations=3)
        self.masks = {
            name: (_array(case.tissues[name]) > 0.9) & ~near_tumour for name in ("wm", "gm", "csf")
        }
        self.masks.update({"necrosis": label == 1, "oedema": label == 2, "enhancing": label == 3})
        self.images = {seq: _array(case.images[seq]) for seq in SEQUENCES}

    def __call__(self, seq: Sequence, tissue: str) -> float:
        mask = self.masks[tissue]
        assert mask.sum() >= 20, f"too few {tissue} voxels to measure"
        return float(np.median(self.images[seq][mask]))

    def ratio(self, seq: Sequence, tissue: str) -> float:
        """Median of ``tissue`` over median of white matter on ``seq``."""
        return self(seq, tissue) / self(seq, "wm")


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_case(case):
    again = phantom.generate_case(3, small=True)
    for seq in SEQUENCES:
        np.testing.assert_array_equal(_array(again.images[seq]), _array(case.images[seq]))
    np.testing.assert_array_equal(_array(again.label), _array(case.label))
    assert again.parameters == case.parameters
    assert again.case_id == case.case_id == "Phantom-00003"
    assert again.seed == 3


def test_different_seed_gives_a_different_case(case):
    other = phantom.generate_case(4, small=True)
    for seq in SEQUENCES:
        assert not np.array_equal(_array(other.images[seq]), _array(case.images[seq]))
    assert not np.array_equal(_array(other.label), _array(case.label))
    assert other.parameters["tissues"] != case.parameters["tissues"]
    # Not a copy of the same anatomy: the brains themselves differ (random deformation).
    assert not np.array_equal(_array(other.tissues["brain"]), _array(case.tissues["brain"]))


def test_parameters_are_json_serialisable_and_describe_the_case(case):
    params = json.loads(json.dumps(case.parameters))
    assert params == case.parameters
    assert params["seed"] == 3 and params["case_id"] == "Phantom-00003"
    assert set(params["protocols"]) == {seq.value for seq in SEQUENCES}
    assert params["protocols"]["t2f"]["type"] == "flair"
    assert params["tumour"]["hemisphere"] in ("left", "right")


# ---------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------


def test_small_case_grid_is_2_5_mm_and_centred_on_the_brats_grid(case):
    # BraTS grid centre: origin (0, -239, 0) + (239, 239, 154) / 2 mm = (119.5, -119.5, 77).
    # Small grid: 96 x 96 x 64 voxels of 2.5 mm, so the origin lies (95, 95, 63) * 1.25 mm before it.
    expected = ((96, 96, 64), (2.5, 2.5, 2.5), (0.75, -238.25, -1.75), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    for image in list(case.images.values()) + [case.label] + list(case.tissues.values()):
        size, spacing, origin, direction = _geometry(image)
        assert size == expected[0]
        np.testing.assert_allclose(spacing, expected[1])
        np.testing.assert_allclose(origin, expected[2], atol=1e-9)
        np.testing.assert_allclose(direction, expected[3])


def test_pixel_types_are_float32_images_and_uint8_label(case):
    for seq in SEQUENCES:
        assert case.images[seq].GetPixelID() == sitk.sitkFloat32
    assert case.label.GetPixelID() == sitk.sitkUInt8
    assert set(case.images) == set(SEQUENCES)


def test_tumour_lies_in_the_hemisphere_the_parameters_name(case):
    # LPS: physical x grows towards the patient's left.
    label = _array(case.label)
    brain = _array(case.tissues["brain"]) > 0
    origin_x, spacing_x = case.label.GetOrigin()[0], case.label.GetSpacing()[0]
    tumour_x = origin_x + spacing_x * np.argwhere(label > 0)[:, 2]
    midline_x = origin_x + spacing_x * np.argwhere(brain)[:, 2].mean()
    left = case.parameters["tumour"]["hemisphere"] == "left"
    on_side = tumour_x > midline_x if left else tumour_x < midline_x
    assert on_side.mean() > 0.85


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------


def test_tumour_case_has_all_three_brats_labels_inside_the_brain(case):
    label = _array(case.label)
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert not label[_array(case.tissues["brain"]) == 0].any()
    volumes = case.parameters["tumour"]["volume_ml"]
    voxel_ml = 2.5 ** 3 / 1000.0
    assert volumes["oedema"] == pytest.approx(np.count_nonzero(label == 2) * voxel_ml)
    # Oedema is the largest compartment, as in glioblastoma.
    assert volumes["oedema"] > volumes["enhancing_tumour"] and volumes["oedema"] > volumes["necrotic_core"]


@pytest.mark.parametrize("seed", CONTRAST_SEEDS)
def test_core_is_nested_inside_the_enhancing_rim_and_oedema(seed, contrast_cases):
    label = _array(contrast_cases[CONTRAST_SEEDS.index(seed)].label)
    core = np.argwhere(label == 1).astype(float)
    hull = ConvexHull(np.argwhere(label == 2).astype(float))
    inside_oedema_hull = np.all(core @ hull.equations[:, :3].T + hull.equations[:, 3] <= 1e-9, axis=1)
    assert inside_oedema_hull.mean() > 0.95
    # The core's outer neighbours are tumour (rim or oedema), hardly ever healthy tissue.
    ring = ndimage.binary_dilation(label == 1) & (label != 1)
    assert (label[ring] == 0).mean() < 0.25
    assert (label[ring] == 3).mean() > 0.5


def test_healthy_case_has_an_empty_label_map(healthy):
    assert not _array(healthy.label).any()
    assert healthy.parameters["tumour"] is None


# ---------------------------------------------------------------------------------------
# Skull stripping
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["case", "healthy"])
def test_background_is_exactly_zero_and_brain_is_positive(which, request):
    generated = request.getfixturevalue(which)
    brain = _array(generated.tissues["brain"]) > 0
    assert 0.1 < brain.mean() < 0.5  # a brain, not an empty or a full box
    for seq in SEQUENCES:
        image = _array(generated.images[seq])
        assert np.all(image[~brain] == 0.0), seq
        assert np.all(image[brain] > 0.0), seq
        assert np.all(np.isfinite(image))


# ---------------------------------------------------------------------------------------
# Contrast, measured on the images
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", CONTRAST_SEEDS)
def test_healthy_tissue_contrast_follows_each_sequence(seed, contrast_cases):
    median = TissueMedians(contrast_cases[CONTRAST_SEEDS.index(seed)])
    assert median(Sequence.T1N, "csf") < median(Sequence.T1N, "wm")
    assert median(Sequence.T1N, "gm") < median(Sequence.T1N, "wm")
    assert median(Sequence.T1C, "gm") < median(Sequence.T1C, "wm")
    assert median(Sequence.T2F, "csf") < 0.5 * median(Sequence.T2F, "wm")  # CSF nulled
    assert median(Sequence.T2W, "csf") > 1.5 * median(Sequence.T2W, "wm")
    assert median(Sequence.T2W, "gm") > median(Sequence.T2W, "wm")


@pytest.mark.parametrize("seed", CONTRAST_SEEDS)
def test_tumour_contrast_follows_each_sequence(seed, contrast_cases):
    median = TissueMedians(contrast_cases[CONTRAST_SEEDS.index(seed)])
    # Enhancing rim: much brighter relative to white matter after gadolinium than before.
    assert median.ratio(Sequence.T1C, "enhancing") > 1.3 * median.ratio(Sequence.T1N, "enhancing")
    assert median.ratio(Sequence.T1C, "enhancing") > 1.2
    # Oedema: bright on T2 and FLAIR, slightly dark on T1.
    assert median.ratio(Sequence.T2W, "oedema") > 1.2
    assert median.ratio(Sequence.T2F, "oedema") > 1.2
    assert median.ratio(Sequence.T1N, "oedema") < 1.0
    # Necrosis: dark on T1 and T1c, bright on T2.
    assert median.ratio(Sequence.T1N, "necrosis") < 0.9
    assert median.ratio(Sequence.T1C, "necrosis") < median.ratio(Sequence.T1C, "enhancing")
    assert median.ratio(Sequence.T2W, "necrosis") > 1.5


def test_cases_vary_in_protocol_and_scanner_gain(contrast_cases):
    kinds = {c.parameters["protocols"]["t1n"]["type"] for c in contrast_cases}
    assert len(kinds) >= 2
    wm_t1 = [TissueMedians(c)(Sequence.T1N, "wm") for c in contrast_cases]
    assert max(wm_t1) > 1.5 * min(wm_t1)  # absolute intensities differ between cases, as in BraTS


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def test_write_case_writes_exactly_the_brats_files(case, tmp_path):
    folder = phantom.write_case(case, tmp_path)
    assert folder == tmp_path / "Phantom-00003"
    expected = {f"Phantom-00003-{suffix}.nii.gz" for suffix in ("t1n", "t1c", "t2w", "t2f", "seg")}
    expected.add("Phantom-00003-phantom.json")
    assert {p.name for p in folder.iterdir()} == expected
    assert [p.name for p in tmp_path.iterdir()] == ["Phantom-00003"]
    for seq in SEQUENCES:
        read = sitk.ReadImage(str(folder / f"Phantom-00003-{seq.value}.nii.gz"))
        assert read.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_allclose(read.GetOrigin(), case.images[seq].GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(read.GetSpacing(), case.images[seq].GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(read.GetDirection(), case.images[seq].GetDirection(), atol=1e-6)
        np.testing.assert_array_equal(_array(read), _array(case.images[seq]))
    seg = sitk.ReadImage(str(folder / "Phantom-00003-seg.nii.gz"))
    assert seg.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(_array(seg), _array(case.label))
    assert json.loads((folder / "Phantom-00003-phantom.json").read_text()) == case.parameters


def test_generate_cases_uses_consecutive_seeds_and_reports_progress(tmp_path):
    reports = []
    folders = phantom.generate_cases(tmp_path, 2, seed=41, small=True,
                                     progress=lambda fraction, message: reports.append((fraction, message)))
    assert [f.name for f in folders] == ["Phantom-00041", "Phantom-00042"]
    assert [fraction for fraction, _ in reports] == [0.5, 1.0]
    assert "Phantom-00042" in reports[-1][1]
    second = phantom.generate_case(42, small=True)
    written = sitk.ReadImage(str(folders[1] / "Phantom-00042-t2f.nii.gz"))
    np.testing.assert_array_equal(_array(written), _array(second.images[Sequence.T2F]))


def test_custom_case_id_names_the_case(tmp_path):
    generated = phantom.generate_case(5, small=True, case_id="Demo-A", tumour=False)
    folder = phantom.write_case(generated, tmp_path)
    assert folder.name == "Demo-A" and (folder / "Demo-A-t1c.nii.gz").is_file()


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_bad_seed_is_refused(seed):
    with pytest.raises(phantom.PhantomError, match="seed"):
        phantom.generate_case(seed, small=True)


def test_bad_case_id_and_case_count_are_refused(tmp_path):
    with pytest.raises(phantom.PhantomError, match="case_id"):
        phantom.generate_case(1, small=True, case_id="a/b")
    with pytest.raises(phantom.PhantomError, match="number of phantom cases"):
        phantom.generate_cases(tmp_path, -2, seed=0, small=True)


# ---------------------------------------------------------------------------------------
# Full size and offline template (slow)
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_case_is_on_the_brats_grid():
    generated = phantom.generate_case(8)
    for image in list(generated.images.values()) + [generated.label]:
        size, spacing, origin, direction = _geometry(image)
        assert size == (240, 240, 155)
        assert spacing == (1.0, 1.0, 1.0)
        np.testing.assert_allclose(origin, (0.0, -239.0, 0.0))
        assert direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    label = _array(generated.label)
    brain = _array(generated.tissues["brain"]) > 0
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert 1000 < brain.sum() / 1000 < 1800  # brain volume in ml, adult range
    for seq in SEQUENCES:
        image = _array(generated.images[seq])
        assert np.all(image[~brain] == 0.0) and np.all(image[brain] > 0.0)
    # The brain fits on the grid left-right and front-back (only the brainstem may be cut).
    assert not brain[:, :, 0].any() and not brain[:, :, -1].any()
    assert not brain[:, 0, :].any() and not brain[:, -1, :].any()
    assert not brain[-1].any()


@pytest.mark.slow
def test_template_loads_without_network():
    code = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from MRISynthesisLib import phantom\n"
        "case = phantom.generate_case(0, small=True)\n"
        "print(sorted(case.images))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------
# Ideal images (no noise, no bias field) of the very same case
# ---------------------------------------------------------------------------------------


def test_noise_free_and_bias_free_images_are_the_same_case_without_that_acquisition_effect(case):
    noise_free = phantom.generate_case(3, small=True, noise=False)
    ideal = phantom.generate_case(3, small=True, noise=False, bias=False)
    np.testing.assert_array_equal(_array(noise_free.label), _array(case.label))
    np.testing.assert_array_equal(_array(ideal.tissues["wm"]), _array(case.tissues["wm"]))
    brain = _array(case.tissues["brain"]) > 0
    white = (_array(case.tissues["wm"]) > 0.9) & brain
    for seq in SEQUENCES:
        acquisition = case.parameters["acquisition"][seq.value]
        acquired, clean, flat = (_array(c.images[seq]) for c in (case, noise_free, ideal))
        # What noise=False removes is the Rician noise: in white matter (SNR >> 1) its spread is
        # the sampled fraction of the white-matter level.
        residual = (acquired - clean)[white]
        expected_sigma = acquisition["noise_fraction"] * np.median(clean[white])
        assert np.std(residual) == pytest.approx(expected_sigma, rel=0.25), seq
        assert abs(np.mean(residual)) < 0.2 * expected_sigma, seq
        # What bias=False removes is a smooth multiplicative field of the sampled strength.
        log_field = np.zeros(brain.shape)
        log_field[brain] = np.log(clean[brain] / flat[brain])
        inside = brain[:, :, 1:] & brain[:, :, :-1]
        step = np.diff(log_field, axis=2)[inside]  # neighbour to neighbour along x
        assert 0.1 * acquisition["bias_std"] < np.std(log_field[brain]) < 1.5 * acquisition["bias_std"], seq
        assert np.std(step) < 0.1 * np.std(log_field[brain]), seq
        assert np.all(clean[~brain] == 0) and np.all(flat[~brain] == 0)
