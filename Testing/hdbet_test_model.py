"""Test support: a small HD-BET model made here, so that the real ``hd-bet`` program runs offline in tests.

HD-BET 2 (``pip install hd-bet``) is an nnU-Net v2 model: on first use it downloads its trained
folder from Zenodo into ``~/hd-bet_params/release_2.0.0`` (``~`` from ``os.path.expanduser``, so
``HOME`` decides), then loads it with nnU-Net's predictor. Nothing can be downloaded while tests
run, so :func:`make_hdbet_home` writes a folder of the same layout, holding a model of its own:

* ``dataset.json``: one input channel, labels background 0 and brain 1, and a file ending.
  nnU-Net appends that ending to the output names it is given, and HD-BET gives it
  ``X_bet.nii.gz``: with the empty ending (:data:`RELEASE_FILE_ENDING`; what HD-BET's own
  release must hold, since HD-BET then reads ``X_bet.nii.gz`` back) the mask is
  ``X_bet.nii.gz``; with ``.nii.gz``, as nnU-Net's own datasets have it, ``X_bet.nii.gz.nii.gz``;
* ``plans.json``: one ``3d_fullres`` configuration: SimpleITK reading, z-score normalisation,
  4 mm voxels (nnU-Net resamples the input to them and the probabilities back onto the input's
  grid; 2 mm would cost eight times the training), one 48 x 64 x 64 patch (the whole small head:
  context tells brain from face and neck), and a small 3D ``PlainConvUNet`` (five stages,
  8-16-32-32-32 features, one convolution per stage; 4-channel layers would be several times
  slower on a CPU, which runs them without its fast convolution kernels);
* ``fold_all/checkpoint_final.pth``: its weights and the fields nnU-Net's predictor reads
  (``network_weights``, ``trainer_name``, ``init_args['configuration']``, mirroring axes).

The weights come from a short training run (80 steps of Adam, about 25 s of one CPU core; about
40 s with making the data) on the T1-weighted series (before and after contrast) of two clinical
phantom studies (:func:`MRISynthesisLib.phantom.generate_clinical_study`: heads with skull and
neck, and the true brain mask on each series' grid), put in the layout our code hands HD-BET and
preprocessed by nnU-Net's own preprocessor with these plans, so that they look exactly like what
``hd-bet`` feeds the network (one study's T1c is sagittal, the other's axial: both fields of view).
Through the real ``hd-bet``, its masks reach a Dice of 0.91-0.95 against the true mask on the
sagittal T1 of unseen small studies (7 and 8), 0.88 on an axial T1c: plausible brain masks of
these phantoms, not of real heads. The model exists to test our run path against the real
program, not to measure HD-BET. Nothing here is copied from HD-BET or nnU-Net; their API is called.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

__all__ = ["MadeModel", "make_model", "write_model", "make_hdbet_home", "model_folder", "dice", "PARAMETER_FOLDER",
           "RELEASE_FILE_ENDING"]

#: Where HD-BET 2.0.x looks for its model, below the home folder (``HD_BET.paths``).
PARAMETER_FOLDER = Path("hd-bet_params") / "release_2.0.0"
#: The file ending in the ``dataset.json`` of HD-BET's release (module docstring).
RELEASE_FILE_ENDING = ""
#: The one nnU-Net configuration of the model.
CONFIGURATION = "3d_fullres"
#: Voxel size (mm) the model works at; patch (voxels, z y x); features per stage (each halves the grid).
SPACING_MM = 4.0
PATCH = (48, 64, 64)
FEATURES = (8, 16, 32, 32, 32)
#: Phantom studies whose T1-weighted series the model learns from (tests use other seeds), and training steps.
TRAINING_SEEDS = (101, 104)
TRAINING_SERIES = ("t1n", "t1c")
ITERATIONS = 80


@dataclasses.dataclass
class MadeModel:
    """A made HD-BET model: its trained network and plans, and how training went."""

    network: object
    plans: dict
    training_s: float
    iterations: int
    training_dice: float


def model_folder(home: Path) -> Path:
    """The folder HD-BET 2 reads its model from when ``HOME`` is ``home``."""
    return Path(home) / PARAMETER_FOLDER


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def dataset_description(file_ending: str = RELEASE_FILE_ENDING) -> dict:
    """``dataset.json``: one channel, background and brain, and the file ending nnU-Net appends to output names."""
    return {"channel_names": {"0": "T1"}, "labels": {"background": 0, "brain": 1}, "numTraining": len(TRAINING_SEEDS),
            "file_ending": file_ending, "name": "MRISynthesis test brain extraction (phantoms only)"}


def plans() -> dict:
    """``plans.json`` of the model: what nnU-Net's predictor needs to preprocess, build the network and export."""
    stages = len(FEATURES)
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "mrisynth_test_3d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 1,
        "patch_size": list(PATCH), "median_image_size_in_voxels": list(PATCH),
        "spacing": [SPACING_MM] * 3, "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": dict(linear),
        "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_seg_kwargs": dict(linear, is_seg=True),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": dict(linear),
        "batch_dice": False,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": stages, "features_per_stage": list(FEATURES),
                "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * stages,
                "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1), "n_conv_per_stage": [1] * stages,
                "n_conv_per_stage_decoder": [1] * (stages - 1), "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
    }
    return {
        "dataset_name": "Dataset999_MRISynthesisTestBET", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [SPACING_MM] * 3, "original_median_shape_after_transp": list(PATCH),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1.0, "mean": 0.0, "median": 0.0, "min": 0.0, "percentile_00_5": 0.0,
                  "percentile_99_5": 1.0, "std": 1.0}},
    }


def _managers(plan: dict):
    """nnU-Net's plans and configuration managers of ``plan``."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plan)
    return manager, manager.get_configuration(CONFIGURATION)


def build_network(plan: dict):
    """The network the plans describe, built by nnU-Net itself (so the weights' names match at inference)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    _, configuration = _managers(plan)
    return get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                  configuration.network_arch_init_kwargs_req_import, 1, 2, allow_init=True,
                                  deep_supervision=False)


def preprocess(image: sitk.Image, mask: sitk.Image, plan: dict) -> Tuple[np.ndarray, np.ndarray]:
    """``image`` and its brain ``mask`` as nnU-Net's preprocessor hands them to the network (``1 x z x y x``;
    labels 0 and 1, -1 in air outside the head's non-zero bounding region)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    manager, configuration = _managers(plan)
    data = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    seg = (sitk.GetArrayFromImage(mask) > 0).astype(np.int16)[None]
    properties = {"spacing": list(image.GetSpacing())[::-1]}
    data, seg, _ = DefaultPreprocessor(verbose=False).run_case_npy(data, seg, properties, manager, configuration,
                                                                   dataset_description())
    return data.astype(np.float32), seg


def training_volumes(seeds: Sequence[int] = TRAINING_SEEDS) -> List[Tuple[sitk.Image, sitk.Image]]:
    """(image, true brain mask) of the T1-weighted series of the phantom studies ``seeds``, in the layout our
    code hands HD-BET (:func:`MRISynthesisLib.clinical.brain_masks.hd_bet_input`: axial, whatever the plane
    the series was acquired in)."""
    from MRISynthesisLib.clinical.brain_masks import hd_bet_input
    from MRISynthesisLib.phantom import generate_clinical_study

    volumes = []
    for seed in seeds:
        study = generate_clinical_study(seed, small=True)
        volumes += [(hd_bet_input(series.image), hd_bet_input(series.brain_mask)) for series in study.series
                    if series.key in TRAINING_SERIES]
    return volumes


def _patch(data: np.ndarray, seg: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A random patch of a preprocessed volume (padded where it is smaller: labels -1 there, ignored)."""
    pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(PATCH, data.shape[1:])]
    data, seg = np.pad(data, pad), np.pad(seg, pad, constant_values=-1)
    start = [int(rng.integers(0, s - p + 1)) for s, p in zip(data.shape[1:], PATCH)]
    window = (slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, PATCH))
    return np.ascontiguousarray(data[window]), np.ascontiguousarray(seg[window])


def train(network, cases: List[Tuple[np.ndarray, np.ndarray]], iterations: int = ITERATIONS, seed: int = 0,
          lr: float = 1e-2) -> List[float]:
    """Train ``network`` on preprocessed ``cases``, one patch a step, with a small random gain and offset:
    cross-entropy plus soft Dice of the brain, Adam with a cosine schedule. Returns the losses."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, iterations)
    losses = []
    network.train()
    for _ in range(iterations):
        data, seg = _patch(*cases[int(rng.integers(len(cases)))], rng)
        data = torch.from_numpy(data[None]) * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
        seg = torch.from_numpy(seg[None, 0]).long()
        logits = network(data)
        valid = seg >= 0
        target = seg.clamp(min=0)
        brain = torch.softmax(logits, 1)[:, 1][valid]
        truth = (target == 1)[valid].float()
        loss = (F.cross_entropy(logits, target, reduction="none")[valid].mean()
                + 1.0 - (2.0 * (brain * truth).sum() + 1.0) / (brain.sum() + truth.sum() + 1.0))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    network.eval()
    return losses


def predict(network, plan: dict, data: np.ndarray) -> np.ndarray:
    """Brain (bool, z y x) of one preprocessed volume by nnU-Net's sliding-window prediction, as ``hd-bet
    --disable_tta`` runs it."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    manager, configuration = _managers(plan)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints that CPUs keep results off the device
        predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False,
                                    device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, manager, configuration, None, dataset_description(), "nnUNetTrainer",
                                    None)
    logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
    return logits.float().argmax(0).numpy() == 1


def make_model(seeds: Sequence[int] = TRAINING_SEEDS, iterations: int = ITERATIONS, seed: int = 0) -> MadeModel:
    """Train the small model on the phantom studies ``seeds`` (seeded; on one thread:
    the fastest for so small a network, and it leaves the other cores alone)."""
    import torch

    tick = time.perf_counter()
    plan = plans()
    cases = [preprocess(image, mask, plan) for image, mask in training_volumes(seeds)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        network = build_network(plan)
        train(network, cases, iterations, seed)
        scores = [dice(predict(network, plan, data), seg[0] == 1) for data, seg in cases]
    finally:
        torch.set_num_threads(threads)
    return MadeModel(network=network, plans=plan, training_s=time.perf_counter() - tick, iterations=iterations,
                     training_dice=float(np.mean(scores)))


def write_model(home: Path, model: MadeModel, file_ending: str = RELEASE_FILE_ENDING) -> Path:
    """Write ``model`` where HD-BET 2 looks when ``HOME=home``: ``dataset.json``, ``plans.json`` and
    ``fold_all/checkpoint_final.pth``. Returns that folder."""
    import torch

    folder = model_folder(home)
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    description = dataset_description(file_ending)
    (folder / "dataset.json").write_text(json.dumps(description, indent=1))
    (folder / "plans.json").write_text(json.dumps(model.plans, indent=1))
    checkpoint = {
        "network_weights": {k: v.detach().cpu().clone() for k, v in model.network.state_dict().items()},
        "trainer_name": "nnUNetTrainer",
        "init_args": {"plans": model.plans, "configuration": CONFIGURATION, "fold": "all",
                      "dataset_json": description, "device": "cpu"},
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": model.iterations,
    }
    torch.save(checkpoint, str(folder / "fold_all" / "checkpoint_final.pth"))
    return folder


def make_hdbet_home(home: Path, file_ending: str = RELEASE_FILE_ENDING) -> MadeModel:
    """Train the model and write it under ``home`` (one call: :func:`make_model` then :func:`write_model`)."""
    model = make_model()
    write_model(home, model, file_ending)
    return model
