"""synthesize() end to end on small phantom cases with real (tiny, untrained) torch models."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MRISynthesisLib import metrics
from MRISynthesisLib.core.devices import DeviceError
from MRISynthesisLib.core.inference import Stage1Options, run_stage1
from MRISynthesisLib.core.progress import Cancelled
from MRISynthesisLib.core.io import InputError
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.models.segmenter import SegmenterConfig, build_segmenter
from MRISynthesisLib.phantom import generate_case
from MRISynthesisLib.core.pipeline import SYNTHETIC_SCALE, synthesize
from MRISynthesisLib.core.preprocessing import brain_mask
from MRISynthesisLib.sequences import SEQUENCES
from MRISynthesisLib.core.bundles import ModelBundle

T1N, T1C, T2W, T2F = SEQUENCES


def tiny_generator(seed: int = 0) -> HFGANGenerator:
    """A real HF-GAN, tiny enough for CPU tests; 96 x 96 slices = 2.5 mm over 240 mm."""
    torch.manual_seed(seed)
    config = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96)
    return HFGANGenerator(config).eval()


def tiny_refiner(seed: int = 0, perturb: bool = False) -> Refiner:
    """A real Refiner; ``perturb`` gives its zero-initialised head weights so it changes the volume."""
    torch.manual_seed(seed)
    refiner = Refiner(RefinerConfig(channels=4)).eval()
    if perturb:
        with torch.no_grad():
            refiner.head.weight.normal_(0.0, 0.5)
            refiner.head.bias.fill_(0.05)
    return refiner


@pytest.fixture(scope="module")
def case():
    return generate_case(11, small=True)


@pytest.fixture(scope="module")
def bundle():
    return ModelBundle(name="tiny-test", stage1=tiny_generator(), refiner=tiny_refiner(perturb=True))


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _inputs(case, missing=(T1C,)) -> dict:
    return {s: img for s, img in case.images.items() if s not in missing}


def _brain(images) -> np.ndarray:
    """The brain: non-zero union of the inputs with enclosed holes filled (as the pipeline defines it)."""
    union = np.any([sitk.GetArrayFromImage(i) != 0 for i in images], axis=0)
    mask = brain_mask([union])
    assert mask[union].all() and mask.sum() < union.sum() * 1.05  # filling holes adds little
    return mask


def test_synthesises_every_missing_sequence_on_the_input_grid(case, bundle):
    inputs = _inputs(case)
    before = {s: sitk.GetArrayFromImage(i).copy() for s, i in inputs.items()}
    result = synthesize(inputs, bundle, device="cpu")
    assert list(result.targets) == [T1C]
    assert result.inputs == [T1N, T2W, T2F]
    target = result.targets[T1C]
    assert target.sources == [T1N, T2W, T2F]
    reference = inputs[T1N]
    for image in (target.synthetic, target.stage1, target.refinement_map, target.tumour_map):
        assert _geometry(image) == _geometry(reference)
    synthetic = sitk.GetArrayFromImage(target.synthetic)
    brain = _brain(inputs.values())
    assert np.all(synthetic[~brain] == 0), "background must stay exactly zero"
    assert np.count_nonzero(synthetic[brain]) > 0.9 * brain.sum()
    assert 0 <= synthetic.min() and synthetic.max() <= SYNTHETIC_SCALE * 5
    refinement = sitk.GetArrayFromImage(target.refinement_map)
    stage1 = sitk.GetArrayFromImage(target.stage1)
    np.testing.assert_allclose(refinement, synthetic - stage1, atol=1e-3)
    assert np.abs(refinement).max() > 0  # the perturbed refiner changed something
    for sequence, image in inputs.items():  # inputs untouched
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), before[sequence])
    assert set(result.timings) >= {"prepare_s", "stage1_t1c_s", "stage2_t1c_s", "total_s"}


def test_model_grid_volumes_are_kept_only_on_request_and_are_what_was_mapped_back(case, bundle):
    inputs = _inputs(case)
    assert synthesize(inputs, bundle, device="cpu", tumour_maps=False).model_grid is None
    result = synthesize(inputs, bundle, device="cpu", tumour_maps=False, keep_model_grid=True)
    kept = result.model_grid
    assert set(kept.stage1) == set(kept.final) == {T1C}
    assert kept.final[T1C].shape == kept.prepared.brain.shape
    for volume, image in ((kept.final[T1C], result.targets[T1C].synthetic),
                          (kept.stage1[T1C], result.targets[T1C].stage1)):
        mapped = kept.prepared.to_input_grid(volume * SYNTHETIC_SCALE)
        np.testing.assert_allclose(sitk.GetArrayFromImage(mapped), sitk.GetArrayFromImage(image), atol=1e-3)
    assert np.abs(kept.final[T1C] - kept.stage1[T1C]).max() > 0  # the perturbed refiner acted


def test_each_target_comes_from_acquired_sequences_only(case, bundle):
    inputs = _inputs(case, missing=(T1C, T2F))
    result = synthesize(inputs, bundle, device="cpu")
    assert list(result.targets) == [T1C, T2F]
    for target in result.targets.values():
        assert target.sources == [T1N, T2W]


def test_one_input_is_enough(case, bundle):
    result = synthesize({T2F: case.images[T2F]}, bundle, targets=["t1n"], device="cpu")
    assert result.targets[T1N].sources == [T2F]


def test_oblique_anisotropic_input_keeps_its_geometry(case, bundle):
    direction = sitk.VersorRigid3DTransform((0.0, 0.0, np.sin(0.2), np.cos(0.2))).GetMatrix()
    inputs = {}
    for sequence, image in _inputs(case).items():
        oblique = sitk.Image(image)
        oblique.SetDirection(direction)
        oblique.SetSpacing((2.4, 2.6, 3.0))
        oblique.SetOrigin((12.5, -100.25, 30.0))
        inputs[sequence] = oblique
    result = synthesize(inputs, bundle, device="cpu")
    target = result.targets[T1C]
    assert _geometry(target.synthetic) == _geometry(inputs[T1N])
    assert any("resampled in-plane" in m for m in result.messages)
    synthetic = sitk.GetArrayFromImage(target.synthetic)
    assert np.all(synthetic[~_brain(inputs.values())] == 0)


def test_inputs_on_other_grids_are_resampled_and_reported(case, bundle):
    inputs = _inputs(case)
    moved = sitk.Image(inputs[T2W])
    moved.SetOrigin(tuple(o + 2.0 for o in moved.GetOrigin()))
    inputs[T2W] = moved
    result = synthesize(inputs, bundle, device="cpu")
    assert any(m.startswith("T2 resampled onto the T1 grid") for m in result.messages)
    assert _geometry(result.targets[T1C].synthetic) == _geometry(inputs[T1N])


def test_stage1_only_bundle_gives_no_refinement(case):
    bundle = ModelBundle(name="stage1-only", stage1=tiny_generator())
    result = synthesize(_inputs(case), bundle, device="cpu")
    target = result.targets[T1C]
    assert target.refinement_map is None and target.tumour_map is None
    np.testing.assert_array_equal(sitk.GetArrayFromImage(target.synthetic), sitk.GetArrayFromImage(target.stage1))


def test_untrained_refiner_is_the_identity(case):
    bundle = ModelBundle(name="identity", stage1=tiny_generator(), refiner=tiny_refiner())
    target = synthesize(_inputs(case), bundle, device="cpu").targets[T1C]
    np.testing.assert_allclose(sitk.GetArrayFromImage(target.synthetic), sitk.GetArrayFromImage(target.stage1),
                               atol=0.05)


def test_tumour_region_from_segmenter(case):
    torch.manual_seed(0)
    segmenter = build_segmenter(SegmenterConfig(init_filters=8, blocks_down=(1, 1, 1, 1))).eval()
    with torch.no_grad():  # make the WT channel fire where the T2/FLAIR inputs are bright
        for parameter in segmenter.parameters():
            parameter.mul_(0.0)
        segmenter.conv_final[-1].conv.bias[0] = 3.0
    bundle = ModelBundle(name="seg", stage1=tiny_generator(), refiner=tiny_refiner(perturb=True), segmenter=segmenter)
    target = synthesize(_inputs(case), bundle, device="cpu").targets[T1C]
    assert target.tumour_region_source.startswith("segmenter")
    mask = sitk.GetArrayFromImage(target.tumour_mask)
    brain = _brain(_inputs(case).values())
    np.testing.assert_array_equal(mask > 0, brain)  # WT probability sigmoid(3) > 0.5 everywhere in the brain
    tumour_map = sitk.GetArrayFromImage(target.tumour_map)
    refinement = sitk.GetArrayFromImage(target.refinement_map)
    np.testing.assert_allclose(tumour_map[brain], np.abs(refinement[brain]), atol=1e-4)


def test_validation_adds_error_maps_and_metrics(case, bundle):
    label = case.label
    result = synthesize(case.images, bundle, targets=[T1C, T2W], device="cpu",
                        ground_truth={s: case.images[s] for s in (T1C, T2W)}, label=label)
    target = result.targets[T1C]
    assert target.sources == [T1N, T2W, T2F]
    assert result.targets[T2W].sources == [T1N, T1C, T2F]
    acquired = sitk.GetArrayFromImage(case.images[T1C]).astype(np.float32)
    synthetic = sitk.GetArrayFromImage(target.synthetic)
    brain = _brain(case.images.values())
    tumour = (sitk.GetArrayFromImage(label) > 0) & brain
    expected = metrics.image_metrics(acquired, synthetic, brain, tumour)
    assert target.metrics == pytest.approx(expected, nan_ok=True)
    error = sitk.GetArrayFromImage(target.error_map)
    assert error.min() >= 0 and np.all(error[~brain] == 0) and error[brain].max() > 0


def test_cancel_stops_and_returns_nothing(case, bundle):
    cancel = threading.Event()
    seen = []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if message.startswith("stage 1"):
            cancel.set()

    with pytest.raises(Cancelled):
        synthesize(_inputs(case), bundle, device="cpu", progress=progress, cancel=cancel)
    assert not any(m.startswith("stage 2") for m in seen)


def test_bad_requests_fail_clearly(case, bundle):
    with pytest.raises(InputError, match="nothing is missing"):
        synthesize(case.images, bundle, device="cpu")
    with pytest.raises(InputError, match="no other acquired sequence"):
        synthesize({T1N: case.images[T1N]}, bundle, targets=["t1n"], device="cpu")
    flat = sitk.Image(case.images[T1N])
    flat *= 0
    with pytest.raises(InputError, match="empty volume"):
        synthesize({T1N: flat, T2W: case.images[T2W]}, bundle, device="cpu")
    with pytest.raises(ValueError, match="unknown sequence"):
        synthesize({"dwi": case.images[T1N]}, bundle, device="cpu")
    with pytest.raises(InputError, match="outside"):
        synthesize(_inputs(case), bundle, device="cpu", intensity=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            synthesize(_inputs(case), bundle, device="cuda")


def test_intensity_encoding_changes_the_output(case):
    generator = tiny_generator()
    bundle = ModelBundle(name="ie", stage1=generator)
    low = synthesize(_inputs(case), bundle, device="cpu", intensity=0.1).targets[T1C].synthetic
    high = synthesize(_inputs(case), bundle, device="cpu", intensity=0.9).targets[T1C].synthetic
    assert not np.array_equal(sitk.GetArrayFromImage(low), sitk.GetArrayFromImage(high))


def test_stage1_fast_path_equals_naive_path():
    generator = tiny_generator(3)
    rng = np.random.default_rng(0)
    channels = rng.uniform(-1, 1, size=(7, 4, 96, 96)).astype(np.float32)
    brain_slices = np.array([False, True, True, False, True, True, True])
    device = torch.device("cpu")
    fast = run_stage1(generator, channels, [0, 1, 2], 3, 0.24, brain_slices, device, Stage1Options(batch_size=3))
    naive = run_stage1(generator, channels, [0, 1, 2], 3, 0.24, brain_slices, device, Stage1Options.naive())
    np.testing.assert_allclose(fast[brain_slices], naive[brain_slices], atol=1e-4)
    assert np.all(fast[~brain_slices] == -1.0)
    last = run_stage1(generator, channels, [0, 1, 2], 3, 0.24, brain_slices, device,
                      Stage1Options(batch_size=2, channels_last=True))
    np.testing.assert_allclose(last, fast, atol=1e-4)


def test_default_intensity_is_the_bundle_prior_mean(case):
    generator = tiny_generator()
    generator.intensity_priors = {**generator.intensity_priors, T1C: (0.61, 0.05)}
    bundle = ModelBundle(name="priors", stage1=generator)
    assert synthesize(_inputs(case), bundle, device="cpu").targets[T1C].intensity == pytest.approx(0.61)
    sigma = synthesize(_inputs(case), bundle, device="cpu", intensity="-2sigma").targets[T1C].intensity
    assert sigma == pytest.approx(0.51)
