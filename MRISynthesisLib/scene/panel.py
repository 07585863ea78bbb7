"""What the module panel shows for a selection of input slots, as structured state: the present and missing
sequences, whether each button runs and, when it does not, why (a :class:`PanelReason` code). The
widget turns that state into translated sentences; nothing here is user text. Pure Python: it reads no node."""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Iterable, List, Mapping, Optional

from ..sequences import SEQUENCES, Sequence

__all__ = ["PanelReason", "SelectionState", "selection_state", "DistributionReason", "DistributionNote",
           "distribution_notes"]


class PanelReason(str, enum.Enum):
    """Why a button of the panel does not run (``NONE``: it runs); the widget words each one."""

    NONE = "none"
    #: A synthesis or validation is running (both buttons).
    BUSY = "busy"
    #: No input volume is selected (Synthesize).
    NO_INPUT = "no_input"
    #: All four sequences are selected: nothing to synthesise (Synthesize).
    NOTHING_MISSING = "nothing_missing"
    #: No model is chosen or installed (both buttons).
    NO_MODEL = "no_model"
    #: Validation synthesises each sequence from the other three, so it needs all four (Validate).
    NEEDS_ALL_FOUR = "needs_all_four"


@dataclasses.dataclass(frozen=True)
class SelectionState:
    """What the module panel shows for a selection: the sequences present and missing (canonical order)
    and, for each button, the reason it does not run (:attr:`PanelReason.NONE` when it runs)."""

    present: list  # Sequence
    missing: list  # Sequence
    synthesize_reason: PanelReason
    validate_reason: PanelReason

    @property
    def synthesize_enabled(self) -> bool:
        return self.synthesize_reason is PanelReason.NONE

    @property
    def validate_enabled(self) -> bool:
        return self.validate_reason is PanelReason.NONE


def selection_state(selected: Mapping[Sequence, Any], has_model: bool = True, busy: bool = False
                    ) -> SelectionState:
    """Decide which button runs and, when one does not, the reason that wins.

    Synthesize: busy, then no input, then nothing missing, then no model. Validate: busy, then a
    sequence missing, then no model.
    """
    present = [s for s in SEQUENCES if selected.get(s) is not None]
    missing = [s for s in SEQUENCES if selected.get(s) is None]
    if busy:
        synthesize = PanelReason.BUSY
    elif not present:
        synthesize = PanelReason.NO_INPUT
    elif not missing:
        synthesize = PanelReason.NOTHING_MISSING
    elif not has_model:
        synthesize = PanelReason.NO_MODEL
    else:
        synthesize = PanelReason.NONE
    if busy:
        validate = PanelReason.BUSY
    elif missing:
        validate = PanelReason.NEEDS_ALL_FOUR
    elif not has_model:
        validate = PanelReason.NO_MODEL
    else:
        validate = PanelReason.NONE
    return SelectionState(present=present, missing=missing, synthesize_reason=synthesize, validate_reason=validate)


class DistributionReason(str, enum.Enum):
    """Why a result may not be trusted as much as on the model's training data (the out-of-distribution
    check, :mod:`MRISynthesisLib.core.ood_check`); the widget words each one, with the note's values."""

    #: The model's bundle has no training statistics: nothing was compared (said once).
    NOT_CHECKED = "not_checked"
    #: The bundle has training statistics that this version cannot read (a newer or damaged bundle): not checked.
    STATISTICS_UNREADABLE = "statistics_unreadable"
    #: Non-zero voxels outside the brain (values: percent, trained_percent).
    NOT_SKULL_STRIPPED = "not_skull_stripped"
    #: Brain volume outside the trained range (values: ml, trained_min, trained_max).
    BRAIN_VOLUME = "brain_volume"
    #: Voxel size unlike the training data's (values: spacing, trained; text such as "1 x 1 x 5.5").
    VOXEL_SIZE = "voxel_size"
    #: Normalised brain intensities outside the trained range (values: level, value, trained_min, trained_max).
    INTENSITY = "intensity"
    #: Intensities related to another input unlike in training (values: other, a Sequence; value, trained_min,
    #: trained_max).
    INTENSITY_RELATION = "intensity_relation"


@dataclasses.dataclass(frozen=True)
class DistributionNote:
    """One out-of-distribution reason for the panel: the code, the input it concerns (or None) and its values."""

    reason: DistributionReason
    sequence: Optional[Sequence]
    values: Mapping


def distribution_notes(results: Any) -> List[DistributionNote]:
    """The notes of one synthesis result, or of a validation's results (their inputs overlap: each reason
    once). Results without a check count as not checked."""
    items: Iterable = results if isinstance(results, (list, tuple)) else [results]
    notes: List[DistributionNote] = []
    for result in items:
        check = getattr(result, "distribution_check", None) or {}
        if not check.get("checked"):
            reason = (DistributionReason.STATISTICS_UNREADABLE if check.get("statistics_unreadable")
                      else DistributionReason.NOT_CHECKED)
            found = [DistributionNote(reason, None, {})]
        else:
            found = [DistributionNote(DistributionReason(w["code"]),
                                      Sequence(w["sequence"]) if w.get("sequence") else None,
                                      _note_values(w.get("values") or {})) for w in check.get("warnings", [])]
        notes += [note for note in found if note not in notes]
    return notes


def _note_values(values: Mapping) -> dict:
    """A warning's values for the widget: the other sequence of a relation as a :class:`Sequence`."""
    out = dict(values)
    if "other" in out:
        out["other"] = Sequence(out["other"])
    return out
