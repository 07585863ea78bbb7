"""MR-physics brain phantom cases in BraTS layout, with ground truth for all four sequences.

No BraTS data can be downloaded where this project is built and tested, so every model here
is trained and checked on these cases. They are made to carry real MR contrast:

* **Anatomy** comes from the ICBM152 2009a nonlinear symmetric template that nilearn ships as
  package data (T1 template, grey- and white-matter probability maps, brain mask; no network).
  CSF is what the brain mask holds beyond grey and white matter (ventricles, sulci, the rim
  of subarachnoid space). The template T1 intensity moves each voxel along the grey/white
  axis, so deep grey nuclei and cortical folding appear as in a real scan, not as 3 classes.
* **Contrast** comes from per-tissue T1/T2/PD values at 3 T pushed through signal equations:
  MPRAGE-like, spoiled gradient echo or spin-echo T1 (T1n), spin-echo T2 (T2w), inversion
  recovery FLAIR whose TI nulls a nominal CSF T1 (T2f), and T1 after gadolinium (T1c), where
  ``R1 += r1 * C`` in the enhancing tumour, the blood, the choroid plexus, the falx and dura.
  Partial volume mixes the signals of tissue, CSF, blood and tumour compartments.
* **Variation between cases**: tissue and sequence parameters, scanner gain, bias field,
  Rician noise, a random affine plus smooth deformation of the anatomy, and random tumours
  (irregular necrotic core, enhancing rim, white-matter-following oedema, mass effect).

Grids (SimpleITK LPS, identity direction, as SimpleITK reads BraTS NIfTI files):
full size 240 x 240 x 155 at 1 mm with origin (0, -239, 0), the BraTS/SRI24 header; small
96 x 96 x 64 at 2.5 mm (field of view 240 x 240 x 160 mm) centred on the same point.

Labels follow BraTS 2023: 1 necrotic core, 2 oedema (SNFH), 3 enhancing tumour.
Everything random is drawn from one ``numpy.random.default_rng(seed)``: same seed, same case.

Cost: the template is loaded and prepared once per process (a few seconds, about 110 MB
kept in memory); then a full-size case takes about 3-5 s of one CPU core, a small one 0.3 s.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from MRISynthesisLib.sequences import SEQUENCES, Sequence

__all__ = [
    "PhantomCase",
    "PhantomGrid",
    "PhantomError",
    "LABELS",
    "phantom_grid",
    "generate_case",
    "write_case",
    "generate_cases",
    "case_id_for_seed",
]


class PhantomError(ValueError):
    """A phantom request that cannot be met (bad argument, tumour that does not fit)."""


#: BraTS 2023 label values.
LABELS: dict[str, int] = {"necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}

# ----------------------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomGrid:
    """Voxel grid of a phantom case in SimpleITK terms (x, y, z order, LPS)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x) of ``sitk.GetArrayFromImage`` on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix from continuous (x, y, z) index to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def centre(self) -> np.ndarray:
        """LPS position (mm) of the centre of the grid."""
        half = (np.asarray(self.size, dtype=float) - 1.0) / 2.0
        return (self.index_to_physical() @ np.append(half, 1.0))[:3]

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set this grid's spacing, origin and direction on ``image`` and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


#: The BraTS grid: what SimpleITK reports for a BraTS 2021/2023 NIfTI file.
FULL_GRID = PhantomGrid(size=(240, 240, 155), spacing=(1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0))
SMALL_SIZE = (96, 96, 64)
SMALL_SPACING = (2.5, 2.5, 2.5)


def _small_grid() -> PhantomGrid:
    """The 2.5 mm grid centred on the centre of the full BraTS grid."""
    centre = FULL_GRID.centre()
    half = (np.asarray(SMALL_SIZE, dtype=float) - 1.0) / 2.0 * np.asarray(SMALL_SPACING)
    origin = tuple(float(v) for v in centre - half)
    return PhantomGrid(size=SMALL_SIZE, spacing=SMALL_SPACING, origin=origin)


def phantom_grid(small: bool = False) -> PhantomGrid:
    """Grid of full-size (240 x 240 x 155, 1 mm) or small (96 x 96 x 64, 2.5 mm) cases."""
    return _small_grid() if small else FULL_GRID


#: Where the template sits on the BraTS grid: LPS translation from grid millimetres to
#: template millimetres. MNI (0, -17, 8), the middle of the brain, lands near grid voxel
#: (120, 125, 73); the top of the brain 7 mm below the last slice, the lowest 7 mm of the
#: brainstem cut off as in many BraTS cases.
GRID_TO_TEMPLATE_MM = np.array([-120.0, 131.0, -65.0])

# ----------------------------------------------------------------------------------------
# Tissue and sequence parameters
# ----------------------------------------------------------------------------------------

#: Ranges of T1 (ms), T2 (ms) and proton density (relative to water) at 3 T, sampled
#: uniformly per case. Healthy values after Wansapura 1999, Stanisz 2005 and Lu 2005;
#: tumour values chosen to give the textbook glioma appearance.
TISSUE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "wm": {"T1": (800.0, 1050.0), "T2": (65.0, 85.0), "PD": (0.66, 0.72)},
    "csf": {"T1": (4000.0, 4500.0), "T2": (1500.0, 2500.0), "PD": (0.97, 1.0)},
    "blood": {"T1": (1650.0, 1950.0), "T2": (100.0, 180.0), "PD": (0.85, 0.90)},
    "oedema": {"T1": (1400.0, 2000.0), "T2": (170.0, 280.0), "PD": (0.84, 0.92)},
    "enhancing": {"T1": (1300.0, 1700.0), "T2": (100.0, 150.0), "PD": (0.80, 0.88)},
    "necrosis": {"T1": (2200.0, 3600.0), "T2": (250.0, 900.0), "PD": (0.88, 0.98)},
}

#: Grey matter relative to white matter (ratios of T1, T2, PD), so that the grey/white
#: contrast keeps its sign on every sequence, as it does in real scans.
GREY_TO_WHITE_RANGES: dict[str, tuple[float, float]] = {
    "T1": (1.45, 1.7), "T2": (1.22, 1.4), "PD": (1.12, 1.2),
}

#: Gadolinium: relaxivities at 3 T (1/(mM s)) and concentrations (mM) per compartment.
#: Healthy grey/white matter only see the intravascular agent, an effective few 0.01 mM.
GADOLINIUM_RANGES: dict[str, tuple[float, float]] = {
    "r1": (3.3, 4.3),
    "r2": (4.0, 5.5),
    "blood": (0.5, 1.5),
    "enhancing": (0.3, 1.0),
    "necrosis": (0.0, 0.05),
    "oedema": (0.0, 0.03),
    "gm": (0.005, 0.02),
    "wm": (0.002, 0.008),
}

#: T1-weighted protocols and how often each is drawn (BraTS is multi-centre).
T1_PROTOCOLS: dict[str, float] = {"mprage": 0.5, "spgr": 0.25, "se": 0.25}


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One uniform draw in ``bounds`` as a plain float (JSON-friendly)."""
    return float(rng.uniform(bounds[0], bounds[1]))


def _sample_tissues(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Per-case T1/T2/PD of every tissue: :data:`TISSUE_RANGES`, grey matter relative to white."""
    tissues = {
        name: {key: _uniform(rng, bounds) for key, bounds in ranges.items()}
        for name, ranges in TISSUE_RANGES.items()
    }
    tissues["gm"] = {key: tissues["wm"][key] * _uniform(rng, bounds)
                     for key, bounds in GREY_TO_WHITE_RANGES.items()}
    # Oedema is water added to white matter: its T1 follows the case's white matter.
    tissues["oedema"]["T1"] = float(np.clip(tissues["wm"]["T1"] * _uniform(rng, (1.6, 2.0)), 1400.0, 2000.0))
    return tissues


def _sample_gadolinium(rng: np.random.Generator) -> dict[str, float]:
    """Per-case relaxivities and gadolinium concentrations."""
    return {key: _uniform(rng, bounds) for key, bounds in GADOLINIUM_RANGES.items()}


def _sample_t1_protocol(rng: np.random.Generator, kind: str) -> dict[str, Union[float, str]]:
    """Timing of one T1-weighted acquisition of the given ``kind``."""
    if kind == "mprage":
        readouts = int(rng.integers(144, 193))
        echo_spacing = _uniform(rng, (6.0, 9.0))
        ti = _uniform(rng, (850.0, 1100.0))
        train = readouts * echo_spacing
        tr_min = ti + train / 2.0 + 300.0  # leave a recovery delay after the train
        tr = max(_uniform(rng, (1900.0, 2500.0)), tr_min)
        return {"type": "mprage", "TR": tr, "TI": ti, "echo_spacing": echo_spacing,
                "readouts": readouts, "flip": _uniform(rng, (7.0, 12.0)),
                "TE": _uniform(rng, (2.0, 4.0))}
    if kind == "spgr":
        return {"type": "spgr", "TR": _uniform(rng, (12.0, 25.0)),
                "flip": _uniform(rng, (15.0, 30.0)), "TE": _uniform(rng, (2.5, 5.0))}
    return {"type": "se", "TR": _uniform(rng, (400.0, 700.0)), "TE": _uniform(rng, (8.0, 15.0))}


def _sample_protocols(rng: np.random.Generator) -> dict[str, dict[str, Union[float, str]]]:
    """Sequence parameters of the four acquisitions of one case.

    T1n and T1c share the protocol family (one scanner) with independent timings. The FLAIR
    TI nulls a *nominal* CSF T1 the scanner assumes, so nulling of the case's CSF is imperfect.
    """
    kinds = list(T1_PROTOCOLS)
    kind = kinds[int(rng.choice(len(kinds), p=list(T1_PROTOCOLS.values())))]
    t1n = _sample_t1_protocol(rng, kind)
    t1c = _sample_t1_protocol(rng, kind)
    t2w = {"type": "se", "TR": _uniform(rng, (3000.0, 6000.0)), "TE": _uniform(rng, (80.0, 120.0))}
    flair_tr = _uniform(rng, (8000.0, 11000.0))
    nominal_csf_t1 = _uniform(rng, (4000.0, 4400.0))
    flair_ti = nominal_csf_t1 * math.log(2.0 / (1.0 + math.exp(-flair_tr / nominal_csf_t1)))
    t2f = {"type": "flair", "TR": flair_tr, "TI": flair_ti, "TE": _uniform(rng, (95.0, 130.0)),
           "nominal_csf_T1": nominal_csf_t1}
    return {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f}


def _sample_acquisition(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Scanner gain, Rician noise level, bias-field strength and vessel flow voids per sequence."""
    return {
        seq.value: {
            "wm_level": float(np.exp(rng.uniform(math.log(200.0), math.log(2000.0)))),
            "noise_fraction": _uniform(rng, (0.01, 0.035)),
            "bias_std": _uniform(rng, (0.03, 0.15)),
            "flow_void": _uniform(rng, (0.1, 0.4)) if seq in (Sequence.T2W, Sequence.T2F) else 1.0,
        }
        for seq in SEQUENCES
    }


# ----------------------------------------------------------------------------------------
# Signal equations (relaxation rates in 1/ms, times in ms, angles in degrees)
# ----------------------------------------------------------------------------------------


def _spin_echo(pd, r1, r2, tr: float, te: float):
    """Spin echo, full recovery between echoes neglected: PD (1 - e^-TR/T1) e^-TE/T2."""
    return pd * (1.0 - np.exp(-tr * r1)) * np.exp(-te * r2)


def _flair(pd, r1, r2, tr: float, ti: float, te: float):
    """Inversion-recovery spin echo, magnitude: PD |1 - 2e^-TI/T1 + e^-TR/T1| e^-TE/T2."""
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti * r1) + np.exp(-tr * r1)) * np.exp(-te * r2)


def _spoiled_gre(pd, r1, r2, tr: float, te: float, flip: float):
    """Spoiled gradient echo steady state (Ernst equation); T2 stands in for T2*."""
    alpha = math.radians(flip)
    e1 = np.exp(-tr * r1)
    return pd * math.sin(alpha) * (1.0 - e1) / (1.0 - math.cos(alpha) * e1) * np.exp(-te * r2)


def _mprage(pd, r1, r2, tr: float, ti: float, echo_spacing: float, readouts: int,
            flip: float, te: float, inversion: float = 0.96):
    """MPRAGE steady state, signal of the central (middle) readout of a linear train.

    One shot: inversion, delay, ``readouts`` pulses of ``flip`` every ``echo_spacing``,
    recovery until the next inversion ``tr`` after the first. Each pulse maps Mz to
    ``a Mz + b`` (a = cos(flip) E1, b = 1 - E1); the pre-inversion magnetisation that
    repeats from shot to shot is solved for in closed form.
    """
    alpha = math.radians(flip)
    delay = ti - echo_spacing * readouts / 2.0
    recovery = tr - delay - echo_spacing * readouts
    e_delay = np.exp(-delay * r1)
    e_recovery = np.exp(-recovery * r1)
    e1 = np.exp(-echo_spacing * r1)
    a = math.cos(alpha) * e1
    b = 1.0 - e1
    a_half = a ** (readouts // 2)
    a_full = a ** readouts
    fill_half = b * (1.0 - a_half) / (1.0 - a)
    fill_full = b * (1.0 - a_full) / (1.0 - a)
    steady = (1.0 - e_recovery + e_recovery * (a_full * (1.0 - e_delay) + fill_full)) / (
        1.0 + inversion * e_recovery * a_full * e_delay
    )
    after_delay = 1.0 - (1.0 + inversion * steady) * e_delay
    centre = a_half * after_delay + fill_half
    return pd * math.sin(alpha) * np.abs(centre) * np.exp(-te * r2)


def _signal(protocol: dict, pd, r1, r2):
    """Signal of one compartment for a protocol dict from :func:`_sample_protocols`."""
    kind = protocol["type"]
    if kind == "mprage":
        return _mprage(pd, r1, r2, protocol["TR"], protocol["TI"], protocol["echo_spacing"],
                       int(protocol["readouts"]), protocol["flip"], protocol["TE"])
    if kind == "spgr":
        return _spoiled_gre(pd, r1, r2, protocol["TR"], protocol["TE"], protocol["flip"])
    if kind == "flair":
        return _flair(pd, r1, r2, protocol["TR"], protocol["TI"], protocol["TE"])
    return _spin_echo(pd, r1, r2, protocol["TR"], protocol["TE"])


def _rates(tissue: dict[str, float]) -> tuple[float, float, float]:
    """(PD, R1, R2) in 1/ms of a tissue parameter dict."""
    return tissue["PD"], 1.0 / tissue["T1"], 1.0 / tissue["T2"]


def _with_gadolinium(r1, r2, concentration, gd: dict[str, float]):
    """Relaxation rates (1/ms) after adding ``concentration`` mM of gadolinium."""
    return r1 + gd["r1"] * 1e-3 * concentration, r2 + gd["r2"] * 1e-3 * concentration


# ----------------------------------------------------------------------------------------
# Template anatomy (cached)
# ----------------------------------------------------------------------------------------

#: Order of the channels sampled from the template for every case.
_CHANNELS = ("t1", "gm", "wm", "mask", "vessel_static", "superficial_csf")


@dataclass(frozen=True)
class _Template:
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
def _load_template() -> _Template:
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
    return _Template(channels=channels, near_brain=near_brain.astype(np.uint8),
                     lps_to_index=np.linalg.inv(index_to_lps), index_to_lps=index_to_lps,
                     intensity=intensity, tumour_sites=sites, tumour_site_side=side)


@functools.lru_cache(maxsize=2)
def _template_channels(spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Template channels low-pass filtered for sampling at ``spacing`` mm (anti-aliasing)."""
    template = _load_template()
    sigma = [max(0.0, 0.4 * s - 0.4) for s in spacing]  # 0 at 1 mm: exact voxel copies
    if max(sigma) == 0.0:
        return template.channels
    return {name: ndimage.gaussian_filter(array, sigma) for name, array in template.channels.items()}


@functools.lru_cache(maxsize=2)
def _crop(small: bool) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the grid that can hold brain after any case transform."""
    grid = phantom_grid(small)
    template = _load_template()
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


# ----------------------------------------------------------------------------------------
# Smooth random fields
# ----------------------------------------------------------------------------------------


def _bspline_weights(n_out: int, step: float) -> np.ndarray:
    """(n_out, n_ctrl) cubic B-spline weights, knots every ``step`` samples, unit-norm rows.

    Unit-norm rows make a field built from unit-variance control values unit-variance
    at every sample, whatever its position between knots.
    """
    step = max(float(step), 1.0)
    u = np.arange(n_out, dtype=np.float64) / step + 1.0
    n_ctrl = int(math.ceil((n_out - 1) / step)) + 4
    t = np.abs(u[:, None] - np.arange(n_ctrl, dtype=np.float64)[None, :])
    w = np.where(t < 1.0, 2.0 / 3.0 - t ** 2 + 0.5 * t ** 3, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))
    w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int],
                  step_mm: float, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Zero-mean, unit-variance random field of ``shape`` (z, y, x), smooth over ``step_mm``.

    Random control values on a coarse grid are upsampled with separable cubic B-splines:
    three small matrix products instead of a large Gaussian filter.
    """
    wz, wy, wx = (_bspline_weights(n, step_mm / s) for n, s in zip(shape, spacing_zyx))
    coarse = rng.standard_normal((wz.shape[1], wy.shape[1], wx.shape[1])).astype(np.float32)
    field_ = coarse @ wx.T  # (cz, cy, nx)
    field_ = wy @ field_  # (cz, ny, nx)
    return (wz @ field_.reshape(wz.shape[1], -1)).reshape(shape)


# ----------------------------------------------------------------------------------------
# Case geometry: affine, smooth warp and tumour mass effect, all pulled back to the template
# ----------------------------------------------------------------------------------------


def _sample_deformation(rng: np.random.Generator) -> dict:
    """Random rotation (deg), per-axis scale, shift (mm) and smooth-warp amplitude (mm)."""
    angles = np.clip(rng.normal(0.0, 3.0, 3), -6.0, 6.0)
    scale = rng.uniform(0.92, 1.03) * rng.uniform(0.97, 1.03, 3)
    shift = rng.uniform([-3.0, -3.0, -2.0], [3.0, 3.0, 2.0])
    return {"rotation_deg": [float(a) for a in angles], "scale": [float(s) for s in scale],
            "shift_mm": [float(s) for s in shift], "warp_mm": _uniform(rng, (0.8, 2.0)),
            "warp_step_mm": 40.0}


def _pullback_affine(deformation: dict) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) taking grid LPS mm to template LPS mm, before the smooth warp."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", deformation["rotation_deg"], degrees=True).as_matrix()
    matrix = rotation @ np.diag(1.0 / np.asarray(deformation["scale"]))
    centre = FULL_GRID.centre()
    offset = centre + GRID_TO_TEMPLATE_MM + np.asarray(deformation["shift_mm"]) - matrix @ centre
    return matrix, offset


def _grid_points_mm(grid: PhantomGrid, crop: tuple[slice, slice, slice]) -> list[np.ndarray]:
    """LPS x, y and z (mm) of every voxel of the crop, three (z, y, x) float32 arrays."""
    matrix = grid.index_to_physical()
    index = [np.arange(crop[2].start, crop[2].stop, dtype=np.float32)[None, None, :],
             np.arange(crop[1].start, crop[1].stop, dtype=np.float32)[None, :, None],
             np.arange(crop[0].start, crop[0].stop, dtype=np.float32)[:, None, None]]
    return [np.float32(matrix[a, 3]) + np.float32(matrix[a, 0]) * index[0]
            + np.float32(matrix[a, 1]) * index[1] + np.float32(matrix[a, 2]) * index[2]
            for a in range(3)]


def _index_box(centre_mm, half_mm: float, grid: PhantomGrid,
               crop: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    """(z, y, x) slices, relative to ``crop``, of the voxels within ``half_mm`` of a point (a cube)."""
    centre = (np.linalg.inv(grid.index_to_physical()) @ np.append(np.asarray(centre_mm, float), 1.0))[:3]
    half = half_mm / np.asarray(grid.spacing)
    box = []
    for axis, crop_slice in zip((2, 1, 0), crop):
        lo = int(max(math.floor(centre[axis] - half[axis]), crop_slice.start)) - crop_slice.start
        hi = int(min(math.ceil(centre[axis] + half[axis]) + 1, crop_slice.stop)) - crop_slice.start
        box.append(slice(max(lo, 0), max(hi, 0)))
    return tuple(box)


def _mass_effect(points: list[np.ndarray], tumour: Optional[dict], grid: PhantomGrid,
                 crop: tuple[slice, slice, slice]) -> list[np.ndarray]:
    """Grid positions moved towards the tumour centre, so anatomy is pushed outward.

    Pull-back displacement ``k (p - c) exp(-|p - c|^2 / 2 s^2)`` with k < 1 is smooth and
    keeps the mapping one-to-one.
    """
    if tumour is None or tumour["mass_effect"] <= 0.0:
        return points
    centre, sigma = tumour["centre_mm"], tumour["mass_sigma_mm"]
    # Beyond 4 sigma the displacement is below 0.1 % of the distance: leave those points.
    box = _index_box(centre, 4.0 * sigma, grid, crop)
    delta = [p[box] - np.float32(c) for p, c in zip(points, centre)]
    r2 = delta[0] ** 2 + delta[1] ** 2 + delta[2] ** 2
    gain = np.float32(tumour["mass_effect"]) * np.exp(r2 * np.float32(-0.5 / sigma ** 2))
    for p, d in zip(points, delta):
        p[box] -= gain * d
    return points


def _template_coordinates(rng: np.random.Generator, grid: PhantomGrid, crop: tuple[slice, slice, slice],
                          deformation: dict, tumour: Optional[dict]) -> np.ndarray:
    """Template voxel coordinates (3, z, y, x) for every crop voxel of this case."""
    template = _load_template()
    shape = tuple(s.stop - s.start for s in crop)
    points = _mass_effect(_grid_points_mm(grid, crop), tumour, grid, crop)
    matrix, offset = _pullback_affine(deformation)
    to_index = template.lps_to_index
    combined = to_index[:3, :3] @ matrix
    combined_offset = to_index[:3, :3] @ offset + to_index[:3, 3]
    spacing_zyx = tuple(reversed(grid.spacing))
    amplitude, step = np.float32(deformation["warp_mm"]), deformation["warp_step_mm"]
    warp = [amplitude * _smooth_field(rng, shape, step, spacing_zyx) for _ in range(3)]
    coords = np.empty((3,) + shape, dtype=np.float32)
    for i in range(3):
        acc = np.full(shape, combined_offset[i], dtype=np.float32)
        for b in range(3):
            if combined[i, b] != 0.0:
                acc += np.float32(combined[i, b]) * points[b]
            if to_index[i, b] != 0.0:
                acc += np.float32(to_index[i, b]) * warp[b]
        coords[i] = acc
    return coords


def _sample_channels(coords: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Template channels interpolated (linear) at ``coords``; zero away from the brain.

    Only voxels that land within 3 mm of the template brain are interpolated: less than
    half of the crop, and the rest would be masked out anyway.
    """
    channels = _template_channels(spacing)
    near = ndimage.map_coordinates(_load_template().near_brain, coords, order=0, mode="constant",
                                   cval=0, prefilter=False).astype(bool)
    points = coords[:, near]
    sampled = {}
    for name in _CHANNELS:
        full = np.zeros(near.shape, dtype=np.float32)
        full[near] = ndimage.map_coordinates(channels[name], points, order=1, mode="constant",
                                             cval=0.0, output=np.float32, prefilter=False)
        sampled[name] = full
    return sampled


# ----------------------------------------------------------------------------------------
# Tumour
# ----------------------------------------------------------------------------------------


def _sample_tumour(rng: np.random.Generator, deformation: dict) -> dict:
    """Random tumour: centre in deep white matter of one hemisphere, sizes, shape, mass effect.

    Sizes are radii (mm) of the enhancing tumour, of the necrotic core inside it and of the
    oedema around it; the shapes are made irregular later by smooth noise.
    """
    template = _load_template()
    side = int(rng.choice([-1, 1]))
    sites = template.tumour_sites[template.tumour_site_side == side]
    site = sites[int(rng.integers(len(sites)))]
    site_mm = (template.index_to_lps @ np.append(site.astype(float), 1.0))[:3]
    matrix, offset = _pullback_affine(deformation)
    centre = np.linalg.solve(matrix, site_mm - offset)  # ignores the small smooth warp
    enhancing = _uniform(rng, (9.0, 22.0))
    core = enhancing * _uniform(rng, (0.55, 0.8))
    oedema = min(enhancing * _uniform(rng, (1.35, 2.0)), 40.0)
    core_offset = rng.normal(0.0, 1.0, 3)
    core_offset *= _uniform(rng, (0.0, 0.25)) * enhancing / max(np.linalg.norm(core_offset), 1e-6)
    return {
        "hemisphere": "left" if side > 0 else "right",
        "centre_mm": [float(c) for c in centre],
        "radius_enhancing_mm": enhancing,
        "radius_core_mm": core,
        "radius_oedema_mm": oedema,
        "core_offset_mm": [float(c) for c in core_offset],
        "axes": [float(a) for a in rng.uniform(0.8, 1.25, 3)],
        "orientation_deg": [float(a) for a in rng.uniform(-180.0, 180.0, 3)],
        "irregularity": _uniform(rng, (0.12, 0.25)),
        "oedema_irregularity": _uniform(rng, (0.15, 0.25)),
        "white_matter_preference": _uniform(rng, (0.4, 0.7)),
        "mass_effect": _uniform(rng, (0.1, 0.4)),
        "mass_sigma_mm": enhancing * 1.3,
    }


def _tumour_box(tumour: dict, grid: PhantomGrid, crop: tuple[slice, slice, slice]) -> tuple[slice, ...]:
    """(z, y, x) slices, relative to the crop, of a box holding every possible tumour voxel."""
    half_mm = 1.6 * tumour["radius_oedema_mm"] * max(tumour["axes"]) + 4.0
    return _index_box(tumour["centre_mm"], half_mm, grid, crop)


def _hemisphere_mm(coords: np.ndarray, hemisphere: str) -> np.ndarray:
    """Signed distance (mm) of template coordinates from the midline, positive on ``hemisphere``."""
    row = _load_template().index_to_lps[0]
    lps_x = row[0] * coords[0] + row[1] * coords[1] + row[2] * coords[2] + np.float32(row[3])
    return lps_x if hemisphere == "left" else -lps_x  # LPS: +x is the patient's left


def _ramp(distance: np.ndarray, radius_mm: float, width_mm: float) -> np.ndarray:
    """Soft membership of ``distance < 1`` (distance in radii), ``width_mm`` wide at the border."""
    return np.clip(0.5 + (1.0 - distance) * np.float32(radius_mm / width_mm), 0.0, 1.0)


def _tumour_memberships(rng: np.random.Generator, tumour: dict, grid: PhantomGrid,
                        crop: tuple[slice, slice, slice], box: tuple[slice, ...],
                        white: np.ndarray, brain: np.ndarray, hemisphere_mm: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """Nested soft memberships (core within core+enhancing within whole tumour) in ``box``.

    Each border is an ellipsoid distance perturbed by its own smooth noise: the core is
    irregular, the rim varies in thickness, and the oedema reaches further along white
    matter (``white`` is the white-matter share of tissue) than into the cortex. The falx
    stops it: ``hemisphere_mm`` is the signed distance (template mm) into the tumour's side.
    """
    from scipy.spatial.transform import Rotation

    shape = tuple(s.stop - s.start for s in box)
    spacing_zyx = tuple(reversed(grid.spacing))
    sub = tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(crop, box))
    delta = [p - np.float32(c) for p, c in zip(_grid_points_mm(grid, sub), tumour["centre_mm"])]
    rotation = Rotation.from_euler("zyx", tumour["orientation_deg"], degrees=True).as_matrix()
    local = [sum(np.float32(rotation[b, a]) * delta[b] for b in range(3)) / np.float32(tumour["axes"][a])
             for a in range(3)]
    rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
    shifted = [loc - np.float32(o) for loc, o in zip(local, tumour["core_offset_mm"])]
    rho_core = np.sqrt(shifted[0] ** 2 + shifted[1] ** 2 + shifted[2] ** 2)

    def noise(step_mm: float) -> np.ndarray:
        return np.clip(_smooth_field(rng, shape, step_mm, spacing_zyx), -2.0, 2.0)

    irregular = np.float32(tumour["irregularity"])
    voxel = float(min(grid.spacing))
    r_core, r_enh, r_all = (tumour["radius_core_mm"], tumour["radius_enhancing_mm"],
                            tumour["radius_oedema_mm"])
    d_core = rho_core / np.float32(r_core) + irregular * noise(5.0)
    d_enh = rho / np.float32(r_enh) + irregular * noise(6.0)
    spread = (np.float32(tumour["oedema_irregularity"]) * noise(10.0)
              - np.float32(tumour["white_matter_preference"]) * (white - 0.5))
    d_all = rho / np.float32(r_all) + np.maximum(spread, -0.6)  # stays inside the box
    inside = brain * np.clip(hemisphere_mm / 2.0 + 1.0, 0.0, 1.0)
    core = _ramp(d_core, r_core, voxel) * inside
    core_enh = np.maximum(_ramp(d_enh, r_enh, voxel) * inside, core)
    whole = np.maximum(_ramp(d_all, r_all, 3.0 * voxel) * inside, core_enh)
    # Oedema is strongest next to the tumour and in white matter, faint at its edge and in cortex.
    strength = np.clip(1.3 - 0.7 * d_all, 0.45, 1.0) * (0.6 + 0.4 * white)
    return {"core": core, "core_enhancing": core_enh, "whole": whole,
            "oedema_strength": strength, "heterogeneity": noise(4.0)}


# ----------------------------------------------------------------------------------------
# Compartments and images
# ----------------------------------------------------------------------------------------


@dataclass
class _Compartments:
    """Volume fractions and tissue maps of the crop of one case, (z, y, x) float32 arrays."""

    brain: np.ndarray  # bool
    tissue: np.ndarray  # grey + white matter (with oedema) fraction
    csf: np.ndarray
    vessel: np.ndarray  # blood, choroid plexus, falx, dura
    white: np.ndarray  # white-matter share of tissue, 0 = grey, 1 = white, texture included
    gm: np.ndarray  # healthy grey matter fraction (reported)
    wm: np.ndarray  # healthy white matter fraction (reported)
    oedema: Optional[np.ndarray] = None  # in the tumour box: oedema weight of tissue
    core: Optional[np.ndarray] = None  # in the tumour box: fractions of necrosis and enhancing tumour
    enhancing: Optional[np.ndarray] = None
    heterogeneity: Optional[np.ndarray] = None
    box: Optional[tuple[slice, ...]] = None


def _healthy_compartments(rng: np.random.Generator, channels: dict[str, np.ndarray],
                          grid: PhantomGrid) -> _Compartments:
    """Tissue, CSF and vessel fractions plus the grey/white coordinate from template channels.

    The grey/white coordinate averages the probability-map ratio with the position of the
    template intensity (CSF partial volume removed) between pure grey and pure white
    matter: the intensity carries the fine anatomy the blurred probability maps lose.
    """
    intensity = _load_template().intensity
    brain = channels["mask"] >= 0.5
    gm, wm = channels["gm"], channels["wm"]
    tissue = np.clip(gm + wm, 0.0, 1.0) * brain
    csf = (1.0 - tissue) * brain
    share = wm / np.maximum(gm + wm, 1e-3)
    pure = (channels["t1"] - csf * np.float32(intensity["csf"])) / np.maximum(tissue, 0.2)
    by_intensity = (pure - np.float32(intensity["gm"])) / np.float32(intensity["wm"] - intensity["gm"])
    white = np.clip(0.5 * share + 0.5 * by_intensity, 0.0, 1.0).astype(np.float32)

    spacing_zyx = tuple(reversed(grid.spacing))
    veins = np.exp(-((_smooth_field(rng, brain.shape, 12.0, spacing_zyx) / 0.12) ** 2))
    dura = np.clip((0.95 - channels["mask"]) / 0.3, 0.0, 1.0) * (
        _smooth_field(rng, brain.shape, 15.0, spacing_zyx) > 0.3)
    vessel = np.clip(channels["vessel_static"] + 0.7 * veins * channels["superficial_csf"] + 0.5 * dura,
                     0.0, 1.0)
    vessel = np.minimum(vessel * brain, csf)
    return _Compartments(brain=brain, tissue=tissue, csf=csf - vessel, vessel=vessel, white=white,
                         gm=gm * brain, wm=wm * brain)


def _add_tumour(comp: _Compartments, members: dict[str, np.ndarray], box: tuple[slice, ...]) -> None:
    """Put the tumour into the compartments: it displaces tissue, CSF and vessels, effaces sulci."""
    whole, core_enh, core = members["whole"], members["core_enhancing"], members["core"]
    csf = comp.csf[box]
    efface = 0.8 * whole * np.clip((0.85 - csf) / 0.3, 0.0, 1.0)  # sulci yes, ventricles no
    tissue = comp.tissue[box] + csf * efface
    csf = csf * (1.0 - efface)
    keep = 1.0 - core_enh
    comp.tissue[box] = tissue * keep
    comp.csf[box] = csf * keep
    comp.vessel[box] = comp.vessel[box] * keep
    comp.oedema = whole * members["oedema_strength"]
    comp.core = core
    comp.enhancing = core_enh - core
    comp.heterogeneity = members["heterogeneity"]
    comp.box = box


def _insert_tumour(rng: np.random.Generator, comp: _Compartments, tumour: dict, grid: PhantomGrid,
                   crop: tuple[slice, slice, slice], box: tuple[slice, ...],
                   hemisphere: np.ndarray) -> np.ndarray:
    """Shape the tumour, put it into ``comp`` and return its labels in ``box``.

    Adds the label volumes (ml) to ``tumour`` as ``volume_ml``.
    """
    members = _tumour_memberships(rng, tumour, grid, crop, box, comp.white[box], comp.brain[box],
                                  hemisphere)
    csf_before = comp.csf[box] + comp.vessel[box]
    _add_tumour(comp, members, box)
    labels = _tumour_labels(members, csf_before)
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    tumour["volume_ml"] = {name: float(np.count_nonzero(labels == value) * voxel_ml)
                           for name, value in LABELS.items()}
    return labels


def _tumour_labels(members: dict[str, np.ndarray], csf_before: np.ndarray) -> np.ndarray:
    """BraTS labels in the tumour box: 1 where core >= 0.5, 3 enhancing, 2 oedema outside CSF."""
    labels = np.zeros(members["whole"].shape, dtype=np.uint8)
    labels[(members["whole"] >= 0.5) & (csf_before < 0.7)] = LABELS["oedema"]
    labels[members["core_enhancing"] >= 0.5] = LABELS["enhancing_tumour"]
    labels[members["core"] >= 0.5] = LABELS["necrotic_core"]
    return labels


def _mix(white: np.ndarray, tissues: dict, key: str) -> np.ndarray:
    """Grey-to-white interpolation of PD ("PD") or a relaxation rate ("R1", "R2")."""
    def value(name: str) -> float:
        return tissues[name]["PD"] if key == "PD" else 1.0 / tissues[name]["T" + key[1]]
    gm, wm = np.float32(value("gm")), np.float32(value("wm"))
    return gm + (wm - gm) * white


def _tissue_rates(white: np.ndarray, params: dict, seq: Sequence,
                  oedema: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PD, R1, R2) of grey/white tissue, moved towards oedema by the weight ``oedema``.

    Mixing is linear in relaxation rates (fast water exchange within tissue); gadolinium
    (T1c only) is the small intravascular share of healthy tissue and any oedema leak.
    """
    tissues, gd = params["tissues"], params["gadolinium"]
    pd, r1, r2 = (_mix(white, tissues, k) for k in ("PD", "R1", "R2"))
    conc = np.float32(gd["gm"]) + np.float32(gd["wm"] - gd["gm"]) * white
    if oedema is not None:
        pd_o, r1_o, r2_o = _rates(tissues["oedema"])
        pd += oedema * (np.float32(pd_o) - pd)
        r1 += oedema * (np.float32(r1_o) - r1)
        r2 += oedema * (np.float32(r2_o) - r2)
        conc += oedema * (np.float32(gd["oedema"]) - conc)
    if seq == Sequence.T1C:
        r1, r2 = _with_gadolinium(r1, r2, conc, gd)
    return pd, r1, r2


def _tissue_signal(comp: _Compartments, params: dict, seq: Sequence) -> np.ndarray:
    """Signal of the grey/white (and oedema) compartment, per voxel of the crop.

    Healthy tissue depends on the grey/white coordinate alone, so its signal is tabulated
    on 257 points and interpolated; the tumour box is computed voxel by voxel.
    """
    protocol = params["protocols"][seq.value]
    samples = np.linspace(0.0, 1.0, 257, dtype=np.float32)
    table = _signal(protocol, *_tissue_rates(samples, params, seq))
    signal = np.interp(comp.white, samples, table).astype(np.float32)
    if comp.box is not None:
        rates = _tissue_rates(comp.white[comp.box], params, seq, comp.oedema)
        signal[comp.box] = _signal(protocol, *rates)
    return signal


def _scalar_signal(params: dict, seq: Sequence, tissue: str, conc: float = 0.0) -> float:
    """Signal of a uniform compartment (CSF, blood) for one sequence."""
    pd, r1, r2 = _rates(params["tissues"][tissue])
    if seq == Sequence.T1C and conc:
        r1, r2 = _with_gadolinium(r1, r2, conc, params["gadolinium"])
    return float(_signal(params["protocols"][seq.value], pd, r1, r2))


def _tumour_signal(comp: _Compartments, params: dict, seq: Sequence) -> np.ndarray:
    """Signal of necrosis and enhancing tumour in the tumour box, with smooth heterogeneity."""
    gd, protocol = params["gadolinium"], params["protocols"][seq.value]
    het = comp.heterogeneity
    out = np.zeros(het.shape, dtype=np.float32)
    for name, fraction, swing in (("necrosis", comp.core, 0.12), ("enhancing", comp.enhancing, 0.06)):
        pd, r1, r2 = _rates(params["tissues"][name])
        r1 = np.float32(r1) * (1.0 + np.float32(swing) * het)
        r2 = np.float32(r2) * (1.0 - np.float32(swing) * het)
        if seq == Sequence.T1C:
            conc = np.float32(gd[name]) * np.clip(1.0 + 0.35 * het, 0.3, 1.7)
            r1, r2 = _with_gadolinium(r1, r2, conc, gd)
        out += fraction * _signal(protocol, np.float32(pd), r1, r2)
    return out


def _noise_free_signal(comp: _Compartments, params: dict, seq: Sequence) -> np.ndarray:
    """Partial-volume sum of the compartment signals of one sequence (crop array)."""
    gd = params["gadolinium"]
    flow_void = params["acquisition"][seq.value]["flow_void"]
    signal = comp.tissue * _tissue_signal(comp, params, seq)
    signal += comp.csf * np.float32(_scalar_signal(params, seq, "csf"))
    signal += comp.vessel * np.float32(flow_void * _scalar_signal(params, seq, "blood", gd["blood"]))
    if comp.box is not None:
        signal[comp.box] += _tumour_signal(comp, params, seq)
    return signal.astype(np.float32, copy=False)


def _acquire(rng: np.random.Generator, signal: np.ndarray, comp: _Compartments, params: dict,
             seq: Sequence, grid: PhantomGrid) -> np.ndarray:
    """Bias field, Rician noise and scanner gain; exactly zero outside the brain (skull-stripped)."""
    acq = params["acquisition"][seq.value]
    reference = _scalar_signal(params, seq, "wm", params["gadolinium"]["wm"])
    spacing_zyx = tuple(reversed(grid.spacing))
    bias = _smooth_field(rng, signal.shape, 90.0, spacing_zyx)[comp.brain]
    bias = np.exp(np.float32(acq["bias_std"]) * bias)
    sigma = np.float32(acq["noise_fraction"] * reference)
    count = int(np.count_nonzero(comp.brain))
    real = signal[comp.brain] * bias + sigma * rng.standard_normal(count, dtype=np.float32)
    imag = sigma * rng.standard_normal(count, dtype=np.float32)
    image = np.zeros(signal.shape, dtype=np.float32)
    image[comp.brain] = np.sqrt(real * real + imag * imag) * np.float32(acq["wm_level"] / reference)
    return image


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------


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


def _sample_parameters(rng: np.random.Generator, seed: int, case_id: str, grid: PhantomGrid) -> dict:
    """Every scalar choice of a case, drawn in a fixed order (JSON-serialisable)."""
    return {
        "generator": "MRISynthesisLib.phantom",
        "template": "ICBM152 2009a nonlinear symmetric (nilearn package data)",
        "units": "T1/T2/TR/TE/TI in ms, flip in degrees, gadolinium in mM, r1/r2 in 1/(mM s), "
                 "lengths in mm, volumes in ml",
        "seed": seed,
        "case_id": case_id,
        "grid": {"size": list(grid.size), "spacing": list(grid.spacing),
                 "origin": list(grid.origin), "direction": list(grid.direction)},
        "tissues": _sample_tissues(rng),
        "gadolinium": _sample_gadolinium(rng),
        "protocols": _sample_protocols(rng),
        "acquisition": _sample_acquisition(rng),
        "deformation": _sample_deformation(rng),
    }


def generate_case(seed: int, small: bool = False, case_id: Optional[str] = None,
                  tumour: bool = True, noise: bool = True, bias: bool = True) -> PhantomCase:
    """Generate one phantom case; the same ``seed`` (and options) gives bit-identical arrays.

    ``small=True`` gives 96 x 96 x 64 voxels of 2.5 mm instead of the 240 x 240 x 155 BraTS
    grid at 1 mm. ``tumour=False`` gives a healthy brain with an all-zero label map.
    ``noise=False`` / ``bias=False`` leave out the Rician noise / the bias field of the very
    same case (every random draw is still made): the ideal images a synthesis could at best
    produce, for measuring what similarity is reachable at all.
    """
    seed = _check_seed(seed)
    case_id = case_id if case_id is not None else case_id_for_seed(seed)
    if not isinstance(case_id, str) or not case_id or "/" in case_id or "\\" in case_id:
        raise PhantomError(f"phantom case_id must be a non-empty file name, got {case_id!r}")
    rng = np.random.default_rng(seed)
    grid = phantom_grid(small)
    crop = _crop(bool(small))
    params = _sample_parameters(rng, seed, case_id, grid)
    for acquisition in params["acquisition"].values():
        acquisition["noise_fraction"] *= float(noise)
        acquisition["bias_std"] *= float(bias)
    tumour_params = _sample_tumour(rng, params["deformation"]) if tumour else None

    coords = _template_coordinates(rng, grid, crop, params["deformation"], tumour_params)
    channels = _sample_channels(coords, grid.spacing)
    if tumour_params is not None:
        box = _tumour_box(tumour_params, grid, crop)
        hemisphere = _hemisphere_mm(coords[(slice(None),) + box], tumour_params["hemisphere"])
    del coords
    comp = _healthy_compartments(rng, channels, grid)
    labels = np.zeros(comp.brain.shape, dtype=np.uint8)
    if tumour_params is not None:
        labels[box] = _insert_tumour(rng, comp, tumour_params, grid, crop, box, hemisphere)
        if min(tumour_params["volume_ml"].values()) == 0.0:
            raise PhantomError(f"phantom seed {seed}: a tumour label is empty ({tumour_params['volume_ml']})")
    params["tumour"] = tumour_params

    images = {}
    for seq in SEQUENCES:
        signal = _noise_free_signal(comp, params, seq)
        images[seq] = _to_image(_acquire(rng, signal, comp, params, seq, grid), grid, crop, np.float32)
    tissues = {name: _to_image(getattr(comp, name), grid, crop, np.float32) for name in ("gm", "wm")}
    healthy_csf = np.clip(1.0 - comp.gm - comp.wm, 0.0, 1.0) * comp.brain
    tissues["csf"] = _to_image(healthy_csf.astype(np.float32), grid, crop, np.float32)
    tissues["brain"] = _to_image(comp.brain.astype(np.uint8), grid, crop, np.uint8)
    label = _to_image(labels, grid, crop, np.uint8)
    return PhantomCase(case_id=case_id, images=images, label=label, seed=seed,
                       parameters=params, tissues=tissues)


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
    from MRISynthesisLib.core.io import write_image, write_text

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
                   tumour: bool = True) -> list[Path]:
    """Generate and write ``n_cases`` cases; case ``i`` uses seed ``seed + i``, id ``Phantom-<seed+i:05d>``.

    ``progress(fraction, message)`` (the project's progress callback) is called after each
    case. Returns the case folders in order.
    """
    seed = _check_seed(seed)
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 0:
        raise PhantomError(f"number of phantom cases must be a non-negative integer, got {n_cases!r}")
    folders = []
    for i in range(int(n_cases)):
        case = generate_case(seed + i, small=small, tumour=tumour)
        folders.append(write_case(case, output_dir))
        if progress is not None:
            progress((i + 1) / n_cases, f"{case.case_id} written ({i + 1}/{n_cases})")
    return folders
