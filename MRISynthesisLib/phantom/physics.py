"""MR physics of the phantom: the per-case tissue, gadolinium, protocol and scanner parameters, and the
signal equations that turn them into image intensity.

Contrast comes from per-tissue T1/T2/PD values at 3 T pushed through signal equations:
MPRAGE-like, spoiled gradient echo or spin-echo T1 (T1n), spin-echo T2 (T2w), inversion
recovery FLAIR whose TI nulls a nominal CSF T1 (T2f), and T1 after gadolinium (T1c), where
``R1 += r1 * C`` in the enhancing tumour, the blood, the choroid plexus, the falx and dura.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np

from ..sequences import SEQUENCES, Sequence

__all__ = [
    "pure_signal",
    "TISSUE_RANGES",
    "GREY_TO_WHITE_RANGES",
    "GADOLINIUM_RANGES",
    "T1_PROTOCOLS",
    "sample_uniform",
    "sample_tissues",
    "sample_gadolinium",
    "sample_protocols",
    "sample_acquisition",
    "protocol_signal",
    "relaxation_rates",
    "with_gadolinium",
]

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


def sample_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One uniform draw in ``bounds`` as a plain float (JSON-friendly)."""
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_tissues(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Per-case T1/T2/PD of every tissue: :data:`TISSUE_RANGES`, grey matter relative to white."""
    tissues = {
        name: {key: sample_uniform(rng, bounds) for key, bounds in ranges.items()}
        for name, ranges in TISSUE_RANGES.items()
    }
    tissues["gm"] = {key: tissues["wm"][key] * sample_uniform(rng, bounds)
                     for key, bounds in GREY_TO_WHITE_RANGES.items()}
    # Oedema is water added to white matter: its T1 follows the case's white matter.
    tissues["oedema"]["T1"] = float(np.clip(tissues["wm"]["T1"] * sample_uniform(rng, (1.6, 2.0)), 1400.0, 2000.0))
    return tissues


def sample_gadolinium(rng: np.random.Generator) -> dict[str, float]:
    """Per-case relaxivities and gadolinium concentrations."""
    return {key: sample_uniform(rng, bounds) for key, bounds in GADOLINIUM_RANGES.items()}


def _sample_t1_protocol(rng: np.random.Generator, kind: str) -> dict[str, Union[float, str]]:
    """Timing of one T1-weighted acquisition of the given ``kind``."""
    if kind == "mprage":
        readouts = int(rng.integers(144, 193))
        echo_spacing = sample_uniform(rng, (6.0, 9.0))
        ti = sample_uniform(rng, (850.0, 1100.0))
        train = readouts * echo_spacing
        tr_min = ti + train / 2.0 + 300.0  # leave a recovery delay after the train
        tr = max(sample_uniform(rng, (1900.0, 2500.0)), tr_min)
        return {"type": "mprage", "TR": tr, "TI": ti, "echo_spacing": echo_spacing,
                "readouts": readouts, "flip": sample_uniform(rng, (7.0, 12.0)),
                "TE": sample_uniform(rng, (2.0, 4.0))}
    if kind == "spgr":
        return {"type": "spgr", "TR": sample_uniform(rng, (12.0, 25.0)),
                "flip": sample_uniform(rng, (15.0, 30.0)), "TE": sample_uniform(rng, (2.5, 5.0))}
    return {"type": "se", "TR": sample_uniform(rng, (400.0, 700.0)), "TE": sample_uniform(rng, (8.0, 15.0))}


def sample_protocols(rng: np.random.Generator) -> dict[str, dict[str, Union[float, str]]]:
    """Sequence parameters of the four acquisitions of one case.

    T1n and T1c share the protocol family (one scanner) with independent timings. The FLAIR
    TI nulls a *nominal* CSF T1 the scanner assumes, so nulling of the case's CSF is imperfect.
    """
    kinds = list(T1_PROTOCOLS)
    kind = kinds[int(rng.choice(len(kinds), p=list(T1_PROTOCOLS.values())))]
    t1n = _sample_t1_protocol(rng, kind)
    t1c = _sample_t1_protocol(rng, kind)
    t2w = {"type": "se", "TR": sample_uniform(rng, (3000.0, 6000.0)), "TE": sample_uniform(rng, (80.0, 120.0))}
    flair_tr = sample_uniform(rng, (8000.0, 11000.0))
    nominal_csf_t1 = sample_uniform(rng, (4000.0, 4400.0))
    flair_ti = nominal_csf_t1 * math.log(2.0 / (1.0 + math.exp(-flair_tr / nominal_csf_t1)))
    t2f = {"type": "flair", "TR": flair_tr, "TI": flair_ti, "TE": sample_uniform(rng, (95.0, 130.0)),
           "nominal_csf_T1": nominal_csf_t1}
    return {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f}


def sample_acquisition(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Scanner gain, Rician noise level, bias-field strength and vessel flow voids per sequence."""
    return {
        seq.value: {
            "wm_level": float(np.exp(rng.uniform(math.log(200.0), math.log(2000.0)))),
            "noise_fraction": sample_uniform(rng, (0.01, 0.035)),
            "bias_std": sample_uniform(rng, (0.03, 0.15)),
            "flow_void": sample_uniform(rng, (0.1, 0.4)) if seq in (Sequence.T2W, Sequence.T2F) else 1.0,
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


def protocol_signal(protocol: dict, pd, r1, r2):
    """Signal of one compartment for a protocol dict from :func:`sample_protocols`."""
    kind = protocol["type"]
    if kind == "mprage":
        return _mprage(pd, r1, r2, protocol["TR"], protocol["TI"], protocol["echo_spacing"],
                       int(protocol["readouts"]), protocol["flip"], protocol["TE"])
    if kind == "spgr":
        return _spoiled_gre(pd, r1, r2, protocol["TR"], protocol["TE"], protocol["flip"])
    if kind == "flair":
        return _flair(pd, r1, r2, protocol["TR"], protocol["TI"], protocol["TE"])
    return _spin_echo(pd, r1, r2, protocol["TR"], protocol["TE"])


def relaxation_rates(tissue: dict[str, float]) -> tuple[float, float, float]:
    """(PD, R1, R2) in 1/ms of a tissue parameter dict."""
    return tissue["PD"], 1.0 / tissue["T1"], 1.0 / tissue["T2"]


def with_gadolinium(r1, r2, concentration, gd: dict[str, float]):
    """Relaxation rates (1/ms) after adding ``concentration`` mM of gadolinium."""
    return r1 + gd["r1"] * 1e-3 * concentration, r2 + gd["r2"] * 1e-3 * concentration


def pure_signal(params: dict, seq: Sequence, tissue: str, conc: float = 0.0) -> float:
    """Noise-free signal of a uniform compartment of ``tissue`` (CSF, blood, ...) on ``seq`` under the case's
    protocol; ``conc`` mM of gadolinium counts on T1c only."""
    pd, r1, r2 = relaxation_rates(params["tissues"][tissue])
    if seq == Sequence.T1C and conc:
        r1, r2 = with_gadolinium(r1, r2, conc, params["gadolinium"])
    return float(protocol_signal(params["protocols"][seq.value], pd, r1, r2))
