"""The request file and the event lines between the Slicer module and its worker process, on real files."""
from __future__ import annotations

import json

import pytest

from MRISynthesisLib.sequences import Sequence
from MRISynthesisLib.worker.protocol import (
    PROTOCOL_VERSION,
    RequestError,
    WorkerRequest,
    event_line,
    parse_event_line,
    read_request,
    write_request,
)


def good_request() -> dict:
    return {"version": PROTOCOL_VERSION, "kind": "synthesis", "inputs": {"t1n": "input-t1n.nrrd", "FLAIR": "f.nrrd"},
            "model": "demo", "device": "cpu", "tumour_maps": False, "targets": ["T1c"], "cpu_threads": 3,
            "results_folder": "results"}


def test_a_written_request_reads_back_field_for_field(tmp_path):
    request = WorkerRequest(kind="validation", inputs={Sequence.T2W: "b.nrrd", Sequence.T1N: "a.nrrd"},
                            model="/models/x", device="mps", tumour_maps=False, targets=None, cpu_threads=2)
    loaded = read_request(write_request(request, tmp_path / "request.json"))
    assert loaded.kind == "validation" and loaded.model == "/models/x" and loaded.device == "mps"
    assert loaded.inputs == {Sequence.T1N: tmp_path / "a.nrrd", Sequence.T2W: tmp_path / "b.nrrd"}
    assert (loaded.tumour_maps, loaded.targets, loaded.cpu_threads) == (False, None, 2)


def test_names_and_aliases_are_read_as_sequences(tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(good_request()))
    request = read_request(path)
    assert list(request.inputs) == [Sequence.T1N, Sequence.T2F] and request.targets == [Sequence.T1C]


@pytest.mark.parametrize("field, value, message", [
    ("version", 99, "field 'version' is 99"),
    ("kind", "train", "field 'kind' is 'train'"),
    ("inputs", [], "field 'inputs' must map"),
    ("inputs", {"t1n": "../outside.nrrd"}, "field 'inputs.t1n' must be a file name inside"),
    ("inputs", {"t1n": "/etc/passwd"}, "field 'inputs.t1n' must be a file name inside"),
    ("inputs", {"pd": "a.nrrd"}, "field 'inputs' names an unknown sequence"),
    ("inputs", {"t1n": "a.nrrd", "T1": "b.nrrd"}, "field 'inputs' gives T1 twice"),
    ("model", "", "field 'model' must be"),
    ("device", 3, "field 'device' must be"),
    ("tumour_maps", "yes", "field 'tumour_maps' must be true or false"),
    ("targets", "t1c", "field 'targets' must be a non-empty list"),
    ("targets", ["pd"], "field 'targets' holds an unknown sequence"),
    ("cpu_threads", 0, "field 'cpu_threads' must be a whole number from 1 to"),
    ("cpu_threads", True, "field 'cpu_threads' must be a whole number from 1 to"),
    ("results_folder", "../elsewhere", "field 'results_folder' must be a plain folder name"),
])
def test_a_bad_field_is_one_line_naming_file_and_field(tmp_path, field, value, message):
    data = good_request()
    data[field] = value
    path = tmp_path / "request.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RequestError) as error:
        read_request(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [("{not json", "not a JSON request"), ("[1, 2]", "a request is a JSON object")])
def test_a_file_that_is_no_request_is_refused(tmp_path, text, message):
    path = tmp_path / "request.json"
    path.write_text(text)
    with pytest.raises(RequestError, match=message):
        read_request(path)
    with pytest.raises(RequestError, match="cannot read the request"):
        read_request(tmp_path / "missing.json")


def test_event_lines_round_trip_and_stray_lines_are_not_events():
    assert parse_event_line(event_line("progress", fraction=0.25, message="stage 1: 3/9")) == {
        "mrisynth": PROTOCOL_VERSION, "event": "progress", "fraction": 0.25, "message": "stage 1: 3/9"}
    assert parse_event_line(event_line("progress", fraction=7, message="x"))["fraction"] == 1.0
    assert parse_event_line(event_line("failed", reason="r", details="d"))["reason"] == "r"
    for stray in ("", "Warning: something", '{"event": "log", "message": "no mark"}', "{broken",
                  event_line("progress", fraction=float("nan"), message="x"),
                  event_line("log", message="x").replace('"message": "x"', '"message": 3'),
                  json.dumps({"mrisynth": PROTOCOL_VERSION, "event": "result"})):
        assert parse_event_line(stray) is None, stray
    with pytest.raises(ValueError, match="unknown event kind"):
        event_line("explode")


@pytest.mark.parametrize("field, value", [("version", True), ("version", 1.0), ("cpu_threads", 10**30),
                                          ("results_folder", "request.json"), ("results_folder", "input-t1n.nrrd"),
                                          ("results_folder", "a\nb")])
def test_values_that_look_right_but_are_not_are_refused(tmp_path, field, value):
    data = good_request()
    data[field] = value
    path = tmp_path / "request.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RequestError, match=f"field '{field}'"):
        read_request(path)


def test_a_deeply_nested_request_is_one_line_not_a_crash(tmp_path):
    path = tmp_path / "request.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RequestError, match="not a JSON request"):
        read_request(path)
