"""Tumour segmenter training (MONAI SegResNet) and loading of existing segmenter weights.

The segmenter sees the four sequences z-scored over the brain (exactly as the pipeline's
completed set) in canonical order (t1n, t1c, t2w, t2f) on the model grid and predicts the
WT/TC/ET regions with sigmoids. Training uses random crops (half centred on tumour), Dice +
binary cross-entropy (multi-label, so BCE rather than softmax CE), AdamW with warm-up and
cosine schedule; validation is the Dice per region on whole validation volumes.

Existing weights can be used instead of (or to start) training: a project checkpoint, a
plain SegResNet state dict (optionally nested or ``module.``-prefixed) or a MONAI bundle
folder (``models/model.pt``). Foreign weights may order channels differently, e.g. MONAI's
``brats_mri_segmentation`` bundle reads (T1c, T1, T2, FLAIR) and writes (TC, WT, ET):
``input_order``/``output_order`` permute the first and last convolutions to ours.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence as SequenceT

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from .. import metrics
from ..models.segmenter import REGIONS, SegmenterConfig, build_segmenter, label_to_regions, predict_region_probabilities
from ..sequences import SEQUENCES, parse_sequence
from .cases import load_or_create_split
from .crops import crop_box, crop_size_for, random_centre, take_crop
from .loop import EpochTrainer, TrainingResult, bundle_training_info, start_run
from .optimisation import autocast_context, make_optimizer
from .options import TrainingError, TrainOptions, preset_config
from .prepared_cases import PreparedCase, PreparedCaseStore
from .run_files import load_run_model, write_run_bundle

_STATE_KEYS = ("state_dict", "model", "network", "net", "model_state_dict", "segmenter")


# --------------------------------------------------------------------------- loading weights


def _strip_prefix(state: Mapping) -> dict:
    state = dict(state)
    for prefix in ("module.", "_orig_mod.", "model.", "network."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_segmenter_config(state: Mapping, path: str | Path = "state dict") -> SegmenterConfig:
    """The SegResNet sizes of a state dict (initial filters, blocks per level); checks 4 in, 3 out."""
    try:
        init = state["convInit.conv.weight"]
        final = state["conv_final.2.conv.weight"]
    except KeyError as error:
        raise TrainingError(f"{path}: not a MONAI SegResNet state dict (missing {error.args[0]!r})") from None
    if init.shape[1] != 4 or final.shape[0] != len(REGIONS):
        raise TrainingError(f"{path}: segmenter has {init.shape[1]} inputs and {final.shape[0]} outputs; "
                            f"expected 4 sequences and {len(REGIONS)} regions")

    def blocks(prefix: str) -> tuple:
        found: dict = {}
        for key in state:
            match = re.fullmatch(rf"{prefix}\.(\d+)\.(\d+)\.conv1\.conv\.weight", key)
            if match:
                found.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
        return tuple(len(found[i]) for i in sorted(found))

    try:
        return SegmenterConfig(init_filters=int(init.shape[0]), blocks_down=blocks("down_layers"),
                               blocks_up=blocks("up_layers"))
    except ValueError as error:
        raise TrainingError(f"{path}: segmenter sizes are not a valid SegResNet ({error})") from None


def _permute_channels(state: dict, input_order: Optional[SequenceT[str]], output_order: Optional[SequenceT[str]],
                      path: str | Path) -> dict:
    """Reorder the first conv's inputs to canonical sequences and the last conv's outputs to WT, TC, ET."""
    state = dict(state)
    if input_order is not None:
        order = [parse_sequence(s) for s in input_order]
        if sorted(order, key=SEQUENCES.index) != list(SEQUENCES):
            raise TrainingError(f"{path}: input order {list(input_order)} must name the four sequences once each")
        index = [order.index(s) for s in SEQUENCES]
        state["convInit.conv.weight"] = state["convInit.conv.weight"][:, index]
    if output_order is not None:
        names = [str(n).upper() for n in output_order]
        if sorted(names) != sorted(REGIONS):
            raise TrainingError(f"{path}: output order {list(output_order)} must name WT, TC and ET once each")
        index = [names.index(r) for r in REGIONS]
        for key in ("conv_final.2.conv.weight", "conv_final.2.conv.bias"):
            if key in state:
                state[key] = state[key][index]
    return state


def load_segmenter_weights(path: str | Path, input_order: Optional[SequenceT[str]] = None,
                           output_order: Optional[SequenceT[str]] = None):
    """A SegResNet with existing weights: project checkpoint, state dict file, MONAI bundle or run folder.

    A state dict that does not fit ``build_segmenter`` raises :class:`TrainingError` naming
    the file and the first mismatch.
    """
    from ..core.checkpoints import build_model, find_state_dict, is_project_checkpoint, read_checkpoint

    path = Path(path)
    if path.is_dir():
        candidates = [path / "segmenter.pt", path / "models" / "model.pt"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise TrainingError(f"{path}: no segmenter.pt and no MONAI bundle models/model.pt in the folder")
        path = found[0]
    payload = read_checkpoint(path)
    if is_project_checkpoint(payload):
        if payload.get("kind") != "segmenter":
            raise TrainingError(f"{path}: holds a {payload.get('kind')} checkpoint, not a segmenter")
        if input_order is None and output_order is None:
            return build_model(payload, path)
        payload = {"state_dict": payload["state_dict"]}
    state = find_state_dict(payload, _STATE_KEYS)
    if state is None:
        raise TrainingError(f"{path}: no segmenter state dict in the file")
    state = _permute_channels(_strip_prefix(state), input_order, output_order, path)
    model = build_segmenter(infer_segmenter_config(state, path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = " ".join(str(error).split())[:300]
        raise TrainingError(f"{path}: segmenter weights do not fit SegResNet ({first})") from None
    return model.eval()


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class SegmenterTrainingOptions(TrainOptions):
    """``mrisynth train segmenter`` options."""

    config: str = "small"
    image_size: Optional[int] = None
    segmenter_config: Optional[SegmenterConfig] = None
    crop_size: tuple = (128, 128, 128)
    init: Optional[Path] = None
    input_order: Optional[tuple] = None
    output_order: Optional[tuple] = None
    tumour_fraction: float = 0.5

    def model_config(self) -> SegmenterConfig:
        """``segmenter_config`` or the ``config`` preset."""
        return preset_config(self.segmenter_config, self.config, SegmenterConfig)


def segmenter_batches(cases: SequenceT[PreparedCase], batch_size: int, crop: tuple, tumour_fraction: float):
    """``batches(steps, rng)`` for the epoch loop: z-scored 4-sequence crops and their WT/TC/ET masks."""

    def epoch(steps: int, rng: np.random.Generator) -> Iterator[dict]:
        for _ in range(steps):
            images, regions = [], []
            for _ in range(batch_size):
                case = cases[int(rng.integers(len(cases)))]
                box = crop_box(case.brain.shape, crop, random_centre(case, rng, tumour_fraction))
                images.append(np.stack([case.zscored_crop(s, box, crop) for s in SEQUENCES]))
                regions.append(label_to_regions(take_crop(case.label, box, crop)))
            yield {"images": np.stack(images).astype(np.float32), "regions": np.stack(regions).astype(np.float32)}

    return epoch


def dice_bce_loss() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Dice (MONAI, sigmoid) + binary cross-entropy over the three region channels."""
    dice = DiceLoss(sigmoid=True)

    def loss(logits: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return dice(logits, regions) + F.binary_cross_entropy_with_logits(logits, regions)

    return loss


# --------------------------------------------------------------------------- validation


def region_dice(probabilities: np.ndarray, label: np.ndarray, prefix: str = "val_dice") -> dict:
    """Dice per region (WT, TC, ET) of thresholded probabilities [3, Z, H, W] against a label map,
    and their mean under ``prefix`` itself (the headline that picks a validator's best epoch)."""
    truth = label_to_regions(np.asarray(label))
    scores = {f"{prefix}_{name}": metrics.dice(probabilities[i] > 0.5, truth[i]) for i, name in enumerate(REGIONS)}
    scores[prefix] = float(np.mean(list(scores.values())))
    return scores


def segment_regions(model, volumes: np.ndarray, brain: np.ndarray, device) -> np.ndarray:
    """WT/TC/ET probabilities [3, Z, H, W] of z-scored volumes [4, Z, H, W], inside the brain box as the pipeline."""
    from ..core.model_grid_inputs import brain_box
    from ..core.stages import segmenter_roi

    box = (slice(None),) + brain_box(brain, margin=4)
    inside = np.ascontiguousarray(volumes[box])
    out = np.zeros((len(REGIONS),) + brain.shape, dtype=np.float32)
    out[box] = predict_region_probabilities(model, torch.from_numpy(inside)[None],
                                            roi_size=segmenter_roi(inside.shape[1:]), device=device,
                                            output_device="cpu")[0].numpy()
    return out


def validate_segmenter(model, cases: SequenceT[PreparedCase], device) -> dict:
    """Mean Dice per region on whole validation volumes (and their mean, ``val_dice``)."""
    if not cases:
        return {}
    rows = []
    for case in cases:
        volumes = np.stack([case.zscored(s) for s in SEQUENCES])
        rows.append(region_dice(segment_regions(model, volumes, case.brain, device), case.label))
    return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}


# --------------------------------------------------------------------------- the command


def run_image_size(run_dir: Path, requested: Optional[int]) -> int:
    """The model grid of the run: the stage-1 model's image size (``requested`` must agree), else ``requested``."""
    stage1 = load_run_model(run_dir, "stage1")
    if stage1 is not None:
        size = int(stage1.config.image_size)
        if requested is not None and int(requested) != size:
            raise TrainingError(f"--image-size {requested} differs from {run_dir / 'stage1.pt'} ({size}); "
                                "the segmenter must see the stage-1 model grid")
        return size
    return int(requested or 240)


def train_segmenter(options: SegmenterTrainingOptions, progress: Optional[Callable[[float, str], None]] = None,
                    echo: Optional[Callable[[str], None]] = None) -> TrainingResult:
    """Train (or resume) the tumour segmenter in ``options.run_dir`` and write ``segmenter.pt``."""
    budget, cases, run_dir, log, device, rng, state = start_run(options, "segmenter", echo)
    image_size = int(state["config"]["image_size"]) if state else run_image_size(run_dir, options.image_size)
    if options.init is not None and not state:
        model = load_segmenter_weights(options.init, options.input_order, options.output_order)
        log(f"starting from {options.init}")
    else:
        config = SegmenterConfig.from_dict(state["config"]["segmenter"]) if state else options.model_config()
        model = build_segmenter(config)
    config = model.config
    crop = crop_size_for(options.crop_size, config.downsample_factor)
    model.to(device)
    log(f"segmenter on {device}: {config.to_dict()}, crops {crop}, model grid {image_size}")

    split = load_or_create_split(run_dir, [c.case_id for c in cases], options.val_cases, options.seed, log)
    store = PreparedCaseStore(run_dir, image_size, log)
    by_id = {c.case_id: c for c in cases}
    train_cases = store.get_all([by_id[i] for i in split.train])
    val_cases = store.get_all([by_id[i] for i in split.validation])

    steps = options.steps_per_epoch or max(1, len(train_cases) // options.batch_size)
    total_updates = max(1, options.epochs * steps // options.accumulation)
    optimizer = make_optimizer(model.parameters(), options.learning_rate, options.weight_decay, total_updates,
                               min(options.warmup_steps, total_updates // 10), kind=options.optimizer,
                               schedule=options.lr_schedule)
    trainer = EpochTrainer("segmenter", options, {"segmenter": model}, {"segmenter": optimizer}, device, rng, log,
                           progress, config={"segmenter": config.to_dict(), "image_size": image_size,
                                             "crop_size": list(crop), "options": options.to_dict()}, budget=budget,
                           select_by=("val_dice",))
    if state:
        trainer.restore(state)
    loss_fn = dice_bce_loss()

    def step(batch: dict) -> dict:
        images = torch.from_numpy(batch["images"]).to(device)
        regions = torch.from_numpy(batch["regions"]).to(device)
        with autocast_context(device):
            logits = model(images)
        loss = loss_fn(logits, regions)
        trainer.backward(loss)
        return {"total": float(loss.detach())}

    result = trainer.run(steps, segmenter_batches(train_cases, options.batch_size, crop, options.tumour_fraction),
                         step, lambda: validate_segmenter(model, val_cases, device))
    info = bundle_training_info(result, trainer.select_weights())
    model.eval()
    info.update({"image_size": image_size, "crop_size": list(crop), "init": str(options.init) if options.init else None})
    result.bundle = write_run_bundle(run_dir, "segmenter", model.cpu(), info, log)
    return result
