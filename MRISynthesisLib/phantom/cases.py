"""The phantom's case API: generate a case from a seed, write it in BraTS layout, or write a series.

Classic cases vary in tissue and sequence parameters, scanner gain, bias field, Rician noise, a
random affine plus smooth deformation of the anatomy, and random tumours (irregular necrotic core,
enhancing rim, white-matter-following oedema, mass effect). Everything random is drawn from one
``numpy.random.default_rng(seed)``: same seed, same case. After the template is loaded (once per
process), a full-size case takes about 3-5 s of one CPU core, a small one 0.3 s.

Randomised cases (``randomise=True``, :mod:`.randomised`) draw anatomy, contrast and acquisition
from much wider ranges, for training; they come from a random stream of their own, so classic
cases stay bit-identical. Any case can be made on the full (1 mm), medium (1.5 mm) or small
(2.5 mm) grid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import SimpleITK as sitk

from ..sequences import SEQUENCES, Sequence
from .acquisition import acquire, noise_free_signal
from .compartments import healthy_compartments, insert_tumour
from .deformation import sample_channels, sample_deformation, template_coordinates
from .grid import GRID_NAMES, PhantomGrid, grid_name, phantom_grid
from .physics import sample_acquisition, sample_gadolinium, sample_protocols, sample_tissues
from .randomised import RANDOMISED_STREAM, randomised_arrays, sample_randomised_parameters
from .template import brain_crop
from .tumour import midline_distance_mm, sample_tumour, tumour_box

__all__ = [
    "PhantomError",
    "PhantomCase",
    "case_id_for_seed",
    "generate_case",
    "case_files",
    "write_case",
    "generate_cases",
]


class PhantomError(ValueError):
    """A phantom request that cannot be met (bad argument, tumour that does not fit)."""


@dataclass
class PhantomCase:
    """One generated case: four co-registered sequences, the BraTS label map and how it was made.

    ``tissues`` holds the healthy anatomy after deformation, on the same grid: ``gm``, ``wm``
    and ``csf`` volume fractions (float32) and the ``brain`` mask (uint8), so that contrast
    can be measured per tissue.
    """

    case_id: str
    images: dict[Sequence, sitk.Image]
    label: sitk.Image
    seed: int
    parameters: dict
    tissues: dict[str, sitk.Image] = field(default_factory=dict)


def case_id_for_seed(seed: int) -> str:
    """Default case id of ``seed``: ``Phantom-00042``."""
    return f"Phantom-{seed:05d}"


def _check_seed(seed: object) -> int:
    """The seed as an int, or :class:`PhantomError` if it cannot seed ``default_rng``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomError(f"phantom seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _to_image(crop_array: np.ndarray, grid: PhantomGrid, crop: tuple[slice, ...], dtype) -> sitk.Image:
    """Paste a crop array into a zero volume of the grid and wrap it as a SimpleITK image."""
    full = np.zeros(grid.shape, dtype=dtype)
    full[crop] = crop_array
    return grid.apply_to(sitk.GetImageFromArray(full))


def _header(seed: int, case_id: str, grid: PhantomGrid) -> dict:
    """What every case's parameters start with: generator, template, units, seed, id and grid."""
    return {
        "generator": "MRISynthesisLib.phantom",
        "template": "ICBM152 2009a nonlinear symmetric (nilearn package data)",
        "units": "T1/T2/TR/TE/TI in ms, flip in degrees, gadolinium in mM, r1/r2 in 1/(mM s), "
                 "lengths in mm, volumes in ml",
        "seed": seed,
        "case_id": case_id,
        "grid": {"size": list(grid.size), "spacing": list(grid.spacing),
                 "origin": list(grid.origin), "direction": list(grid.direction)},
    }


def _sample_parameters(rng: np.random.Generator, seed: int, case_id: str, grid: PhantomGrid) -> dict:
    """Every scalar choice of a classic case, drawn in a fixed order (JSON-serialisable)."""
    return {
        **_header(seed, case_id, grid),
        "tissues": sample_tissues(rng),
        "gadolinium": sample_gadolinium(rng),
        "protocols": sample_protocols(rng),
        "acquisition": sample_acquisition(rng),
        "deformation": sample_deformation(rng),
    }


def _grid_choice(small: bool, grid: Optional[str]) -> str:
    """The grid name from ``small`` and ``grid`` (``grid`` wins; ``small=True`` must not contradict it)."""
    if grid is None:
        return grid_name(bool(small))
    if grid not in GRID_NAMES:
        raise PhantomError(f"phantom grid must be one of {', '.join(GRID_NAMES)}, got {grid!r}")
    if small and grid != "small":
        raise PhantomError(f"small=True contradicts grid={grid!r}")
    return grid


def generate_case(seed: int, small: bool = False, case_id: Optional[str] = None,
                  tumour: bool = True, noise: bool = True, bias: bool = True,
                  grid: Optional[str] = None, randomise: bool = False) -> PhantomCase:
    """Generate one phantom case; the same ``seed`` (and options) gives bit-identical arrays.

    ``grid`` is ``"full"`` (240 x 240 x 155 BraTS grid at 1 mm, the default), ``"medium"``
    (160 x 160 x 104 at 1.5 mm) or ``"small"`` (96 x 96 x 64 at 2.5 mm); ``small=True`` is the
    older way to ask for the small grid. ``tumour=False`` gives a healthy brain with an
    all-zero label map. ``noise=False`` / ``bias=False`` leave out the Rician noise / the bias
    field of the very same case (every random draw is still made): the ideal images a synthesis
    could at best produce, for measuring what similarity is reachable at all.
    ``randomise=True`` makes a randomised training case (:mod:`.randomised`) from a random
    stream of its own; with it off, cases are exactly what they always were.
    """
    seed = _check_seed(seed)
    case_id = case_id if case_id is not None else case_id_for_seed(seed)
    if not isinstance(case_id, str) or not case_id or "/" in case_id or "\\" in case_id:
        raise PhantomError(f"phantom case_id must be a non-empty file name, got {case_id!r}")
    name = _grid_choice(small, grid)
    if randomise:
        return _randomised_case(seed, case_id, name, tumour, noise, bias)
    rng = np.random.default_rng(seed)
    grid_ = phantom_grid(name)
    crop = brain_crop(name)
    params = _sample_parameters(rng, seed, case_id, grid_)
    for acquisition in params["acquisition"].values():
        acquisition["noise_fraction"] *= float(noise)
        acquisition["bias_std"] *= float(bias)
    tumour_params = sample_tumour(rng, params["deformation"]) if tumour else None

    coords = template_coordinates(rng, grid_, crop, params["deformation"], tumour_params)
    channels = sample_channels(coords, grid_.spacing)
    if tumour_params is not None:
        box = tumour_box(tumour_params, grid_, crop)
        hemisphere = midline_distance_mm(coords[(slice(None),) + box], tumour_params["hemisphere"])
    del coords
    comp = healthy_compartments(rng, channels, grid_)
    labels = np.zeros(comp.brain.shape, dtype=np.uint8)
    if tumour_params is not None:
        labels[box] = insert_tumour(rng, comp, tumour_params, grid_, crop, box, hemisphere)
        if min(tumour_params["volume_ml"].values()) == 0.0:
            raise PhantomError(f"phantom seed {seed}: a tumour label is empty ({tumour_params['volume_ml']})")
    params["tumour"] = tumour_params

    images = {}
    for seq in SEQUENCES:
        signal = noise_free_signal(comp, params, seq)
        images[seq] = _to_image(acquire(rng, signal, comp, params, seq, grid_), grid_, crop, np.float32)
    tissues = _tissue_images(comp, grid_, crop)
    label = _to_image(labels, grid_, crop, np.uint8)
    return PhantomCase(case_id=case_id, images=images, label=label, seed=seed,
                       parameters=params, tissues=tissues)


def _tissue_images(comp, grid: PhantomGrid, crop: tuple[slice, ...]) -> dict[str, sitk.Image]:
    """The reported healthy anatomy: grey and white matter, CSF (what is neither) and the brain mask."""
    tissues = {key: _to_image(getattr(comp, key), grid, crop, np.float32) for key in ("gm", "wm")}
    healthy_csf = np.clip(1.0 - comp.gm - comp.wm, 0.0, 1.0) * comp.brain
    tissues["csf"] = _to_image(healthy_csf.astype(np.float32), grid, crop, np.float32)
    tissues["brain"] = _to_image(comp.brain.astype(np.uint8), grid, crop, np.uint8)
    return tissues


def _randomised_case(seed: int, case_id: str, name: str, tumour: bool, noise: bool, bias: bool) -> PhantomCase:
    """A randomised case (see :func:`generate_case`) on the grid called ``name``."""
    rng = np.random.default_rng([seed, RANDOMISED_STREAM])
    grid = phantom_grid(name)
    crop = brain_crop(name)
    params = _header(seed, case_id, grid)
    params["randomised"] = True
    params.update(sample_randomised_parameters(rng, noise=noise, bias=bias))
    arrays = randomised_arrays(rng, params, grid, crop, tumour)
    images = {seq: _to_image(arrays.images[seq], grid, crop, np.float32) for seq in SEQUENCES}
    return PhantomCase(case_id=case_id, images=images, label=_to_image(arrays.labels, grid, crop, np.uint8),
                       seed=seed, parameters=params, tissues=_tissue_images(arrays.comp, grid, crop))


def case_files(case_id: str) -> dict[str, str]:
    """File names of a written case: one per sequence suffix, ``seg`` and ``phantom`` (JSON)."""
    names = {seq.value: f"{case_id}-{seq.value}.nii.gz" for seq in SEQUENCES}
    names["seg"] = f"{case_id}-seg.nii.gz"
    names["phantom"] = f"{case_id}-phantom.json"
    return names


def write_case(case: PhantomCase, output_dir: Union[str, Path]) -> Path:
    """Write ``output_dir/<case_id>/<case_id>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` and ``-phantom.json``.

    Files are written atomically (``io.write_image``) and replace earlier ones of the same
    name. Returns the case folder.
    """
    from ..core.io import write_image, write_text

    folder = Path(output_dir) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    names = case_files(case.case_id)
    for seq in SEQUENCES:
        write_image(case.images[seq], folder / names[seq.value])
    write_image(case.label, folder / names["seg"])
    write_text(json.dumps(case.parameters, indent=2) + "\n", folder / names["phantom"])
    return folder


def generate_cases(output_dir: Union[str, Path], n_cases: int, seed: int, small: bool = False,
                   progress: Optional[Callable[[float, str], None]] = None,
                   tumour: bool = True, grid: Optional[str] = None, randomise: bool = False) -> list[Path]:
    """Generate and write ``n_cases`` cases; case ``i`` uses seed ``seed + i``, id ``Phantom-<seed+i:05d>``.

    ``small``, ``grid`` and ``randomise`` are those of :func:`generate_case`.
    ``progress(fraction, message)`` (the project's progress callback) is called after each
    case. Returns the case folders in order.
    """
    seed = _check_seed(seed)
    _grid_choice(small, grid)  # refuse a bad grid before anything is written
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 0:
        raise PhantomError(f"number of phantom cases must be a non-negative integer, got {n_cases!r}")
    folders = []
    for i in range(int(n_cases)):
        case = generate_case(seed + i, small=small, tumour=tumour, grid=grid, randomise=randomise)
        folders.append(write_case(case, output_dir))
        if progress is not None:
            progress((i + 1) / n_cases, f"{case.case_id} written ({i + 1}/{n_cases})")
    return folders
