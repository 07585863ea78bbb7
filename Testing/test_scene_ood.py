"""The out-of-distribution check in the Slicer module: reason codes from a synthesis in a real MRML scene
(``slicer-core``), carried through the worker's result files, and worded by the widget's own helper."""
from __future__ import annotations

import ast
import textwrap

import pytest

from scene_support import mrml_scene  # noqa: F401 (a fixture; importing it skips without slicer-core)

from MRISynthesisLib.core.pipeline import synthesize as engine_synthesize  # noqa: E402
from MRISynthesisLib.phantom.cases import generate_case  # noqa: E402
from MRISynthesisLib.scene.flow import add_case_nodes, synthesize_in_scene  # noqa: E402
from MRISynthesisLib.scene.panel import DistributionReason, distribution_notes  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402
from MRISynthesisLib.worker.transfer import load_results, save_results  # noqa: E402
from test_ood import HELD_OUT_SEED, inverted, stats_bundle, training_dir, with_statistics  # noqa: E402,F401 (fixtures)
from test_scene_panel import MODULE_FILE, widget_method  # noqa: E402


def synthesised_in_scene(scene, images, bundle) -> object:
    """Load ``images`` as nodes (T1c left out), run the module's flow with the real engine; the engine's result."""
    nodes = add_case_nodes(scene, images, "Phantom-ood")
    results = []

    def synthesize(*args, **kwargs):  # the real pipeline; the flow returns nodes, the result is kept here
        results.append(engine_synthesize(*args, **kwargs))
        return results[-1]

    selected = {s: nodes[s] for s in (Sequence.T1N, Sequence.T2W, Sequence.T2F)}
    synthesize_in_scene(scene, selected, bundle, device="cpu", tumour_maps=False, synthesize=synthesize, show=False)
    return results[0]


@pytest.fixture(scope="module")
def wording():
    """The widget's ``distributionNoteText`` compiled from ``MRISynthesis.py`` with an untranslated ``_``."""
    source = "class Wording:\n" + textwrap.indent(ast.unparse(widget_method("distributionNoteText")), "    ")
    namespace = {"_": lambda text: text}
    exec(compile(source, str(MODULE_FILE), "exec"), namespace)
    return namespace["Wording"]()


def test_scrambled_flair_in_a_scene_gives_flair_reason_codes(mrml_scene, stats_bundle, tmp_path, wording):
    images = dict(generate_case(HELD_OUT_SEED, grid="small").images)
    images[Sequence.T2F] = inverted(images[Sequence.T2F])
    result = synthesised_in_scene(mrml_scene.scene, images, str(stats_bundle))
    notes = distribution_notes(result)

    assert notes and {note.sequence for note in notes} == {Sequence.T2F}
    assert {note.reason for note in notes} <= {DistributionReason.INTENSITY, DistributionReason.INTENSITY_RELATION}
    save_results([result], tmp_path)  # the worker process hands results back through these files
    assert distribution_notes(load_results(tmp_path)[0]) == notes
    assert all(wording.distributionNoteText(note).startswith("T2-FLAIR") for note in notes)


def test_a_bundle_without_statistics_gives_one_not_checked_code(mrml_scene, wording, bundle_without_statistics):
    result = synthesised_in_scene(mrml_scene.scene, dict(generate_case(HELD_OUT_SEED, grid="small").images),
                                  str(bundle_without_statistics))
    notes = distribution_notes([result, result])  # a validation's four results say it once

    assert [note.reason for note in notes] == [DistributionReason.NOT_CHECKED]
    assert "not checked" in wording.distributionNoteText(notes[0])


def test_unreadable_statistics_get_their_own_code_and_wording(mrml_scene, wording, bundle_without_statistics,
                                                              tmp_path):
    folder = with_statistics(bundle_without_statistics, tmp_path / "newer-bundle", {"version": 99})
    result = synthesised_in_scene(mrml_scene.scene, dict(generate_case(HELD_OUT_SEED, grid="small").images),
                                  str(folder))
    save_results([result], tmp_path / "results")  # through the worker's result files, as in Slicer
    notes = distribution_notes(load_results(tmp_path / "results"))

    assert [note.reason for note in notes] == [DistributionReason.STATISTICS_UNREADABLE]
    assert "could not be read" in wording.distributionNoteText(notes[0])
