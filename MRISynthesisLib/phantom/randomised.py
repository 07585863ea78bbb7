"""Randomised phantom cases for training: one anatomy and one physics draw per case, both varied far
beyond one scanner and one brain (the SynthSeg/SynthSR recipe), on any phantom grid.

Everything random comes from ``numpy.random.default_rng([seed, RANDOMISED_STREAM])``, a stream
of its own: classic cases of the same seed are untouched, and the same seed and options give
bit-identical arrays. The steps, in order: parameters (:mod:`.randomisation`), geometry and
atrophy (:mod:`.anatomy_variation`), tumour (:mod:`.tumour_variation`), compartments and vessels
(:mod:`.vessels`), the noise-free signal of each sequence (:mod:`.acquisition`, plus the FLAIR
inflow artefact) and the acquisition chain (:mod:`.acquisition_effects`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..sequences import SEQUENCES, Sequence
from .acquisition import noise_free_signal
from .acquisition_effects import acquire_volume, bias_fields, sample_coil
from .anatomy_variation import (
    sample_anatomy_variation,
    sample_random_deformation,
    sample_variation_maps,
    vary_anatomy,
)
from .compartments import Compartments, healthy_compartments, insert_tumour
from .deformation import sample_channels, template_coordinates
from .grid import PhantomGrid
from .physics import protocol_signal, pure_signal, relaxation_rates
from .randomisation import sample_random_parameters, with_magnetisation_transfer
from .tumour import midline_distance_mm, tumour_box
from .tumour_variation import sample_random_tumour
from .vessels import add_vessels, flair_inflow_weight, sample_vessel_parameters

__all__ = ["RANDOMISED_STREAM", "RandomisedArrays", "sample_randomised_parameters", "randomised_arrays"]

#: Second entry of the seed sequence of randomised cases (classic cases use the bare seed).
RANDOMISED_STREAM = 1


@dataclass
class RandomisedArrays:
    """Crop arrays of one randomised case: images per sequence, labels, compartments, bias fields,
    the noise-free signals before the acquisition chain and the arterial share of the vessels."""

    images: dict[Sequence, np.ndarray]
    labels: np.ndarray
    comp: Compartments
    bias: dict[str, np.ndarray]
    signals: dict[Sequence, np.ndarray]
    arteries: np.ndarray


def sample_randomised_parameters(rng: np.random.Generator, noise: bool, bias: bool) -> dict:
    """Every scalar draw of a randomised case but the tumour's (JSON-serialisable)."""
    params = sample_random_parameters(rng)
    params["deformation"] = sample_random_deformation(rng)
    params["anatomy"] = sample_anatomy_variation(rng)
    params["vessels"] = sample_vessel_parameters(rng)
    params["coil"] = sample_coil(rng)
    for acquisition in params["acquisition"].values():
        acquisition["noise_fraction"] *= float(noise)
        acquisition["bias_std"] *= float(bias)
    if not bias:
        params["coil"]["surface_gain"] = 0.0
    return params


def _flair_inflow_signal(params: dict) -> float:
    """FLAIR signal of CSF that missed the inversion: a plain long-TR spin echo."""
    protocol = params["protocols"][Sequence.T2F.value]
    pd, r1, r2 = relaxation_rates(params["tissues"]["csf"])
    return float(protocol_signal({"type": "se", "TR": protocol["TR"], "TE": protocol["TE"]}, pd, r1, r2))


def _haemorrhage_weight(comp: Compartments, tumour: Optional[dict]) -> Optional[np.ndarray]:
    """Share of each tumour-box voxel that is blood products: patches of the necrotic core."""
    if tumour is None or comp.box is None or not tumour.get("haemorrhage"):
        return None
    patches = np.clip((comp.heterogeneity - 0.3) / 0.5, 0.0, 1.0)
    return (np.float32(tumour["haemorrhage"]) * comp.core * patches).astype(np.float32)


def _signals(comp: Compartments, params: dict, inflow: np.ndarray,
             arteries: np.ndarray) -> dict[Sequence, np.ndarray]:
    """Noise-free signal of each sequence (:func:`.acquisition.noise_free_signal`) plus what
    randomised cases add: magnetisation transfer on T2 and FLAIR, arteries with their own flow
    factor, blood products in the necrotic core, and on FLAIR the inflowing CSF share that keeps
    its full signal."""
    gd = params["gadolinium"]
    haemorrhage = _haemorrhage_weight(comp, params["tumour"])
    signals = {}
    for seq in SEQUENCES:
        acq = params["acquisition"][seq.value]
        seen = with_magnetisation_transfer(params, seq)
        signal = noise_free_signal(comp, seen, seq)
        blood = pure_signal(params, seq, "blood", gd["blood"])
        signal += arteries * np.float32(blood * (acq["artery_factor"] - acq["flow_void"]))
        if haemorrhage is not None:
            change = pure_signal(seen, seq, "haemorrhage") - pure_signal(seen, seq, "necrosis", gd["necrosis"])
            signal[comp.box] += haemorrhage * np.float32(change)
        signals[seq] = np.maximum(signal, 0.0)
    extra = _flair_inflow_signal(params) - pure_signal(params, Sequence.T2F, "csf")
    signals[Sequence.T2F] += inflow * comp.csf * np.float32(max(extra, 0.0))
    return signals


def _surface_profile(brain: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """1 at the brain surface falling to 0 at 40 mm depth: where a receive array is most sensitive."""
    profile = np.zeros(brain.shape, dtype=np.float32)
    profile[brain] = np.clip(1.0 - depth / 40.0, 0.0, 1.0)
    return profile - np.float32(profile[brain].mean()) * brain


def randomised_arrays(rng: np.random.Generator, params: dict, grid: PhantomGrid,
                      crop: tuple[slice, slice, slice], tumour: bool) -> RandomisedArrays:
    """Build one randomised case on the crop of ``grid``; adds ``tumour`` (or None) to ``params``."""
    tumour_params: Optional[dict] = sample_random_tumour(rng, params["deformation"]) if tumour else None
    coords = template_coordinates(rng, grid, crop, params["deformation"], tumour_params)
    channels = sample_channels(coords, grid.spacing)
    brain = channels["mask"] >= 0.5
    maps = sample_variation_maps(coords, brain)
    vary_anatomy(rng, channels, brain, maps, params["anatomy"], float(min(grid.spacing)))
    if tumour_params is not None:
        box = tumour_box(tumour_params, grid, crop)
        hemisphere = midline_distance_mm(coords[(slice(None),) + box], tumour_params["hemisphere"])
    del coords
    comp = healthy_compartments(rng, channels, grid)
    arteries = add_vessels(rng, comp, channels, params["vessels"], grid)
    labels = np.zeros(comp.brain.shape, dtype=np.uint8)
    if tumour_params is not None:
        labels[box] = insert_tumour(rng, comp, tumour_params, grid, crop, box, hemisphere)
    params["tumour"] = tumour_params
    inflow = flair_inflow_weight(rng, comp, maps["ventricle_distance"], params["vessels"], grid)
    signals = _signals(comp, params, inflow, arteries)

    spacing_zyx = tuple(reversed(grid.spacing))
    stds = {seq.value: params["acquisition"][seq.value]["bias_std"] for seq in SEQUENCES}
    fields = bias_fields(rng, comp.brain.shape, spacing_zyx, params["coil"], stds,
                         _surface_profile(comp.brain, maps["depth"]))
    images = {}
    for seq in SEQUENCES:
        acq = params["acquisition"][seq.value]
        reference = pure_signal(params, seq, "wm", params["gadolinium"]["wm"])
        image = acquire_volume(rng, signals[seq], fields[seq.value], comp.brain, acq, spacing_zyx,
                               acq["noise_fraction"] * reference)
        images[seq] = image * np.float32(acq["wm_level"] / reference)
    return RandomisedArrays(images=images, labels=labels, comp=comp, bias=fields, signals=signals,
                            arteries=arteries)
