"""Leave-one-out validation in the scene: the metrics table node (one row per sequence, one column per metric)
and :func:`add_validation_nodes`, which puts every result and the table in one folder.

The table's columns are those of the scoring protocol the validation ran with (``brain`` or ``brasyn``,
:mod:`MRISynthesisLib.metrics.protocols`); the protocol, and for BraSyn the torchmetrics release, are kept
as attributes of the table node so that a saved scene says which numbers it holds."""
from __future__ import annotations

from typing import Any, Iterable

import vtk

from .. import __version__
from ..core.python_packages import installed_version
from ..metrics import METRIC_TITLES
from ..metrics.protocols import protocol_of_metrics
from ..sequences import SEQUENCES, Sequence
from .inputs import SelectedInputs
from .nodes import ATTRIBUTE_PREFIX, check_scene, one_line
from .results import (
    NO_RESULT_MESSAGE,
    ResultNodes,
    add_result_nodes,
    check_result,
    check_selected_inputs,
    create_result_folder,
    input_presence,
    place_in_folder,
)

__all__ = ["VALIDATION_TABLE_ROLE", "PROTOCOL_ATTRIBUTE", "TORCHMETRICS_ATTRIBUTE", "metrics_rows",
           "metrics_table_node", "add_validation_nodes"]

#: ``MRISynthesis.Role`` of the metrics table node.
VALIDATION_TABLE_ROLE = "validation table"
#: Attribute of the table node naming the scoring protocol of its numbers (``brain`` or ``brasyn``).
PROTOCOL_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}.MetricsProtocol"
#: Attribute with the torchmetrics release that computed BraSyn numbers (absent for the brain protocol).
TORCHMETRICS_ATTRIBUTE = f"{ATTRIBUTE_PREFIX}.TorchmetricsVersion"


def metrics_rows(results: Iterable[Any]) -> tuple[list[str], list[tuple[Sequence, list[float]]]]:
    """Metric keys (first-seen order) and one row of values per target over several results."""
    keys: list[str] = []
    rows: list[tuple[Sequence, dict]] = []
    for result in results:
        for key, target in result.targets.items():
            metrics = dict(target.metrics or {})
            keys.extend(k for k in metrics if k not in keys)
            rows.append((Sequence(key), metrics))
    rows.sort(key=lambda row: SEQUENCES.index(row[0]))
    return keys, [(sequence, [float(m.get(k, float("nan"))) for k in keys]) for sequence, m in rows]


def metrics_table_node(scene: Any, results: Iterable[Any], name: str = "MRISynthesis validation") -> Any:
    """A table node: one row per synthesised sequence, one column per metric (titled by ``METRIC_TITLES``), with
    the scoring protocol (read from the metric keys) and, for BraSyn, the torchmetrics release as attributes."""
    keys, rows = metrics_rows(results)
    protocol = protocol_of_metrics(keys)
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = table_node.GetTable()
    names = vtk.vtkStringArray()
    names.SetName("Sequence")
    for sequence, _ in rows:
        names.InsertNextValue(sequence.display_name)
    table.AddColumn(names)
    for index, key in enumerate(keys):
        column = vtk.vtkDoubleArray()
        column.SetName(METRIC_TITLES.get(key, key))
        for _, values in rows:
            column.InsertNextValue(values[index])
        table.AddColumn(column)
    table_node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Role", VALIDATION_TABLE_ROLE)
    table_node.SetAttribute(f"{ATTRIBUTE_PREFIX}.Version", __version__)
    if protocol is not None:
        table_node.SetAttribute(PROTOCOL_ATTRIBUTE, protocol)
    if protocol == "brasyn":  # the worker that computed them runs this same Python environment
        table_node.SetAttribute(TORCHMETRICS_ATTRIBUTE, installed_version("torchmetrics") or "unknown")
    table_node.Modified()
    return table_node


def _validation_results(results: Any) -> list:
    """The results of a validation job as a non-empty list, each checked by ``check_result``."""
    if results is None:
        raise ValueError(NO_RESULT_MESSAGE)
    if hasattr(results, "targets"):
        raise TypeError("expected the list of validation results (one SynthesisResult per sequence), got one "
                        f"{type(results).__name__}; a single synthesis result goes to add_result_nodes")
    results = list(results)
    if not results:
        raise ValueError(NO_RESULT_MESSAGE)
    for result in results:
        check_result(result)
    return results


def add_validation_nodes(scene: Any, results: Iterable[Any], selected_inputs: SelectedInputs) -> ResultNodes:
    """Leave-one-out results (one SynthesisResult per sequence) as nodes and a metrics table, in one folder.

    Inputs removed from the scene while the job ran are handled as in
    :func:`~MRISynthesisLib.scene.results.add_result_nodes`; None or no results raise ValueError
    (a cancelled or failed job), a ``scene`` that is no MRML scene TypeError; nothing is added then.
    """
    check_scene(scene)
    results = _validation_results(results)
    check_selected_inputs(selected_inputs)
    presence = input_presence(scene, selected_inputs.nodes)
    base = one_line(selected_inputs.base_name)
    folder = create_result_folder(scene, presence.anchor(selected_inputs.reference), f"{base} validation")
    targets: dict = {}
    for result in results:
        targets.update(add_result_nodes(scene, result, selected_inputs, folder_item=folder).targets)
    table = metrics_table_node(scene, results, name=f"{base} validation metrics")
    place_in_folder(scene, table, folder)
    return ResultNodes(folder_item=folder, targets=targets, table=table, messages=presence.messages())
