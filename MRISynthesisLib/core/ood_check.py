"""Is this case like the ones the model was trained on? A per-case out-of-distribution check with reasons.

A synthesis from a case unlike the training data (another scanner, no skull stripping, a child's
brain, scrambled intensities) looks as confident as any other. :func:`check_distribution` measures
the case (:func:`.ood_statistics.measure_case`, the very measures of the training summary) and
compares every statistic with the range stored in the bundle (``metadata.training_statistics``).
Each statistic outside its range gives a :class:`DistributionWarning`: a code and values for a front
end that words it itself (the Slicer panel, translated), and an English ``reason`` for the report and
the command line. A bundle without statistics is not checked, and the result says so: silence would
read as reassurance.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, List, Mapping, Optional

import SimpleITK as sitk

from ..sequences import SEQUENCES, Sequence, parse_sequence
from .ood_statistics import FORMAT_VERSION, METADATA_KEY, QUANTILE_LEVELS, measure_case

if TYPE_CHECKING:
    from .model_grid_inputs import ModelGridInputs

__all__ = ["NOT_CHECKED_NOTE", "WARNING_CODES", "DistributionWarning", "DistributionCheck", "check_distribution",
           "compare", "report_fields"]

#: What a result says when its bundle carries no training statistics (said once per result).
NOT_CHECKED_NOTE = ("no out-of-distribution check: the model bundle has no training statistics "
                    "(add them with scripts/training_statistics.py)")
#: The warning codes, in the order a case's warnings are listed for each input.
WARNING_CODES = ("not_skull_stripped", "brain_volume", "voxel_size", "intensity", "intensity_relation")


@dataclasses.dataclass(frozen=True)
class DistributionWarning:
    """One statistic of one input outside the training range: ``code`` and ``values`` for front ends that
    word it themselves, ``reason`` in English (report, command line)."""

    sequence: Optional[Sequence]
    code: str
    reason: str
    values: dict

    def to_json(self) -> dict:
        return {"sequence": self.sequence.value if self.sequence else None, "code": self.code,
                "reason": self.reason, "values": dict(self.values)}


@dataclasses.dataclass
class DistributionCheck:
    """The check of one case: ``checked`` (False without usable training statistics, see ``note``), the
    warnings; ``statistics_unreadable``: the bundle has statistics, but in a layout this version cannot read
    or malformed (a newer or a damaged bundle, not merely an older one)."""

    checked: bool
    warnings: List[DistributionWarning] = dataclasses.field(default_factory=list)
    note: str = ""
    measured: dict = dataclasses.field(default_factory=dict)
    statistics_unreadable: bool = False

    @property
    def out_of_distribution(self) -> Optional[bool]:
        """True with any warning, False when checked and none, None when not checked."""
        return bool(self.warnings) if self.checked else None

    def to_json(self) -> dict:
        return {"checked": self.checked, "out_of_distribution": self.out_of_distribution,
                "warnings": [w.to_json() for w in self.warnings], "note": self.note or None,
                "measured": self.measured or None, "statistics_unreadable": self.statistics_unreadable}


def report_fields(check: Optional[Mapping]) -> dict:
    """The report's keys for a :meth:`DistributionCheck.to_json` dict (None: a result made before the check)."""
    check = dict(check or {"checked": False, "out_of_distribution": None, "warnings": [], "note": NOT_CHECKED_NOTE})
    return {"out_of_distribution": check.get("out_of_distribution"),
            "out_of_distribution_warnings": [{"sequence": w.get("sequence"), "reason": w.get("reason"),
                                              "code": w.get("code")} for w in check.get("warnings", [])],
            "distribution_check": check}


def check_distribution(images: Mapping[Sequence, sitk.Image], prepared: Optional["ModelGridInputs"],
                       metadata: Optional[Mapping[str, Any]]) -> DistributionCheck:
    """Measure the case (``images`` as given, ``prepared`` on the model grid) and compare it with the training
    statistics in a bundle's ``metadata``; without them (or with a layout this version cannot read) nothing is
    measured and the result says the check was not possible."""
    statistics = (metadata or {}).get(METADATA_KEY)
    if statistics is None:
        return DistributionCheck(checked=False, note=NOT_CHECKED_NOTE)
    if not isinstance(statistics, Mapping) or statistics.get("version") != FORMAT_VERSION:
        version = statistics.get("version") if isinstance(statistics, Mapping) else None
        note = (f"no out-of-distribution check: the bundle's training statistics have format version {version!r}, "
                f"this version reads {FORMAT_VERSION}")
        return DistributionCheck(checked=False, note=note, statistics_unreadable=True)
    measured = measure_case(images, prepared)
    try:
        warnings = compare(measured, statistics)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        note = f"no out-of-distribution check: the bundle's training statistics are malformed ({type(error).__name__})"
        return DistributionCheck(checked=False, note=note, measured=measured, statistics_unreadable=True)
    return DistributionCheck(checked=True, warnings=warnings, measured=measured)


def _outside(value: float, limits: Mapping) -> bool:
    low, high = limits.get("low"), limits.get("high")
    return (low is not None and value < low) or (high is not None and value > high)


def _g(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _level_name(level: int) -> str:
    """``"median"``, ``"1st percentile"``, ``"95th percentile"``."""
    return "median" if level == 50 else f"{level}{'st' if level == 1 else 'th'} percentile"


def compare(measured: Mapping, statistics: Mapping) -> List[DistributionWarning]:
    """Every statistic of ``measured`` (:func:`~.ood_statistics.measure_case`) outside ``statistics``' ranges."""
    warnings: List[DistributionWarning] = []
    trained = statistics["sequences"]
    for key, values in measured["sequences"].items():
        if key in trained:
            warnings += _input_warnings(parse_sequence(key), values, trained[key])
    warnings += _relation_warnings(measured.get("pairs", {}), statistics.get("pairs", {}))
    return warnings


def _input_warnings(sequence: Sequence, values: Mapping, trained: Mapping) -> List[DistributionWarning]:
    name = sequence.display_name
    found = []
    outside, limits = values["outside_fraction"], trained["outside_fraction"]
    if _outside(outside, limits):
        found.append(DistributionWarning(sequence, "not_skull_stripped", (
            f"{name} not skull-stripped ({100 * outside:.0f} % of the non-zero voxels lie outside the brain, "
            f"trained at most {100 * limits['max']:.0f} %)"),
            {"percent": round(100 * outside, 1), "trained_percent": round(100 * limits["max"], 1)}))
    elif _outside(values["brain_ml"], trained["brain_ml"]):  # a head's volume is no brain volume: said above
        limits = trained["brain_ml"]
        found.append(DistributionWarning(sequence, "brain_volume", (
            f"{name} brain volume {values['brain_ml']:.0f} ml, trained {limits['min']:.0f}-{limits['max']:.0f} ml"),
            {"ml": values["brain_ml"], "trained_min": limits["min"], "trained_max": limits["max"]}))
    limits = trained["spacing_mm"]
    if any(_outside(s, limits) for s in values["spacing_mm"]):
        spacing = " x ".join(f"{s:g}" for s in values["spacing_mm"])
        at = f"{limits['min']:g}" if limits["min"] == limits["max"] else f"{limits['min']:g}-{limits['max']:g}"
        found.append(DistributionWarning(sequence, "voxel_size", f"{name} voxel size {spacing} mm, trained at {at} mm",
                                         {"spacing": spacing, "trained": at}))
    if "quantiles" in values and "quantiles" in trained:
        found += _intensity_warning(sequence, values["quantiles"], trained["quantiles"])
    return found


def _intensity_warning(sequence: Sequence, quantiles: List[float], trained: List[Mapping]) -> List[DistributionWarning]:
    """One warning naming the quantile furthest outside its range (relative to the range's width)."""
    worst, excess = None, 0.0
    for index, (value, limits) in enumerate(zip(quantiles, trained)):
        if _outside(value, limits):
            width = max(limits["high"] - limits["low"], 1e-6)
            beyond = max(limits["low"] - value, value - limits["high"]) / width
            if beyond > excess:
                worst, excess = index, beyond
    if worst is None:
        return []
    level, value, limits = QUANTILE_LEVELS[worst], quantiles[worst], trained[worst]
    return [DistributionWarning(sequence, "intensity", (
        f"{sequence.display_name} intensity distribution outside the training range ({_level_name(level)} "
        f"{value:.2f}, trained {limits['min']:.2f}-{limits['max']:.2f})"),
        {"level": level, "value": value, "trained_min": limits["min"], "trained_max": limits["max"]})]


def _relation_warnings(pairs: Mapping, trained: Mapping) -> List[DistributionWarning]:
    """Rank correlations outside their ranges, each under the sequence that most flagged pairs share.

    A scrambled FLAIR changes its correlation with every other input, so FLAIR is named; with a single
    flagged pair neither side can be blamed, and it is listed under the pair's second sequence, naming both.
    """
    flagged = [(key, value) for key, value in pairs.items() if key in trained and _outside(value, trained[key])]
    counts = {s: sum(s.value in key.split("-") for key, _ in flagged) for s in SEQUENCES}
    found = []
    for key, value in flagged:
        first, second = (parse_sequence(part) for part in key.split("-"))
        blamed = first if counts[first] > counts[second] else second
        other = first if blamed is second else second
        limits = trained[key]
        found.append(DistributionWarning(blamed, "intensity_relation", (
            f"{blamed.display_name} intensities relate to {other.display_name} unlike in training (rank "
            f"correlation {_g(value)}, trained {_g(limits['min'])} to {_g(limits['max'])})"),
            {"other": other.value, "value": value, "trained_min": limits["min"], "trained_max": limits["max"]}))
    return found
