"""What the module panel shows for a selection of input slots: the missing-sequences line, the button texts,
whether each button runs and, when it does not, why (its tooltip). Pure Python: it reads no node."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..sequences import SEQUENCES, Sequence

__all__ = ["SelectionState", "selection_state"]

#: Tooltip of both buttons while a job runs.
_BUSY_REASON = "A synthesis is running; wait for it or cancel it."


@dataclasses.dataclass
class SelectionState:
    """What the module panel shows for a selection: missing line, button texts and whether they run."""

    present: list
    missing: list
    missing_text: str
    synthesize_enabled: bool
    synthesize_text: str
    synthesize_tooltip: str
    validate_enabled: bool
    validate_tooltip: str


def selection_state(selected: Mapping[Sequence, Any], model_problem: str = "", busy: bool = False
                    ) -> SelectionState:
    """Decide labels, tooltips and enabled states; a disabled button's tooltip says why.

    ``model_problem``: empty when a model is available, otherwise the reason it is not.
    """
    present = [s for s in SEQUENCES if selected.get(s) is not None]
    missing = [s for s in SEQUENCES if selected.get(s) is None]
    if not present:
        missing_text = "No input volume selected."
    elif not missing:
        missing_text = "All four sequences are present."
    else:
        missing_text = "Missing: " + ", ".join(s.display_name for s in missing)
    names = " + ".join(s.short_name for s in missing)
    synthesize_text = f"Synthesize {names}" if present and missing else "Synthesize missing"
    reason = ""
    if busy:
        reason = _BUSY_REASON
    elif not present:
        reason = "Select at least one input volume (T1, T1c, T2 or FLAIR)."
    elif not missing:
        reason = "Nothing is missing: all four sequences are selected. Use Validate on this case."
    elif model_problem:
        reason = model_problem
    plan = (f"Synthesize {', '.join(s.display_name for s in missing)} "
            f"from {', '.join(s.display_name for s in present)}.")
    synthesize_tooltip = reason or plan
    validate_reason = ""
    if busy:
        validate_reason = _BUSY_REASON
    elif missing:
        validate_reason = "Validation needs all four sequences (each is synthesised from the other three)."
    elif model_problem:
        validate_reason = model_problem
    validate_tooltip = validate_reason or (
        "Leave-one-out: synthesise each sequence from the other three and compare with the acquired one.")
    return SelectionState(
        present=present, missing=missing, missing_text=missing_text,
        synthesize_enabled=not reason, synthesize_text=synthesize_text, synthesize_tooltip=synthesize_tooltip,
        validate_enabled=not validate_reason, validate_tooltip=validate_tooltip,
    )
