"""What the module panel shows for a selection of input slots, as structured state: the present and missing
sequences, whether each button runs and, when it does not, why (a :class:`PanelReason` code). The
widget turns that state into translated sentences; nothing here is user text. Pure Python: it reads no node."""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

from ..sequences import SEQUENCES, Sequence

__all__ = ["PanelReason", "SelectionState", "selection_state"]


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
