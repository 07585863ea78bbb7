"""Wide parameter ranges of randomised phantom cases: field strength, tissue relaxation, sequence timing,
scanner gain, noise, coil bias and acquisition geometry, drawn per case for training (SynthSeg-style).

Classic cases (:mod:`.physics`) draw from the narrow ranges of one 3 T scanner. Here each case
first draws a field strength, then tissue T1/T2/PD from ranges wider than the literature spread,
then sequence parameters from the clinical range of both field strengths. Every draw is checked
against the contrast orderings real scans always show (T1: WM > GM > CSF; T2: CSF > GM > WM;
FLAIR: CSF nulled, oedema bright; T1c: enhancing tumour and blood bright) and redrawn if a
parameter combination would break them: the randomisation widens contrast, it never inverts it.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np

from ..sequences import SEQUENCES, Sequence
from .physics import pure_signal, sample_uniform

__all__ = [
    "FIELD_STRENGTHS",
    "RANDOM_TISSUE_RANGES",
    "RANDOM_GREY_TO_WHITE",
    "FIELD_15T_SCALE",
    "RANDOM_GADOLINIUM",
    "RANDOM_PROTOCOL_RANGES",
    "RANDOM_ACQUISITION_RANGES",
    "VESSEL_FACTOR_RANGES",
    "ARTERY_FACTOR_RANGES",
    "ORDER_MARGINS",
    "sample_random_parameters",
    "contrast_orderings",
    "MT_SATURATION",
    "MT_SHARE",
    "with_magnetisation_transfer",
]

#: Field strengths (T) and how often each is drawn (BraTS mixes 1.5 T and 3 T centres).
FIELD_STRENGTHS: dict[float, float] = {1.5: 0.4, 3.0: 0.6}

#: T1 (ms), T2 (ms) and PD ranges at 3 T, wider than the classic ones (:data:`.physics.TISSUE_RANGES`)
#: to cover the spread of published values (Wansapura 1999, Stanisz 2005, Lu 2005, Bojorquez 2017).
RANDOM_TISSUE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "wm": {"T1": (750.0, 1150.0), "T2": (60.0, 90.0), "PD": (0.64, 0.74)},
    "csf": {"T1": (3600.0, 4800.0), "T2": (1200.0, 2500.0), "PD": (0.96, 1.0)},
    "blood": {"T1": (1550.0, 2050.0), "T2": (80.0, 200.0), "PD": (0.82, 0.92)},
    "oedema": {"T1": (1200.0, 2300.0), "T2": (150.0, 320.0), "PD": (0.82, 0.93)},
    "enhancing": {"T1": (1200.0, 1800.0), "T2": (90.0, 160.0), "PD": (0.78, 0.90)},
    "necrosis": {"T1": (2000.0, 3800.0), "T2": (200.0, 1000.0), "PD": (0.86, 0.99)},
    "haemorrhage": {"T1": (250.0, 600.0), "T2": (40.0, 300.0), "PD": (0.8, 0.9)},
}

#: Grey matter relative to white matter (T1, T2, PD ratios): GM T1 is 1.5-1.85 times WM at
#: both field strengths in the studies above; the ratio keeps the grey/white contrast's sign.
RANDOM_GREY_TO_WHITE: dict[str, tuple[float, float]] = {"T1": (1.5, 1.85), "T2": (1.15, 1.45), "PD": (1.08, 1.18)}

#: At 1.5 T, T1 of everything but CSF is 20-32 % shorter and T2 a little longer than at 3 T.
FIELD_15T_SCALE: dict[str, tuple[float, float]] = {"T1": (0.68, 0.8), "T2": (1.0, 1.12)}

#: Gadolinium: relaxivities (1/(mM s)) at 3 T (r1 is about 15 % higher at 1.5 T) and
#: concentrations (mM). Blood (also that of the choroid plexus and dura, which share the vessel
#: compartment) carries the most; healthy tissue only its intravascular share.
RANDOM_GADOLINIUM: dict[str, tuple[float, float]] = {
    "r1": (3.2, 4.4), "r2": (4.0, 5.5), "blood": (0.4, 1.5),
    "enhancing": (0.3, 1.5), "necrosis": (0.0, 0.05), "oedema": (0.0, 0.04),
    "gm": (0.005, 0.02), "wm": (0.002, 0.008),
}

#: Sequence timing ranges (ms, degrees) of the clinical protocols at 1.5 and 3 T.
RANDOM_PROTOCOL_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "mprage": {"TI": (700.0, 1100.0), "TR": (1500.0, 2700.0), "echo_spacing": (5.0, 10.0),
               "flip": (6.0, 12.0), "TE": (2.0, 4.5)},
    "spgr": {"TR": (8.0, 30.0), "flip": (12.0, 35.0), "TE": (2.0, 5.0)},
    "se": {"TR": (350.0, 650.0), "TE": (7.0, 15.0)},
    "t2": {"TR": (3500.0, 8000.0), "TE": (85.0, 130.0)},
    "flair": {"TR": (6000.0, 11000.0), "TE": (80.0, 140.0), "nominal_error": (0.95, 1.05)},
}

#: T1-weighted families and how often each is drawn; T1c may use another family than T1n.
RANDOM_T1_FAMILIES: dict[str, float] = {"mprage": 0.45, "spgr": 0.25, "se": 0.3}

#: Per-sequence acquisition ranges: Rician noise (fraction of the white-matter signal of one
#: acquired voxel), bias-field strength (std of the log field), in-plane resolution (mm) and
#: slice thickness (mm) of a 2D acquisition, and how often a sequence is 2D rather than 3D.
RANDOM_ACQUISITION_RANGES: dict[str, tuple[float, float]] = {
    "noise_fraction": (0.01, 0.05),
    "bias_std": (0.05, 0.25),
    "inplane_mm": (0.45, 1.8),
    "thickness_2d_mm": (2.0, 6.0),
    "thickness_3d_mm": (0.9, 1.5),
    "gap_fraction": (0.0, 0.3),
    "motion_mm": (0.3, 2.0),
}

#: Probability that a sequence is a 2D multi-slice acquisition (else 3D, about 1 mm).
SLICE_2D_PROBABILITY: dict[Sequence, float] = {Sequence.T1N: 0.5, Sequence.T1C: 0.4, Sequence.T2W: 0.85,
                                              Sequence.T2F: 0.6}

#: Signal of flowing blood relative to static blood, per sequence, for the slow flow of veins
#: and sinuses (``flow_void``) and the fast flow of arteries (``artery_factor``): inflow of
#: unsaturated spins brightens T1 (gradient echo for both, spin echo for slow flow only: the
#: entry-slice effect), spin-echo T2 and FLAIR lose the spins that leave the slice between
#: the pulses (flow voids), arteries more than veins.
VESSEL_FACTOR_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "gre": {"t1n": (1.0, 2.5), "t1c": (1.0, 1.6)},
    "se": {"t1n": (0.8, 2.0), "t1c": (1.0, 1.5)},
    "t2w": {"any": (0.1, 0.8)},
    "t2f": {"any": (0.1, 0.8)},
}
ARTERY_FACTOR_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "gre": {"t1n": (1.0, 2.5), "t1c": (1.0, 2.0)},
    "se": {"t1n": (0.2, 0.8), "t1c": (0.3, 1.0)},
    "t2w": {"any": (0.02, 0.3)},
    "t2f": {"any": (0.02, 0.3)},
}

#: Smallest ratios the drawn parameters must give between pure tissues (noise-free signal).
ORDER_MARGINS: dict[str, float] = {
    "t1_wm_over_gm": 1.05, "t1_gm_over_csf": 1.3, "t2_csf_over_gm": 1.5, "t2_gm_over_wm": 1.05,
    "flair_wm_over_csf": 2.5, "flair_oedema_over_wm": 1.2, "t1c_enhancing_over_wm": 1.2,
    "t1c_blood_over_wm": 1.3,
}


def _choose(rng: np.random.Generator, weights: dict) -> object:
    """One key of ``weights`` drawn with probabilities proportional to its values."""
    keys = list(weights)
    p = np.asarray(list(weights.values()), dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _sample_tissues(rng: np.random.Generator, field_t: float) -> dict[str, dict[str, float]]:
    """T1/T2/PD of every tissue at ``field_t`` tesla."""
    tissues = {name: {key: sample_uniform(rng, bounds) for key, bounds in ranges.items()}
               for name, ranges in RANDOM_TISSUE_RANGES.items()}
    tissues["gm"] = {key: tissues["wm"][key] * sample_uniform(rng, bounds)
                     for key, bounds in RANDOM_GREY_TO_WHITE.items()}
    tissues["oedema"]["T1"] = tissues["wm"]["T1"] * sample_uniform(rng, (1.5, 2.1))
    t1_scale = sample_uniform(rng, FIELD_15T_SCALE["T1"]) if field_t < 2.0 else 1.0
    t2_scale = sample_uniform(rng, FIELD_15T_SCALE["T2"]) if field_t < 2.0 else 1.0
    for name, values in tissues.items():
        if name != "csf":
            values["T1"] *= t1_scale
            values["T2"] *= t2_scale
    return tissues


def _sample_gadolinium(rng: np.random.Generator, field_t: float) -> dict[str, float]:
    """Relaxivities and concentrations; r1 is higher at 1.5 T."""
    gd = {key: sample_uniform(rng, bounds) for key, bounds in RANDOM_GADOLINIUM.items()}
    if field_t < 2.0:
        gd["r1"] *= 1.15
    return gd


def _t1_protocol(rng: np.random.Generator, kind: str) -> dict[str, Union[float, str]]:
    """Timing of one T1-weighted acquisition of family ``kind``."""
    ranges = RANDOM_PROTOCOL_RANGES[kind]
    protocol: dict[str, Union[float, str]] = {"type": kind}
    protocol.update({key: sample_uniform(rng, bounds) for key, bounds in ranges.items()})
    if kind == "mprage":
        readouts = int(rng.integers(128, 209))
        train = readouts * float(protocol["echo_spacing"])
        protocol["TI"] = max(float(protocol["TI"]), train / 2.0 + 50.0)  # the train fits after the inversion
        protocol["TR"] = max(float(protocol["TR"]), float(protocol["TI"]) + train / 2.0 + 300.0)
        protocol["readouts"] = readouts
    return protocol


def _sample_protocols(rng: np.random.Generator, tissues: dict) -> dict[str, dict[str, Union[float, str]]]:
    """Sequence parameters of the four acquisitions; FLAIR's TI nulls a nominal CSF T1 near the case's."""
    t1n_kind = str(_choose(rng, RANDOM_T1_FAMILIES))
    t1c_kind = t1n_kind if rng.uniform() < 0.6 else str(_choose(rng, RANDOM_T1_FAMILIES))
    t2 = RANDOM_PROTOCOL_RANGES["t2"]
    flair = RANDOM_PROTOCOL_RANGES["flair"]
    flair_tr = sample_uniform(rng, flair["TR"])
    nominal = tissues["csf"]["T1"] * sample_uniform(rng, flair["nominal_error"])
    flair_ti = nominal * math.log(2.0 / (1.0 + math.exp(-flair_tr / nominal)))
    return {
        "t1n": _t1_protocol(rng, t1n_kind),
        "t1c": _t1_protocol(rng, t1c_kind),
        "t2w": {"type": "se", "TR": sample_uniform(rng, t2["TR"]), "TE": sample_uniform(rng, t2["TE"])},
        "t2f": {"type": "flair", "TR": flair_tr, "TI": flair_ti, "TE": sample_uniform(rng, flair["TE"]),
                "nominal_csf_T1": nominal},
    }


def _vessel_factor(rng: np.random.Generator, seq: Sequence, protocol: dict,
                   ranges: dict[str, dict[str, tuple[float, float]]]) -> float:
    """Flowing-blood signal relative to static blood for one sequence and protocol."""
    if seq in (Sequence.T2W, Sequence.T2F):
        return sample_uniform(rng, ranges[seq.value]["any"])
    family = "se" if protocol["type"] == "se" else "gre"
    return sample_uniform(rng, ranges[family][seq.value])


#: Magnetisation transfer of the many off-resonant refocusing pulses of multi-slice turbo spin echo
#: (T2, FLAIR): the share of white-matter signal lost (2D multi-slice more than 3D; Dixon 1990
#: measured 25-40 % in multi-slice T2 against single slice); grey matter loses three quarters of
#: that, oedema and tumour half, fluids nothing (Melki 1992, Dousset 1992).
MT_SATURATION: dict[str, tuple[float, float]] = {"t2w_2d": (0.15, 0.4), "t2w_3d": (0.0, 0.15),
                                                 "t2f_2d": (0.05, 0.2), "t2f_3d": (0.0, 0.1)}
#: Share of the white-matter magnetisation-transfer loss each tissue sees.
MT_SHARE: dict[str, float] = {"wm": 1.0, "gm": 0.75, "oedema": 0.5, "enhancing": 0.5, "necrosis": 0.2}


def _mt_saturation(rng: np.random.Generator, seq: Sequence, two_d: bool) -> float:
    """White-matter signal lost to magnetisation transfer on ``seq`` (0 for the T1-weighted ones)."""
    key = f"{seq.value}_{'2d' if two_d else '3d'}"
    return sample_uniform(rng, MT_SATURATION[key]) if key in MT_SATURATION else 0.0


def with_magnetisation_transfer(params: dict, seq: Sequence) -> dict:
    """``params`` with each tissue's PD lowered by the magnetisation transfer of ``seq`` (a new dict)."""
    mt = params["acquisition"][seq.value].get("mt_saturation", 0.0)
    if not mt:
        return params
    tissues = {name: dict(values, PD=values["PD"] * (1.0 - mt * MT_SHARE.get(name, 0.0)))
               for name, values in params["tissues"].items()}
    return dict(params, tissues=tissues)


def _sample_acquisition(rng: np.random.Generator, protocols: dict) -> dict[str, dict]:
    """Gain, noise, bias strength, resolution, slice geometry, motion and flow of each sequence."""
    ranges = RANDOM_ACQUISITION_RANGES
    out = {}
    for seq in SEQUENCES:
        two_d = bool(rng.uniform() < SLICE_2D_PROBABILITY[seq])
        thickness = sample_uniform(rng, ranges["thickness_2d_mm" if two_d else "thickness_3d_mm"])
        axis = str(_choose(rng, {"axial": 0.8, "coronal": 0.1, "sagittal": 0.1})) if two_d else "axial"
        inplane = sample_uniform(rng, ranges["inplane_mm"]) if two_d else min(thickness, 1.2)
        moved = bool(rng.uniform() < 0.35)
        out[seq.value] = {
            "wm_level": float(np.exp(rng.uniform(math.log(200.0), math.log(2000.0)))),
            "noise_fraction": sample_uniform(rng, ranges["noise_fraction"]),
            "bias_std": sample_uniform(rng, ranges["bias_std"]),
            "flow_void": _vessel_factor(rng, seq, protocols[seq.value], VESSEL_FACTOR_RANGES),
            "artery_factor": _vessel_factor(rng, seq, protocols[seq.value], ARTERY_FACTOR_RANGES),
            "two_d": two_d,
            "slice_axis": axis,
            "slice_thickness_mm": thickness,
            "slice_gap_mm": thickness * sample_uniform(rng, ranges["gap_fraction"]) if two_d else 0.0,
            "inplane_mm": inplane,
            "apodisation": sample_uniform(rng, (0.0, 0.6)),
            "motion_mm": sample_uniform(rng, ranges["motion_mm"]) if moved else 0.0,
            "motion_steps": int(rng.integers(1, 6)),
            "mt_saturation": _mt_saturation(rng, seq, two_d),
        }
    return out


def contrast_orderings(params: dict) -> dict[str, float]:
    """Ratios between pure-tissue signals that :data:`ORDER_MARGINS` bounds from below."""
    gd = params["gadolinium"]
    s = {(seq, t): pure_signal(params, seq, t, gd.get(t, 0.0)) for seq in SEQUENCES
         for t in ("wm", "gm", "csf", "oedema", "enhancing")}
    blood_t1c = pure_signal(params, Sequence.T1C, "blood", gd["blood"])
    t1n, t1c, t2w, t2f = SEQUENCES
    return {
        "t1_wm_over_gm": min(s[t1n, "wm"] / s[t1n, "gm"], s[t1c, "wm"] / s[t1c, "gm"]),
        "t1_gm_over_csf": min(s[t1n, "gm"] / s[t1n, "csf"], s[t1c, "gm"] / s[t1c, "csf"]),
        "t2_csf_over_gm": s[t2w, "csf"] / s[t2w, "gm"],
        "t2_gm_over_wm": s[t2w, "gm"] / s[t2w, "wm"],
        "flair_wm_over_csf": s[t2f, "wm"] / max(s[t2f, "csf"], 1e-9),
        "flair_oedema_over_wm": s[t2f, "oedema"] / s[t2f, "wm"],
        "t1c_enhancing_over_wm": s[t1c, "enhancing"] / s[t1c, "wm"],
        "t1c_blood_over_wm": blood_t1c / s[t1c, "wm"],
    }


def _orderings_hold(params: dict) -> bool:
    """Whether every ratio of :func:`contrast_orderings` reaches its margin."""
    ratios = contrast_orderings(params)
    return all(ratios[key] >= margin for key, margin in ORDER_MARGINS.items())


def sample_random_parameters(rng: np.random.Generator, max_tries: int = 200) -> dict:
    """Field strength, tissues, gadolinium, protocols and acquisition of one randomised case.

    Tissues and protocols are redrawn together until :func:`contrast_orderings` meets
    :data:`ORDER_MARGINS` (usually at once; ``max_tries`` bounds it). The result is JSON-ready.
    """
    field_t = float(_choose(rng, FIELD_STRENGTHS))
    for attempt in range(max_tries):
        params = {"field_strength_T": field_t, "tissues": _sample_tissues(rng, field_t),
                  "gadolinium": _sample_gadolinium(rng, field_t)}
        params["protocols"] = _sample_protocols(rng, params["tissues"])
        if _orderings_hold(params):
            params["draws"] = attempt + 1
            break
    else:
        raise RuntimeError("no parameter draw met the contrast orderings")  # ranges are broken
    params["acquisition"] = _sample_acquisition(rng, params["protocols"])
    return params
