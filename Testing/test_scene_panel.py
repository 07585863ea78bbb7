"""The module panel: the engine decides (``scene.panel``: present/missing sequences, a reason code per button),
the widget words it through ``_()`` so that Slicer's translation tooling finds every sentence.

The widget's wording is checked on ``MRISynthesis.py`` itself: parsed with ``ast`` and, for the text helpers,
compiled with an untranslated ``_`` (no Slicer application or Qt needed).
"""
from __future__ import annotations

import ast
import dataclasses
import textwrap
from pathlib import Path

import pytest

from MRISynthesisLib.scene.panel import PanelReason, SelectionState, selection_state
from MRISynthesisLib.sequences import SEQUENCES, Sequence

MODULE_FILE = Path(__file__).resolve().parents[1] / "MRISynthesis" / "MRISynthesis.py"

#: Widget methods that word the engine's panel state and assignment notes.
WORDING_METHODS = ("reasonText", "missingText", "synthesizeText", "synthesizeToolTip", "validateToolTip",
                   "assignmentNoteText")

NODE = object()
NO_INPUT = dict.fromkeys(SEQUENCES)
ALL_FOUR = dict.fromkeys(SEQUENCES, NODE)
T1C_MISSING = {Sequence.T1N: NODE, Sequence.T1C: None, Sequence.T2W: NODE, Sequence.T2F: NODE}
TWO_MISSING = {Sequence.T1N: NODE, Sequence.T1C: None, Sequence.T2W: None, Sequence.T2F: NODE}


# --------------------------------------------------------------------------- the engine decides


@pytest.mark.parametrize("selected, has_model, busy, synthesize, validate", [
    (NO_INPUT, True, False, PanelReason.NO_INPUT, PanelReason.NEEDS_ALL_FOUR),
    (T1C_MISSING, True, False, PanelReason.NONE, PanelReason.NEEDS_ALL_FOUR),
    (ALL_FOUR, True, False, PanelReason.NOTHING_MISSING, PanelReason.NONE),
    # no model: only when nothing else stops the button
    (T1C_MISSING, False, False, PanelReason.NO_MODEL, PanelReason.NEEDS_ALL_FOUR),
    (ALL_FOUR, False, False, PanelReason.NOTHING_MISSING, PanelReason.NO_MODEL),
    (NO_INPUT, False, False, PanelReason.NO_INPUT, PanelReason.NEEDS_ALL_FOUR),
    # a running job wins over everything
    (T1C_MISSING, True, True, PanelReason.BUSY, PanelReason.BUSY),
    (ALL_FOUR, True, True, PanelReason.BUSY, PanelReason.BUSY),
    (NO_INPUT, False, True, PanelReason.BUSY, PanelReason.BUSY),
], ids=["no-input", "t1c-missing", "all-four", "no-model", "all-four-no-model", "no-input-no-model",
        "busy", "busy-all-four", "busy-no-input-no-model"])
def test_selection_state_reason_codes(selected, has_model, busy, synthesize, validate):
    state = selection_state(selected, has_model=has_model, busy=busy)

    assert (state.synthesize_reason, state.validate_reason) == (synthesize, validate)
    assert state.synthesize_enabled == (synthesize is PanelReason.NONE)
    assert state.validate_enabled == (validate is PanelReason.NONE)


def test_selection_state_lists_present_and_missing_in_sequence_order():
    state = selection_state({Sequence.T2F: NODE, Sequence.T1N: NODE})  # absent keys count as empty slots

    assert state.present == [Sequence.T1N, Sequence.T2F]
    assert state.missing == [Sequence.T1C, Sequence.T2W]


def test_selection_state_holds_no_user_text():
    state = selection_state(T1C_MISSING)
    fields = {field.name for field in dataclasses.fields(SelectionState)}

    assert fields == {"present", "missing", "synthesize_reason", "validate_reason"}
    assert all(isinstance(value, PanelReason) for value in (state.synthesize_reason, state.validate_reason))
    assert all(isinstance(s, Sequence) for s in state.present + state.missing)


# --------------------------------------------------------------------------- the widget words it


def widget_method(name: str) -> ast.FunctionDef:
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    widget = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "MRISynthesisWidget")
    return next(node for node in widget.body if isinstance(node, ast.FunctionDef) and node.name == name)


def is_translated_literal(node: ast.AST) -> bool:
    """``_("...")``: a call the translation tooling extracts."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"
            and len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))


def test_every_reason_code_has_a_translated_text_in_the_widget():
    texts = next(node for node in ast.walk(widget_method("reasonText")) if isinstance(node, ast.Dict))

    assert [key.value for key in texts.keys] == [r.name for r in PanelReason if r is not PanelReason.NONE]
    assert all(is_translated_literal(value) for value in texts.values)


def test_the_widget_words_every_text_through_translated_literals():
    for name in WORDING_METHODS:
        calls = [node for node in ast.walk(widget_method(name))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"]
        assert calls and all(is_translated_literal(call) for call in calls), name


def test_update_gui_takes_no_ready_made_text_from_the_engine():
    attributes = {node.attr for node in ast.walk(widget_method("updateGUI")) if isinstance(node, ast.Attribute)}

    assert not {name for name in attributes if name.endswith(("_text", "_tooltip"))}
    assert set(WORDING_METHODS) - {"reasonText"} <= attributes  # the texts come from the widget's helpers


@pytest.fixture(scope="module")
def wording():
    """The widget's text helpers compiled from ``MRISynthesis.py`` with an untranslated ``_``."""
    source = "class Wording:\n" + "\n".join(
        textwrap.indent(ast.unparse(widget_method(name)), "    ") for name in WORDING_METHODS)
    namespace = {"_": lambda text: text}
    exec(compile(source, str(MODULE_FILE), "exec"), namespace)
    return namespace["Wording"]()


def test_widget_words_a_selection_with_one_sequence_missing(wording):
    state = selection_state(T1C_MISSING)

    assert wording.missingText(state) == "Missing: T1 contrast-enhanced"
    assert wording.synthesizeText(state) == "Synthesize T1c"
    assert wording.synthesizeToolTip(state) == "Synthesize T1 contrast-enhanced from T1, T2, T2-FLAIR."
    assert wording.validateToolTip(state) == (
        "Validation needs all four sequences (each is synthesised from the other three).")
    assert wording.synthesizeText(selection_state(TWO_MISSING)) == "Synthesize T1c + T2"


def test_widget_words_empty_full_and_blocked_selections(wording):
    none = selection_state(NO_INPUT)
    assert wording.missingText(none) == "No input volume selected."
    assert wording.synthesizeText(none) == "Synthesize missing"
    assert wording.synthesizeToolTip(none) == "Select at least one input volume (T1, T1c, T2 or FLAIR)."

    full = selection_state(ALL_FOUR)
    assert wording.missingText(full) == "All four sequences are present."
    assert wording.synthesizeText(full) == "Synthesize missing"
    assert wording.validateToolTip(full).startswith("Leave-one-out:")

    no_model = selection_state(T1C_MISSING, has_model=False)
    assert wording.synthesizeToolTip(no_model) == "No model: install a model bundle or use 'Load model from file...'."
    busy = selection_state(ALL_FOUR, busy=True)
    assert wording.synthesizeToolTip(busy) == wording.validateToolTip(busy) == (
        "A synthesis is running; wait for it or cancel it.")


def test_widget_words_an_assignment_note(wording):
    assignment = pytest.importorskip("MRISynthesisLib.scene.assignment", reason="needs slicer-core")
    note = assignment.AssignmentNote(Sequence.T2W, ("T2 a", "T2 b"))

    assert wording.assignmentNoteText(note) == "2 volumes look like T2 (T2 a, T2 b): choose one"
