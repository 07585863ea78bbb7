"""Per-voxel uncertainty of a synthesis: how much it changes under every variation the model allows, under
a one-voxel misplacement of the anatomy, under a change of the tissue contrast it cannot know, and where its
inputs are rare.

Of the ``N`` members of the spread, the first is the synthesis itself; the other ``N - 1`` are samples that
each vary it in every way the model allows without retraining:

* ``flip``: every other sample (the first one included) flips the inputs along the patient's left-right
  axis on the model grid (the LPS arrays' last axis), synthesises and flips the result back;
* ``dropout``: the dropout layers of the transformer bottleneck (the HF-GAN "modality infuser") stay on,
  when the network has any with a rate above 0 (the bundled demo model: 0.1);
* ``intensity``: the intensity-encoding value is drawn from the target's prior (normal, the model's own
  mean and sigma) and clipped to mean +- 2 sigma, the paper's 2-sigma idea; only with intensity encoding;
* ``refiner_shift``: the box the Refiner sees around the brain moves by up to :data:`MAX_SHIFT` voxels
  along each axis (it has that much margin; zeros beyond the volume), so the U-Net's pooling grid and the
  sliding windows fall elsewhere on the anatomy, at the cost of a plain refinement.

``position``: the synthesis's standard deviation over every placement within one voxel of the model grid
(its 3 x 3 x 3 neighbourhood), added in variance to the samples' spread. No sample moves an edge: a
network that is sure where a tissue border lies is still wrong there when the acquired sequences
disagree by a voxel (residual misregistration, partial volume, a thicker slice), and on held-out phantoms
most of the worst errors sit on such borders (see ``scripts/uncertainty_calibration.py``).

``contrast``: :data:`CONTRAST_SPREAD` times the synthesis's distance from its brain median, added in variance
too. The inputs do not fix the contrast of the acquisition a synthesis stands in for (its TR, TE, TI, field
strength): the model draws one typical contrast, and where the acquired one is stronger or weaker the voxels
far from the brain's median intensity (CSF, white matter, enhancement) are off most, all in one
direction. On phantoms (seeds 5100-5102, not the calibration's held-out set) the worst-error decile erred
in one direction for at least 87 % of its voxels in 10 of 12 case-target pairs: a contrast error, which
none of the samples varies (the intensity code would, in a model that had learned to follow it).

``rarity``: :data:`RARITY_SPREAD` times the synthesis's brain median times the voxel's input rarity
(:func:`input_rarity`: how many e-folds rarer its combination of input intensities is than the brain's
typical voxel), added in variance too. A network is surest on the tissues it saw most; a voxel whose inputs
are unlike most of its brain (tumour, oedema, necrosis, vessels, partial volume at borders) is also rare in
any training set, and there its synthesis is a guess the samples do not reveal (they vary the network, not
what it has seen). On tuning phantoms (seeds 5100-5105, not the calibration's held-out set) part of the
worst-error decile sat in the tumour region, where the other parts said little (seed 5101's T1: AUROC 0.55
without this part, 0.75 with it).

The cost is kept low by sharing work: the synthesis itself is a member (no second plain run), the encoder
(most of stage 1) runs once per slice for the plain and once for the flipped inputs, and only the
bottleneck and decoder run per sample, several samples' slices in one batch. Everything is seeded
(``seed`` and the target), so the same seed gives the same map.
"""
from __future__ import annotations

import contextlib
import dataclasses
import numbers
from typing import Iterator, Optional, Sequence as TypingSequence, Tuple

import numpy as np

from .inference import RunHooks, Stage1Options, _autocast, auto_batch_size, run_refiner
from .model_grid_inputs import ModelGridInputs, brain_box
from .preprocessing import fit_zscore
from .progress import ProgressCallback, check_cancel
from .stages import _generator_channels, _unit_from_stage1, check_network_output
from ..sequences import SEQUENCES, Sequence

__all__ = ["SOURCES", "INTENSITY_SIGMA_LIMIT", "CONTRAST_SPREAD", "SamplePlan", "check_samples", "check_seed",
           "has_dropout", "plan_samples", "dropout_on", "stage1_samples", "refined_samples", "positional_spread",
           "contrast_spread", "RARITY_SPREAD", "input_rarity", "rarity_spread", "spread_on_model_grid",
           "region_summary"]

#: The kinds of variation a sample may combine (the report lists those a model allowed).
SOURCES = ("flip", "dropout", "intensity", "refiner_shift", "position", "contrast", "rarity")
#: Largest move (voxels, each axis) of the Refiner's box: the margin the pipeline leaves around the brain.
MAX_SHIFT = 4
#: Intensity-encoding draws are clipped to the prior mean +- this many sigma (the paper's 2-sigma idea).
INTENSITY_SIGMA_LIMIT = 2.0
#: Standard deviation of the contrast term per unit of distance from the brain median. Chosen on phantoms
#: that are not the calibration's held-out set (seeds 5100-5102; AUROC flat within 0.002 from 0.5 to 1.0,
#: the smaller end of the best values taken), like the positional term's neighbourhood.
CONTRAST_SPREAD = 0.7
#: Standard deviation of the rarity term per e-fold of rarity, as a share of the synthesis's brain median.
#: Chosen like the contrast factor, on phantoms that are not the calibration's held-out set (seeds 5100-5105,
#: 24 case-target pairs): AUROC 0.746 without the term, 0.779 at 0.2, within 0.002 of it from 0.15 to 0.25.
RARITY_SPREAD = 0.2
#: The rarity's joint histogram: bins per input over +- RARITY_RANGE interquartile ranges around the input's
#: brain median, smoothed by RARITY_SMOOTHING bins (a kernel density estimate on a grid; AUROC within 0.005
#: for 12 to 24 bins and smoothing 0.5 to 1 on seeds 5100-5102).
RARITY_BINS = 16
RARITY_RANGE = 4.0
RARITY_SMOOTHING = 0.7
#: Each input's quartiles for the rarity's standardisation come from every k-th brain voxel, k the brain's
#: voxel count // QUARTILE_SAMPLE (so from QUARTILE_SAMPLE to twice as many voxels; all of a smaller brain).
QUARTILE_SAMPLE = 200_000


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """What each of the ``len(flips)`` samples does (the synthesis itself, the spread's first member, is not
    among them): flip or not, its intensity code, its refiner offset; ``sources``: every kind of variation
    the map holds."""

    flips: Tuple[bool, ...]
    intensities: Tuple[Optional[float], ...]
    offsets: Tuple[Tuple[int, int, int], ...]
    dropout: bool
    sources: Tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.flips)


def check_samples(samples: object, name: str = "uncertainty") -> int:
    """The number of samples as an int; 0 turns the map off, 1 is refused (a spread needs two)."""
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral):
        raise TypeError(f"{name} must be a whole number of samples, got {type(samples).__name__}")
    if int(samples) < 0:
        raise ValueError(f"{name} must be 0 or more, got {int(samples)}")
    if int(samples) == 1:
        raise ValueError(f"{name} must be 0 (off) or at least 2: a spread needs two samples")
    return int(samples)


def check_seed(seed: object, name: str = "uncertainty seed") -> int:
    """A non-negative int seed."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"{name} must be a whole number 0 or more, got {seed!r}")
    return int(seed)


def _dropout_modules(generator) -> list:
    """The bottleneck's modules whose output depends on train mode through dropout (rate above 0)."""
    from torch import nn

    found = []
    for module in generator.middle.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            found.append(module)
        elif float(getattr(module, "attn_dropout", 0.0) or 0.0) > 0:  # SelfAttention: dropout inside SDPA
            found.append(module)
    return found


def has_dropout(generator) -> bool:
    """True when the generator's transformer bottleneck has dropout that can be kept on at inference."""
    return bool(_dropout_modules(generator))


@contextlib.contextmanager
def dropout_on(generator) -> Iterator[None]:
    """Eval mode for the whole generator except the bottleneck's dropout, restored afterwards."""
    was_training = generator.training
    generator.eval()
    modules = _dropout_modules(generator)
    for module in modules:
        module.train()
    try:
        yield
    finally:
        for module in modules:
            module.eval()
        generator.train(was_training)


def plan_samples(samples: int, seed: int, target: Sequence, generator, refiner, intensity: float) -> SamplePlan:
    """Draw ``samples`` samples' variations from ``np.random.default_rng([seed, target index])``; the first
    sample is flipped (the unflipped synthesis itself precedes it in the spread)."""
    rng = np.random.default_rng([check_seed(seed), SEQUENCES.index(target)])
    sources = ["flip"]
    dropout = has_dropout(generator)
    if dropout:
        sources.append("dropout")
    encoded = bool(getattr(generator.config, "intensity_encoding", True)) and np.isfinite(intensity)
    intensities: list = []
    if encoded:
        sources.append("intensity")
        mean, sigma = generator.intensity_priors[target]
        draws = rng.normal(mean, sigma, size=samples)
        limit = INTENSITY_SIGMA_LIMIT * sigma
        intensities = [float(np.clip(v, max(mean - limit, 0.0), min(mean + limit, 1.0))) for v in draws]
    else:
        intensities = [None] * samples
    offsets = [(0, 0, 0)] * samples
    if refiner is not None:
        sources.append("refiner_shift")
        offsets = [tuple(int(v) for v in rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=3)) for _ in range(samples)]
    sources.extend(["position", "contrast", "rarity"])
    flips = tuple(index % 2 == 0 for index in range(samples))
    return SamplePlan(flips=flips, intensities=tuple(intensities), offsets=tuple(offsets), dropout=dropout,
                      sources=tuple(sources))


@contextlib.contextmanager
def _seeded_torch(seed: int, device) -> Iterator[None]:
    """Torch's random state seeded for the block (dropout masks) and restored afterwards."""
    import torch

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def stage1_samples(prepared: ModelGridInputs, generator, target: Sequence, sources: list, plan: SamplePlan,
                   device, seed: int, options: Optional[Stage1Options] = None,
                   progress: Optional[ProgressCallback] = None, cancel=None) -> np.ndarray:
    """Stage 1 of every sample, ``[samples, Z, H, W]`` in unit range (brain only).

    Per chunk of brain slices the encoder runs once on the inputs and once on their left-right mirror;
    the bottleneck and decoder then run on several samples' slices per batch.
    """
    import torch

    channels, available = _generator_channels(prepared, generator, sources)
    brain = prepared.brain
    indices = np.flatnonzero(brain.reshape(brain.shape[0], -1).any(axis=1))
    out = np.full((plan.count,) + brain.shape, -1.0, dtype=np.float32)
    batch = (options.batch_size if options and options.batch_size else None) or auto_batch_size(device, generator)
    chunk = max(1, batch // 2)  # plain + mirrored slices make one encoder batch
    group = max(1, batch // chunk)  # samples whose slices share one decoder batch
    target_index = generator.modality_order.index(target)
    generator.to(device)
    with _seeded_torch(seed, device), dropout_on(generator) if plan.dropout else _plain_eval(generator), \
            torch.inference_mode(), _autocast(device, True):
        for start in range(0, indices.size, chunk):
            check_cancel(cancel)
            rows = indices[start:start + chunk]
            plain = np.ascontiguousarray(channels[rows])
            x = torch.from_numpy(np.concatenate([plain, plain[..., ::-1]])).to(device)
            mask = torch.zeros((x.shape[0], 4), dtype=torch.bool)
            mask[:, available] = True
            fused, skips = generator.encode(x, mask)
            for first in range(0, plan.count, group):
                members = list(range(first, min(first + group, plan.count)))
                pick = torch.cat([torch.arange(rows.size) + (rows.size if plan.flips[m] else 0) for m in members])
                pick = pick.to(device)
                codes = [plan.intensities[m] if plan.intensities[m] is not None else 0.0 for m in members]
                intensity = torch.tensor(np.repeat(codes, rows.size), dtype=torch.float32, device=device)
                target_t = torch.full((pick.numel(),), target_index, dtype=torch.long, device=device)
                tokens = generator.middle(fused[pick], target_t, intensity)
                y = generator.decoder(tokens, [skip[pick] for skip in skips])[:, 0].float().cpu().numpy()
                for n, member in enumerate(members):
                    slices = y[n * rows.size:(n + 1) * rows.size]
                    out[member, rows] = slices[..., ::-1] if plan.flips[member] else slices
            if progress:
                progress(min(1.0, (start + rows.size) / indices.size), "uncertainty: stage 1 samples")
    units = np.stack([_unit_from_stage1(volume, brain) for volume in out])
    for volume, unit in zip(out, units):
        check_network_output(volume, unit, brain, target, "stage 1 (uncertainty sample)")
    return units


@contextlib.contextmanager
def _plain_eval(generator) -> Iterator[None]:
    was_training = generator.training
    generator.eval()
    try:
        yield
    finally:
        generator.train(was_training)


def refined_samples(prepared: ModelGridInputs, refiner, target: Sequence, sources: list, stage1: np.ndarray,
                    plan: SamplePlan, device, options=None, progress: Optional[ProgressCallback] = None,
                    cancel=None, messages: Optional[list] = None) -> np.ndarray:
    """The Refiner on every stage-1 sample, each with its own window offset; ``[samples, Z, H, W]``."""
    brain = prepared.brain
    inputs = np.zeros((4,) + brain.shape, dtype=np.float32)
    for sequence in sources:
        inputs[SEQUENCES.index(sequence)] = fit_zscore(prepared.raw[sequence], brain).forward(
            prepared.raw[sequence], brain)
    # On volumes padded by twice the largest shift, the box (brain + MAX_SHIFT) is never cut by an edge and
    # stays inside after any shift, so every sample refines the whole brain.
    pad = 2 * MAX_SHIFT
    box = brain_box(np.pad(brain, pad), margin=MAX_SHIFT)
    padded_inputs = np.pad(inputs, [(0, 0)] + [(pad, pad)] * 3)
    finals = np.empty_like(stage1)
    log = messages.append if messages is not None else None
    for index, (volume, offset) in enumerate(zip(stage1, plan.offsets)):
        check_cancel(cancel)
        zscore = fit_zscore(volume, brain)
        normalised = zscore.forward(volume, brain)
        moved = tuple(slice(s.start + o, s.stop + o) for s, o in zip(box, offset))
        padded = np.pad(normalised, pad)
        padded[moved] = run_refiner(refiner, padded[moved], padded_inputs[(slice(None),) + moved],
                                    SEQUENCES.index(target), [SEQUENCES.index(s) for s in sources], device, options,
                                    RunHooks(None, cancel, log))
        refined = padded[(slice(pad, -pad),) * 3]
        finals[index] = np.clip(zscore.inverse(refined, brain), 0.0, None)
        check_network_output(refined, finals[index], brain, target, "the refiner (uncertainty sample)")
        if progress:
            progress((index + 1) / plan.count, f"uncertainty: refined sample {index + 1}/{plan.count}")
    return finals


def positional_spread(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Standard deviation of ``volume`` over its 27 placements within one voxel (each axis -1, 0, +1), that
    is over its 3 x 3 x 3 neighbourhood; outside the brain the volume counts as 0 (the synthesis has no
    signal there), so the brain's own border counts as an edge."""
    from scipy import ndimage

    inside = np.where(brain, volume, 0.0).astype(np.float64)
    mean = ndimage.uniform_filter(inside, size=3, mode="constant")
    square = ndimage.uniform_filter(inside * inside, size=3, mode="constant")
    return np.sqrt(np.clip(square - mean * mean, 0.0, None)).astype(np.float32)


def contrast_spread(volume: np.ndarray, brain: np.ndarray, factor: float = CONTRAST_SPREAD) -> np.ndarray:
    """``factor`` times ``|volume - median over the brain|`` inside the brain, 0 outside (and everywhere when
    the brain is empty): how far a voxel moves when the tissue contrast around the median changes."""
    brain = np.asarray(brain, dtype=bool)
    spread = np.zeros(np.shape(volume), dtype=np.float32)
    if brain.any():
        inside = np.asarray(volume, dtype=np.float64)[brain]
        spread[brain] = (factor * np.abs(inside - np.median(inside))).astype(np.float32)
    return spread


def input_rarity(inputs: TypingSequence[np.ndarray], brain: np.ndarray) -> np.ndarray:
    """Per brain voxel, ``max(0, log(typical density) - log(density))`` of its combination of input intensities:
    0 for the commoner half of the brain, growing with the distance from its common combinations; 0 outside
    the brain, and everywhere when no input varies over the brain.

    Each input is standardised by its brain median and interquartile range (robust to the tumour and to
    scanner scale) and clipped to +- :data:`RARITY_RANGE`; the density is the joint histogram of the brain's
    voxels (:data:`RARITY_BINS` per input) smoothed by a Gaussian of
    :data:`RARITY_SMOOTHING` bins (``scipy.ndimage``), read at each voxel's bin; "typical" is the density's
    median over the brain. A grid histogram rather than a kernel density library: the brain has up to
    millions of voxels in at most three dimensions, which a histogram handles in about a second.
    """
    from scipy import ndimage

    brain = np.asarray(brain, dtype=bool)
    rarity = np.zeros(brain.shape, dtype=np.float32)
    columns = []
    for volume in inputs:
        values = np.asarray(volume)[brain].astype(np.float64)
        if values.size == 0:  # an empty brain
            return rarity
        # Quartiles from every k-th brain voxel (QUARTILE_SAMPLE): sorting millions thrice costs seconds.
        low, median, high = np.percentile(values[::max(1, values.size // QUARTILE_SAMPLE)], [25, 50, 75])
        if high > low:  # an input that does not vary over the brain says nothing about rarity
            columns.append(np.clip((values - median) / (high - low), -RARITY_RANGE, RARITY_RANGE))
    if not columns:
        return rarity
    # The joint histogram by the flat bin index of each voxel (numpy.bincount: a tenth of histogramdd's time).
    shape = (RARITY_BINS,) * len(columns)
    bins = [np.minimum(((c + RARITY_RANGE) * (RARITY_BINS / (2 * RARITY_RANGE))).astype(np.int64), RARITY_BINS - 1)
            for c in columns]
    flat = np.ravel_multi_index(bins, shape)
    counts = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(np.float64)
    density = np.maximum(ndimage.gaussian_filter(counts, RARITY_SMOOTHING).ravel(), np.finfo(np.float64).tiny)
    # The typical voxel's density: the median over voxels, read from the histogram (each bin holds its voxels).
    order = np.argsort(density, kind="stable")
    typical = density[order][np.searchsorted(np.cumsum(counts.ravel()[order]), 0.5 * flat.size)]
    rarity[brain] = np.clip(np.log(typical) - np.log(density[flat]), 0.0, None).astype(np.float32)
    return rarity


def rarity_spread(inputs: TypingSequence[np.ndarray], synthesis: np.ndarray, brain: np.ndarray,
                  factor: float = RARITY_SPREAD) -> np.ndarray:
    """``factor`` times the synthesis's brain median times :func:`input_rarity` of ``inputs`` (same grid), in
    the synthesis's units; 0 outside the brain and for an empty brain."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        return np.zeros(np.shape(synthesis), dtype=np.float32)
    scale = float(np.median(np.asarray(synthesis, dtype=np.float64)[brain]))
    return (factor * scale * input_rarity(inputs, brain)).astype(np.float32)


def spread_on_model_grid(prepared: ModelGridInputs, bundle, target: Sequence, sources: list, intensity: float,
                         synthesis: np.ndarray, device, samples: int, seed: int = 0,
                         stage1_options: Optional[Stage1Options] = None, stage2_options=None,
                         progress: Optional[ProgressCallback] = None, cancel=None,
                         messages: Optional[list] = None) -> Tuple[np.ndarray, SamplePlan]:
    """(per-voxel uncertainty in unit range, 0 outside the brain; the plan of the ``samples - 1`` samples).

    The uncertainty is ``sqrt(var + position^2 + contrast^2 + rarity^2)``: ``var`` the variance over
    ``synthesis`` (the target's final volume on the model grid, unit range) and the samples, ``position``
    :func:`positional_spread` and ``contrast`` :func:`contrast_spread` of it, ``rarity`` :func:`rarity_spread`
    of the ``sources`` (the acquired inputs on the model grid)."""
    report = progress or (lambda fraction, message: None)
    plan = plan_samples(samples - 1, seed, target, bundle.stage1, bundle.refiner, intensity)
    torch_seed = int(np.random.default_rng([check_seed(seed), SEQUENCES.index(target), 1]).integers(2 ** 31))
    share = 0.3 if bundle.refiner is not None else 1.0
    volumes = stage1_samples(prepared, bundle.stage1, target, sources, plan, device, torch_seed, stage1_options,
                             lambda f, m: report(share * f, m), cancel)
    if bundle.refiner is not None:
        volumes = refined_samples(prepared, bundle.refiner, target, sources, volumes, plan, device, stage2_options,
                                  lambda f, m: report(share + (1 - share) * f, m), cancel, messages)
    members = np.concatenate([np.asarray(synthesis, dtype=np.float32)[None], volumes])
    variance = members.var(axis=0, dtype=np.float64)
    position = positional_spread(synthesis, prepared.brain).astype(np.float64)
    contrast = contrast_spread(synthesis, prepared.brain).astype(np.float64)
    rarity = rarity_spread([prepared.raw[s] for s in sources], synthesis, prepared.brain).astype(np.float64)
    spread = np.sqrt(variance + position * position + contrast * contrast + rarity * rarity).astype(np.float32)
    spread[~prepared.brain] = 0.0
    return spread, plan


def region_summary(spread: np.ndarray, brain: np.ndarray, tumour: Optional[np.ndarray]) -> dict:
    """Mean uncertainty over the brain, the tumour region and the healthy rest (None where a region is empty
    or unknown); arrays on one grid."""
    def mean(region: Optional[np.ndarray]) -> Optional[float]:
        return float(spread[region].mean()) if region is not None and region.any() else None

    region = None if tumour is None else (tumour & brain)
    return {"mean_brain": mean(brain), "mean_tumour": mean(region),
            "mean_healthy": mean(brain & ~region) if region is not None else None}
