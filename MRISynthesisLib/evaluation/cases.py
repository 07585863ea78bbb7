"""Evaluation of a model bundle on complete cases: finding the cases, and one row per case x target x
stage with image similarity and the segmentation of the completed set.

For every case (all four sequences; a BraTS label map when there is one) and every target, the
target is synthesised from the other three acquired sequences and compared with the acquired one:

* image similarity before (stage 1) and after refinement: SSIM over the brain, the tumour
  region (label > 0) and the healthy rest, PSNR, NMSE and MAE (from :func:`pipeline.synthesize`,
  which computes them with :mod:`metrics`); without a label map the tumour region is the
  pseudo-label's (below), as in the paper's Table 2;
* tumour segmentation: the segmenter (the bundle's, or another one) on the four acquired
  sequences gives the *pseudo-label* (the reference row, computed first); the segmenter on the
  *completed set* (three acquired + the synthetic target, on the model grid and z-scored as the
  pipeline does), mapped back to the case grid, is scored with Dice and HD95 (WT, TC, ET) against
  the label map (``dice_*``, ``hd95_*``; empty without one) and against the pseudo-label
  (``pseudo_dice_*``, ``pseudo_hd95_*``: the paper's Table 3 protocol);
* the intensity-encoding value comes from :mod:`.intensity` (``mean``, ``2sigma`` or ``gt``).

One row per case x target x stage (``stage1``, ``final``; ``acquired`` for the reference, with
target ``none``). :func:`writing.write_evaluation` turns the rows into a CSV, a Markdown summary
(:mod:`.tables`) and box plots (:mod:`.plots`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..core.io import CaseFiles, InputError, find_case_files, is_image_file, read_image, same_grid, resample_to
from ..core.progress import ProgressCallback, scaled
from ..metrics import protocol_columns
from ..sequences import SEQUENCES, Sequence, parse_sequence
from .rows import REFERENCE_TARGET, reported_stages

__all__ = [
    "EvaluationError",
    "find_evaluation_cases",
    "read_label",
    "evaluate_cases",
    "evaluate_case",
    "segment_label",
]


class EvaluationError(InputError):
    """Evaluation input that cannot be used (no cases, an incomplete case); one line."""


# --------------------------------------------------------------------------- finding cases


def _holds_images(folder: Path) -> bool:
    return any(entry.is_file() and is_image_file(entry) for entry in folder.iterdir())


def find_evaluation_cases(data_dir: str | Path, limit: Optional[int] = None) -> list[CaseFiles]:
    """Complete cases under ``data_dir``: its sub-folders (sorted), or the folder itself if it is one.

    Every case must hold the four sequences (a label map is optional: without one, Dice is scored
    against the pseudo-label only); the first that does not is a one-line :class:`EvaluationError`
    naming it. ``limit`` keeps the first cases only.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EvaluationError(f"{data_dir}: not a folder")
    if limit is not None and limit < 1:
        raise EvaluationError(f"number of cases must be at least 1, got {limit}")
    if _holds_images(data_dir):
        folders = [data_dir]
    else:
        folders = [entry for entry in sorted(data_dir.iterdir())
                   if entry.is_dir() and not entry.name.startswith(".") and _holds_images(entry)]
    if not folders:
        raise EvaluationError(f"{data_dir}: no case folders (BraTS-style folders with t1n, t1c, t2w, t2f "
                              "and, optionally, seg images)")
    cases = []
    for folder in folders[:limit]:
        files = find_case_files(folder)
        if any(sequence not in files.sequences for sequence in SEQUENCES):
            raise EvaluationError(files.incomplete_reason("evaluation"))
        cases.append(files)
    return cases


# --------------------------------------------------------------------------- one case


def read_label(files: CaseFiles, reference: sitk.Image) -> sitk.Image:
    """The case's label map on ``reference``'s grid, BraTS 2021 enhancing label 4 read as 3."""
    if files.label is None:
        raise EvaluationError(f"{files.folder}: no label map (*-seg file)")
    label = read_image(files.label, check=False)
    if label.GetDimension() != 3:
        raise EvaluationError(f"{files.label}: label map is not 3D")
    if not same_grid(label, reference):
        label = resample_to(label, reference, sitk.sitkNearestNeighbor)
    array = sitk.GetArrayFromImage(label)
    if array.max() == 4 and not (array == 3).any():
        array = np.where(array == 4, 3, array)
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(reference)
    return out


def segment_label(segmenter, volumes: np.ndarray, brain: np.ndarray, device) -> np.ndarray:
    """BraTS label map (uint8, 0 outside ``brain``) of the segmenter on z-scored [4, Z, H, W] volumes.

    Like the pipeline's tumour regions, the segmenter runs on the brain's bounding box (4-voxel
    margin) only: the model grid is mostly background.
    """
    import torch

    from ..models.segmenter import predict_region_probabilities, regions_to_label
    from ..core.model_grid_inputs import brain_box
    from ..core.stages import segmenter_roi

    box = brain_box(brain, margin=4)
    cropped = np.ascontiguousarray(volumes[(slice(None),) + box])
    probabilities = predict_region_probabilities(
        segmenter, torch.from_numpy(cropped)[None], roi_size=segmenter_roi(cropped.shape[1:]), device=device,
        output_device="cpu")
    label = np.zeros(brain.shape, dtype=np.uint8)
    label[box] = regions_to_label(probabilities[0].numpy())
    label[~brain] = 0
    return label


def _label_on_input_grid(label: np.ndarray, prepared) -> sitk.Image:
    """Model-grid label -> uint8 image on the case grid (nearest neighbour)."""
    image = prepared.grid.from_model(label.astype(np.float32), nearest=True)
    out = sitk.GetImageFromArray(np.rint(sitk.GetArrayFromImage(image)).astype(np.uint8))
    out.CopyInformation(image)
    return out


class _Segmentation:
    """A segmenter on completed sets of one case (model grid), scored against its label map and the
    pseudo-label (the segmenter on the four acquired sequences, made first by :meth:`pseudo_label`)."""

    def __init__(self, prepared, segmenter, truth: Optional[sitk.Image], device) -> None:
        self.prepared = prepared
        self.segmenter = segmenter
        self.device = device
        self.truth = None if truth is None else sitk.GetArrayFromImage(truth)
        self.pseudo: Optional[np.ndarray] = None
        # metrics take spacing in array axis order (z, y, x)
        self.spacing = tuple(prepared.reference.GetSpacing()[::-1])

    def predict(self, synthetic: Mapping) -> sitk.Image:
        """Label image (case grid) of the completed set with ``{target: model-grid volume}`` put in."""
        from ..core.stages import completed_set

        volumes = completed_set(self.prepared, dict(synthetic))
        label = segment_label(self.segmenter, volumes, self.prepared.brain, self.device)
        return _label_on_input_grid(label, self.prepared)

    def pseudo_label(self) -> sitk.Image:
        """The segmenter on the four acquired sequences, kept as the pseudo-label of every later score."""
        predicted = self.predict({})
        self.pseudo = sitk.GetArrayFromImage(predicted)
        return predicted

    def score(self, predicted: sitk.Image) -> dict:
        """Dice and HD95 (mm) of WT, TC and ET against the label map (None without one) and, as
        ``pseudo_*``, against the pseudo-label."""
        from ..metrics import SEGMENTATION_METRICS, segmentation_metrics

        array = sitk.GetArrayFromImage(predicted)
        scores = {key: None for key in SEGMENTATION_METRICS}
        if self.truth is not None:
            scores.update(segmentation_metrics(array, self.truth, self.spacing))
        if self.pseudo is None:
            raise RuntimeError("the pseudo-label must be made before a completed set is scored")
        pseudo = segmentation_metrics(array, self.pseudo, self.spacing)
        scores.update({f"pseudo_{key}": value for key, value in pseudo.items()})
        return scores


def _segmentation_file(case_id: str, target: Optional[Sequence], stage: str) -> str:
    if target is None:
        return f"{case_id}-segmentation-acquired.nii.gz"
    suffix = "" if stage == "final" else f"-{stage}"
    return f"{case_id}-{target.value}-segmentation{suffix}.nii.gz"


def evaluate_case(files: CaseFiles, bundle, device: str = "auto", targets: Optional[Iterable] = None,
                  progress: Optional[ProgressCallback] = None, volumes_dir: Optional[Path] = None,
                  protocol: str = "brain", intensity: str = "mean", intensity_seed: int = 0,
                  segmenter=None, uncertainty: int = 0, uncertainty_seed: int = 0) -> list:
    """Rows for one case (see the module docstring); ``bundle`` is a loaded ModelBundle.

    ``uncertainty`` (samples, 0: off) adds each target's uncertainty map and its calibration columns
    (:mod:`.calibration`) to the final-stage rows, with the reliability curve under ``reliability``.

    ``segmenter`` (a loaded network) replaces the bundle's; ``intensity``/``intensity_seed`` choose the
    intensity-encoding value (:mod:`.intensity`). ``volumes_dir`` also receives the synthetic volumes
    (via :func:`result_files.write_result`) and the predicted label maps
    ``<case>-<target>-segmentation[-stage1].nii.gz`` and ``<case>-segmentation-acquired.nii.gz`` (the
    pseudo-label).
    """
    from ..core.devices import resolve_device
    from ..core.model_grid_inputs import prepare_model_grid_inputs
    from ..core.pipeline import synthesize
    from .intensity import check_intensity_mode, intensity_values, model_priors

    check_intensity_mode(intensity)
    report = progress or (lambda fraction, message: None)
    images = {s: read_image(p) for s, p in sorted(files.sequences.items(), key=lambda i: SEQUENCES.index(i[0]))}
    reference = images[SEQUENCES[0]]
    label = read_label(files, reference) if files.label is not None else None
    wanted = [s for s in SEQUENCES if targets is None or s in {parse_sequence(t) for t in targets}]
    segmenter = segmenter if segmenter is not None else bundle.segmenter
    has_segmenter = segmenter is not None
    # The case on the model grid as synthesize prepares it: the pseudo-label and the true intensity
    # must exist before the synthetic images are made and scored.
    prepared = prepare_model_grid_inputs(images, [], bundle.stage1) if has_segmenter or intensity == "gt" else None
    segmentation = None
    pseudo_label = None
    if has_segmenter:
        torch_device = resolve_device(device)
        segmenter.to(torch_device)
        segmentation = _Segmentation(prepared, segmenter, label, torch_device)
        report(0.0, "segmenting the acquired sequences (pseudo-label)")
        pseudo_label = segmentation.pseudo_label()
    label_source = "truth" if label is not None else ("pseudo" if pseudo_label is not None else "none")
    settings = intensity_values(intensity, wanted, model_priors(bundle), files.case_id, intensity_seed, prepared)
    run = {"label_source": label_source, "intensity": intensity}
    result = synthesize(images, bundle, targets=wanted, device=device, tumour_maps=False,
                        ground_truth={s: images[s] for s in wanted}, label=label if label is not None else pseudo_label,
                        intensity=settings, keep_model_grid=has_segmenter,
                        progress=scaled(report, 0.05 if has_segmenter else 0.0, 0.7 if has_segmenter else 0.95),
                        metrics_protocol=protocol, uncertainty=uncertainty, uncertainty_seed=uncertainty_seed)
    stages = reported_stages(bundle.refiner is not None)
    rows = []
    for sequence, target in result.targets.items():
        values = {"stage1": target.stage1_metrics, "final": target.metrics}
        for stage in stages:
            rows.append({"case": files.case_id, "target": sequence.value, "stage": stage,
                         "protocol": protocol, **{k: values[stage].get(k) for k in protocol_columns(protocol)},
                         **run, "intensity_value": target.intensity})
    if uncertainty:
        _add_calibration(rows, result, images, stages[-1])
    predictions = {}
    if segmentation is not None:
        model_grid = result.model_grid
        by_key = {(row["target"], row["stage"]): row for row in rows}
        jobs = [(sequence, stage) for sequence in result.targets for stage in stages]
        for index, (sequence, stage) in enumerate(jobs):
            report(0.7 + 0.25 * index / (len(jobs) + 1), f"segmenting {sequence.value} ({stage})")
            volume = (model_grid.stage1 if stage == "stage1" else model_grid.final)[sequence]
            predicted = segmentation.predict({sequence: volume})
            by_key[(sequence.value, stage)].update(segmentation.score(predicted))
            predictions[_segmentation_file(files.case_id, sequence, stage)] = predicted
        report(0.95, "scoring the acquired sequences (reference, the pseudo-label itself)")
        reference_row = {"case": files.case_id, "target": REFERENCE_TARGET, "stage": "acquired",
                         "protocol": protocol, **{k: None for k in protocol_columns(protocol)},
                         **segmentation.score(pseudo_label), **run, "intensity_value": None}
        rows.append(reference_row)
        predictions[_segmentation_file(files.case_id, None, "acquired")] = pseudo_label
    if volumes_dir is not None:
        _write_volumes(result, predictions, Path(volumes_dir), files.case_id)
    report(1.0, f"{files.case_id} done")
    return rows


def _add_calibration(rows: list, result, images: Mapping, stage: str) -> None:
    """The calibration columns of each target's uncertainty map, on its ``stage`` row (the final result)."""
    from .calibration import synthesis_grid, target_calibration

    arrays, brain = synthesis_grid(images)
    for row in rows:
        if row["stage"] == stage:
            row.update(target_calibration(result.targets[parse_sequence(row["target"])], brain, arrays) or {})


def _write_volumes(result, predictions: Mapping, folder: Path, case_id: str) -> None:
    from ..core.io import write_image
    from ..core.result_files import write_result

    write_result(result, folder, case_id)
    for name, image in predictions.items():
        write_image(image, folder / name, f"segmentation by MRISynthesis {result.model_name}")


def evaluate_cases(case_dirs: Iterable, bundle, device: str = "auto",
                   progress: Optional[ProgressCallback] = None, targets: Optional[Iterable] = None,
                   volumes_dir: Optional[Path] = None, protocol: str = "brain", intensity: str = "mean",
                   intensity_seed: int = 0, segmenter=None, uncertainty: int = 0,
                   uncertainty_seed: int = 0) -> list:
    """Evaluate ``bundle`` (loaded or a name/path) on complete case folders; returns all rows.

    ``case_dirs`` are case folders (or :class:`io.CaseFiles`); ``targets`` defaults to all four.
    ``segmenter`` (a loaded network, or a path for :func:`bundles.load_segmenter`) replaces the
    bundle's; ``intensity`` is ``mean``, ``2sigma`` or ``gt`` (:mod:`.intensity`).
    """
    from ..core.bundles import load_bundle, load_segmenter
    from .intensity import check_intensity_mode, check_intensity_seed

    check_intensity_mode(intensity)
    check_intensity_seed(intensity_seed)
    bundle = load_bundle(bundle)
    if isinstance(segmenter, (str, Path)):
        segmenter = load_segmenter(segmenter)
    cases = [c if isinstance(c, CaseFiles) else _complete_case(Path(c)) for c in case_dirs]
    if not cases:
        raise EvaluationError("no cases to evaluate")
    rows: list = []
    for index, files in enumerate(cases):
        low, high = index / len(cases), (index + 1) / len(cases)
        rows.extend(evaluate_case(files, bundle, device, targets, scaled(progress, low, high), volumes_dir,
                                  protocol=protocol, intensity=intensity, intensity_seed=intensity_seed,
                                  segmenter=segmenter, uncertainty=uncertainty, uncertainty_seed=uncertainty_seed))
    return rows


def _complete_case(folder: Path) -> CaseFiles:
    """One case folder checked like :func:`find_evaluation_cases` checks each case."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder")
    if not _holds_images(folder):
        raise EvaluationError(f"{folder}: no image files in the case folder")
    return find_evaluation_cases(folder)[0]
