"""The anatomy template: ICBM152 maps with derived CSF, enhancing structures and tumour sites, loaded
once per process, and the part of each phantom grid that can hold brain.

The maps are the ICBM152 2009a nonlinear symmetric template that nilearn ships as package data
(T1 template, grey- and white-matter probability maps, brain mask; no network). CSF is what
the brain mask holds beyond grey and white matter (ventricles, sulci, the rim of subarachnoid
space). Loading and preparing them takes a few seconds and keeps about 110 MB in memory.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy import ndimage

from .grid import GRID_TO_TEMPLATE_MM, grid_name, phantom_grid

__all__ = ["CHANNELS", "Template", "load_template", "template_channels", "brain_crop"]


#: Order of the channels sampled from the template for every case.
CHANNELS = ("t1", "gm", "wm", "mask", "vessel_static", "superficial_csf")


@dataclass(frozen=True)
class Template:
    """Template channels (i, j, k order, RAS voxel axes), their geometry and class intensities."""

    channels: dict[str, np.ndarray]
    near_brain: np.ndarray  # uint8, 1 within 3 mm of the brain: the only voxels worth sampling
    lps_to_index: np.ndarray  # 4x4, template LPS mm -> template voxel index
    index_to_lps: np.ndarray
    intensity: dict[str, float]  # median template T1 of pure csf, gm, wm
    tumour_sites: np.ndarray  # (n, 3) voxel indices where a tumour centre may go
    tumour_site_side: np.ndarray  # +1 patient left, -1 patient right


def _template_centres_mm(affine_ras: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """MNI (RAS) coordinates of the voxel centres along each template axis."""
    return tuple(affine_ras[a, a] * np.arange(shape[a]) + affine_ras[a, 3] for a in range(3))


def _ball(coords, centre, radius) -> np.ndarray:
    """Soft ball (1 inside, Gaussian fall-off) on a grid given per-axis coordinates (mm)."""
    d2 = sum(((c - m) / radius) ** 2 for c, m in zip(np.meshgrid(*coords, indexing="ij"), centre))
    return np.exp(-np.maximum(d2 - 1.0, 0.0) * 4.0).astype(np.float32)


def _depth_mm(mask: np.ndarray) -> np.ndarray:
    """Distance (mm) to the outside of a 1 mm mask, computed at 2 mm: thresholds need no more."""
    coarse = ndimage.distance_transform_edt(mask[::2, ::2, ::2], sampling=2.0).astype(np.float32)
    for axis in range(3):
        coarse = np.repeat(coarse, 2, axis=axis)
    return coarse[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def _read_template_maps() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RAS affine and float32 T1, GM, WM and brain-mask arrays from nilearn, cropped to the brain.

    The crop keeps 4 voxels around the brain mask and halves the memory the cache holds;
    the affine is moved so that voxel positions do not change.
    """
    from nilearn import datasets  # heavy import, only when a phantom is made

    t1_img = datasets.load_mni152_template(resolution=1)
    loaders = {"gm": datasets.load_mni152_gm_template, "wm": datasets.load_mni152_wm_template,
               "mask": datasets.load_mni152_brain_mask}
    maps = {"t1": np.asarray(t1_img.get_fdata(), dtype=np.float32)}
    maps.update({name: np.asarray(load(resolution=1).get_fdata(), dtype=np.float32)
                 for name, load in loaders.items()})
    maps["mask"] = (maps["mask"] > 0.5).astype(np.float32)
    inside = np.argwhere(maps["mask"] > 0)
    lo = np.maximum(inside.min(axis=0) - 4, 0)
    hi = np.minimum(inside.max(axis=0) + 5, maps["mask"].shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    maps = {name: np.ascontiguousarray(array[box] * (maps["mask"][box] if name != "mask" else 1.0))
            for name, array in maps.items()}
    affine = np.asarray(t1_img.affine, dtype=float).copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    return affine, maps


def _vessel_channels(csf: np.ndarray, depth: np.ndarray, axes_mm: tuple[np.ndarray, ...]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fixed enhancing structures (falx, choroid plexus) and the superficial CSF veins run in.

    ``axes_mm`` are the MNI (RAS) coordinates along the three template axes.
    """
    xx, _, zz = np.meshgrid(*axes_mm, indexing="ij", sparse=True)
    # Falx and superior sagittal sinus: CSF on the midline above the corpus callosum.
    falx = np.exp(-(xx / 1.0) ** 2) * (zz > 5.0) * csf
    # Choroid plexus glomus in the atria of both lateral ventricles.
    ventricle = csf * (depth > 12.0)
    choroid = ventricle * (_ball(axes_mm, (24.0, -38.0, 14.0), 5.0) + _ball(axes_mm, (-24.0, -38.0, 14.0), 5.0))
    static = np.clip(0.6 * falx + 0.5 * choroid, 0.0, 1.0).astype(np.float32)
    superficial = (csf * np.clip((25.0 - depth) / 10.0, 0.0, 1.0)).astype(np.float32)
    return static, superficial


def _tumour_sites(wm: np.ndarray, depth: np.ndarray, axes_mm: tuple[np.ndarray, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of deep supratentorial white matter off the midline, and their side (+1 left)."""
    xx, yy, zz = np.meshgrid(*axes_mm, indexing="ij", sparse=True)
    supratentorial = (zz > -5.0) | ((zz > -30.0) & (yy > -15.0))  # temporal lobes reach lower
    sites = np.argwhere((wm > 0.6) & (depth > 18.0) & (np.abs(xx) > 12.0) & supratentorial)
    side = np.where(axes_mm[0][sites[:, 0]] < 0.0, 1, -1)  # MNI (RAS) x < 0: the patient's left
    return sites, side


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The template maps with derived CSF, vessel structures and tumour sites (loaded once)."""
    affine, maps = _read_template_maps()
    csf = np.clip(maps["mask"] - maps["gm"] - maps["wm"], 0.0, 1.0)
    depth = _depth_mm(maps["mask"] > 0.5)
    axes_mm = _template_centres_mm(affine, csf.shape)
    vessel_static, superficial_csf = _vessel_channels(csf, depth, axes_mm)
    sites, side = _tumour_sites(maps["wm"], depth, axes_mm)
    intensity = {name: float(np.median(maps["t1"][prob > 0.9]))
                 for name, prob in (("csf", csf), ("gm", maps["gm"]), ("wm", maps["wm"]))}
    near_brain = ndimage.maximum_filter(maps["mask"], size=7) > 0.0  # brain plus 3 mm
    index_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # RAS -> LPS
    channels = dict(maps, vessel_static=vessel_static, superficial_csf=superficial_csf)
    return Template(channels=channels, near_brain=near_brain.astype(np.uint8),
                     lps_to_index=np.linalg.inv(index_to_lps), index_to_lps=index_to_lps,
                     intensity=intensity, tumour_sites=sites, tumour_site_side=side)


@functools.lru_cache(maxsize=3)
def template_channels(spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Template channels low-pass filtered for sampling at ``spacing`` mm (anti-aliasing)."""
    template = load_template()
    sigma = [max(0.0, 0.4 * s - 0.4) for s in spacing]  # 0 at 1 mm: exact voxel copies
    if max(sigma) == 0.0:
        return template.channels
    return {name: ndimage.gaussian_filter(array, sigma) for name, array in template.channels.items()}


def brain_crop(grid: Union[bool, str]) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the grid that can hold brain after any case transform.

    ``grid`` is a grid name (``"full"``, ``"medium"``, ``"small"``) or the older ``small`` flag.
    """
    return _brain_crop(grid_name(grid))


@functools.lru_cache(maxsize=3)
def _brain_crop(name: str) -> tuple[slice, slice, slice]:
    """:func:`brain_crop` of a grid name (cached: the template corners are the same every time)."""
    grid = phantom_grid(name)
    template = load_template()
    idx = np.argwhere(template.channels["mask"] > 0.5)
    corners = np.array([[a, b, c, 1.0] for a in (idx[:, 0].min(), idx[:, 0].max())
                        for b in (idx[:, 1].min(), idx[:, 1].max())
                        for c in (idx[:, 2].min(), idx[:, 2].max())])
    lps = (template.index_to_lps @ corners.T)[:3].T - GRID_TO_TEMPLATE_MM
    grid_index = (np.linalg.inv(grid.index_to_physical()) @ np.c_[lps, np.ones(8)].T)[:3].T
    margin = 14.0 / np.asarray(grid.spacing)
    lo = np.maximum(np.floor(grid_index.min(0) - margin), 0).astype(int)
    hi = np.minimum(np.ceil(grid_index.max(0) + margin) + 1, grid.size).astype(int)
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
