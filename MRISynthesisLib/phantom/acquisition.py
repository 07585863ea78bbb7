"""Images from compartments: the signal of each compartment for one sequence, their partial-volume
sum, and what the scanner adds (bias field, Rician noise, gain)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..sequences import Sequence
from .compartments import Compartments
from .fields import smooth_field
from .grid import PhantomGrid
from .physics import protocol_signal, pure_signal, relaxation_rates, with_gadolinium

__all__ = ["noise_free_signal", "acquire"]


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
        pd_o, r1_o, r2_o = relaxation_rates(tissues["oedema"])
        pd += oedema * (np.float32(pd_o) - pd)
        r1 += oedema * (np.float32(r1_o) - r1)
        r2 += oedema * (np.float32(r2_o) - r2)
        conc += oedema * (np.float32(gd["oedema"]) - conc)
    if seq == Sequence.T1C:
        r1, r2 = with_gadolinium(r1, r2, conc, gd)
    return pd, r1, r2


def _tissue_signal(comp: Compartments, params: dict, seq: Sequence) -> np.ndarray:
    """Signal of the grey/white (and oedema) compartment, per voxel of the crop.

    Healthy tissue depends on the grey/white coordinate alone, so its signal is tabulated
    on 257 points and interpolated; the tumour box is computed voxel by voxel.
    """
    protocol = params["protocols"][seq.value]
    samples = np.linspace(0.0, 1.0, 257, dtype=np.float32)
    table = protocol_signal(protocol, *_tissue_rates(samples, params, seq))
    signal = np.zeros(comp.white.shape, dtype=np.float32)  # outside the brain no tissue: only zeros
    signal[comp.brain] = np.interp(comp.white[comp.brain], samples, table)
    if comp.box is not None:
        rates = _tissue_rates(comp.white[comp.box], params, seq, comp.oedema)
        signal[comp.box] = protocol_signal(protocol, *rates)
    return signal


def _tumour_signal(comp: Compartments, params: dict, seq: Sequence) -> np.ndarray:
    """Signal of necrosis and enhancing tumour in the tumour box, with smooth heterogeneity."""
    gd, protocol = params["gadolinium"], params["protocols"][seq.value]
    het = comp.heterogeneity
    out = np.zeros(het.shape, dtype=np.float32)
    for name, fraction, swing in (("necrosis", comp.core, 0.12), ("enhancing", comp.enhancing, 0.06)):
        pd, r1, r2 = relaxation_rates(params["tissues"][name])
        r1 = np.float32(r1) * (1.0 + np.float32(swing) * het)
        r2 = np.float32(r2) * (1.0 - np.float32(swing) * het)
        if seq == Sequence.T1C:
            conc = np.float32(gd[name]) * np.clip(1.0 + 0.35 * het, 0.3, 1.7)
            r1, r2 = with_gadolinium(r1, r2, conc, gd)
        out += fraction * protocol_signal(protocol, np.float32(pd), r1, r2)
    return out


def noise_free_signal(comp: Compartments, params: dict, seq: Sequence) -> np.ndarray:
    """Partial-volume sum of the compartment signals of one sequence (crop array)."""
    gd = params["gadolinium"]
    flow_void = params["acquisition"][seq.value]["flow_void"]
    signal = comp.tissue * _tissue_signal(comp, params, seq)
    signal += comp.csf * np.float32(pure_signal(params, seq, "csf"))
    signal += comp.vessel * np.float32(flow_void * pure_signal(params, seq, "blood", gd["blood"]))
    if comp.box is not None:
        signal[comp.box] += _tumour_signal(comp, params, seq)
    return signal.astype(np.float32, copy=False)


def acquire(rng: np.random.Generator, signal: np.ndarray, comp: Compartments, params: dict,
             seq: Sequence, grid: PhantomGrid) -> np.ndarray:
    """Bias field, Rician noise and scanner gain; exactly zero outside the brain (skull-stripped)."""
    acq = params["acquisition"][seq.value]
    reference = pure_signal(params, seq, "wm", params["gadolinium"]["wm"])
    spacing_zyx = tuple(reversed(grid.spacing))
    bias = smooth_field(rng, signal.shape, 90.0, spacing_zyx)[comp.brain]
    bias = np.exp(np.float32(acq["bias_std"]) * bias)
    sigma = np.float32(acq["noise_fraction"] * reference)
    count = int(np.count_nonzero(comp.brain))
    real = signal[comp.brain] * bias + sigma * rng.standard_normal(count, dtype=np.float32)
    imag = sigma * rng.standard_normal(count, dtype=np.float32)
    image = np.zeros(signal.shape, dtype=np.float32)
    image[comp.brain] = np.sqrt(real * real + imag * imag) * np.float32(acq["wm_level"] / reference)
    return image
