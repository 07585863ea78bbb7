"""Synthesis in a real worker process: success, cancel, SIGKILL, a hung worker, corrupt input, missing model.

Every test starts the real worker (``python -m MRISynthesisLib.worker`` through
:class:`~MRISynthesisLib.worker.supervisor.ProcessJob`) on the small phantom with the bundled
demo model, and checks the job's final state, its one-line reason, that the private folder
is gone and that the worker's process group has ended.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.core.jobs import JobState
from MRISynthesisLib.core.pipeline import synthesize
from MRISynthesisLib.phantom import generate_case
from MRISynthesisLib.sequences import Sequence
from MRISynthesisLib.worker.protocol import WorkerRequest, parse_event_line, write_request
from MRISynthesisLib.worker.run import EXIT_FAILED, EXIT_OK
from MRISynthesisLib.worker.supervisor import ProcessJob, ended_reason, worker_command
from MRISynthesisLib.worker.transfer import IMAGE_ROLES, load_results, save_results, write_input_images

pytestmark = pytest.mark.skipif(os.name == "nt", reason="process-group checks are POSIX here")

ACQUIRED = (Sequence.T1N, Sequence.T2W, Sequence.T2F)
#: Longest a cancelled worker may take to be gone (the issue's promise to the user).
CANCEL_LIMIT_S = 2.0


@pytest.fixture(scope="module")
def phantom_inputs() -> dict:
    case = generate_case(0, small=True)
    return {s: case.images[s] for s in ACQUIRED}


@pytest.fixture(scope="module")
def in_process_result(phantom_inputs):
    return synthesize(phantom_inputs, "demo", device="cpu")


def run_until(job: ProcessJob, text: str, timeout: float = 120.0) -> list:
    """Poll ``job`` until a log line containing ``text`` arrived; returns the log lines and the job folder."""
    lines, folders = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job.folder is not None:
            folders.add(job.folder)
        lines += [e.message for e in job.poll() if e.kind == "log"]
        if any(text in line for line in lines):
            return lines, folders
        assert not job.done, f"job ended ({job.state.value}) before {text!r}: {lines}; {job.error}"
        time.sleep(0.02)
    raise AssertionError(f"no log line with {text!r} within {timeout} s: {lines}")


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_cleaned_up(job: ProcessJob, folders: set) -> None:
    assert folders, "the job never had a private folder"
    for folder in folders:
        assert not Path(folder).exists(), f"{folder} was left behind"
    assert job.process is not None
    deadline = time.monotonic() + 12.0  # a worker that delivered may end in its own time (a thread reaps it)
    while job.process.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.process.returncode is not None, "the worker was not reaped"
    assert not group_alive(job.process.pid), "the worker's process group is still alive"


def arrays(images: dict) -> dict:
    return {s: sitk.GetArrayFromImage(image).copy() for s, image in images.items()}


def test_process_path_gives_the_in_process_result_and_leaves_nothing(phantom_inputs, in_process_result):
    before = arrays(phantom_inputs)
    job = ProcessJob(phantom_inputs, "demo", device="cpu", cpu_threads=1).start()
    lines, folders = run_until(job, "reading 3 input volume(s)")
    assert all(oct(Path(f).stat().st_mode & 0o777) == oct(0o700) for f in folders if Path(f).exists())
    assert job.wait(180)
    assert job.state is JobState.SUCCEEDED, job.error
    lines += [e.message for e in job.poll() if e.kind == "log"]
    assert "worker used 1 CPU thread(s)" in lines, "the request's CPU thread cap reaches torch in the worker"
    result = job.take_result()
    assert job.take_result() is None, "a result is handed over once"
    assert_cleaned_up(job, folders)
    assert job.process.returncode == EXIT_OK, "the worker ended by itself"
    for sequence, image in phantom_inputs.items():
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), before[sequence])
    assert list(result.targets) == [Sequence.T1C] and result.inputs == list(ACQUIRED)
    assert result.model_name == in_process_result.model_name and result.device == "cpu"
    for role in IMAGE_ROLES:
        expected = getattr(in_process_result.targets[Sequence.T1C], role)
        actual = getattr(result.targets[Sequence.T1C], role)
        assert (actual is None) == (expected is None), role
        if expected is None:
            continue
        assert actual.GetSize() == expected.GetSize() and actual.GetPixelID() == expected.GetPixelID(), role
        assert actual.GetSpacing() == expected.GetSpacing() and actual.GetOrigin() == expected.GetOrigin(), role
        assert actual.GetDirection() == expected.GetDirection(), role
        reference = sitk.GetArrayViewFromImage(in_process_result.targets[Sequence.T1C].synthetic)
        tolerance = 1e-5 * float(reference.max() - reference.min())
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(actual), sitk.GetArrayViewFromImage(expected),
                                   rtol=0, atol=tolerance, err_msg=role)


@pytest.mark.parametrize("moment", ["starting the synthesis process", "loading model", "stage 1"])
def test_cancel_ends_the_worker_tree_within_two_seconds(phantom_inputs, moment):
    job = ProcessJob(phantom_inputs, "demo", device="cpu").start()
    _, folders = run_until(job, moment)
    started = time.monotonic()
    job.cancel()
    assert job.wait(CANCEL_LIMIT_S + 1.0)
    elapsed = time.monotonic() - started
    assert elapsed < CANCEL_LIMIT_S, f"cancel took {elapsed:.2f} s"
    assert job.state is JobState.CANCELLED and job.take_result() is None and job.error is None
    assert_cleaned_up(job, folders)


def test_a_killed_worker_fails_the_job_with_one_line_and_its_last_log_lines(phantom_inputs):
    job = ProcessJob(phantom_inputs, "demo", device="cpu").start()
    lines, folders = run_until(job, "stage 1")
    os.kill(job.process.pid, signal.SIGKILL)
    assert job.wait(30)
    assert job.state is JobState.FAILED and job.take_result() is None
    assert job.error.reason == ("the synthesis process ended unexpectedly (signal 9, SIGKILL; out of memory, or "
                                "killed by another program); the log has its last lines")
    assert "\n" not in job.error.reason and job.error.details
    assert_cleaned_up(job, folders)


def test_a_silent_worker_is_stopped_and_reported(phantom_inputs):
    job = ProcessJob(phantom_inputs, "demo", device="cpu").start()
    _, folders = run_until(job, "stage 1")
    job.silence_limit_s = 1.0  # from here on: torch's import and model loading are past
    os.kill(job.process.pid, signal.SIGSTOP)  # a real hang: the process runs no more and says nothing
    assert job.wait(10)
    assert job.state is JobState.FAILED
    assert job.error.reason == ("the synthesis process gave no sign of life for 1 s and was stopped; the log has "
                                "its last lines")
    assert_cleaned_up(job, folders)


def test_missing_model_fails_with_the_engine_reason(phantom_inputs):
    job = ProcessJob(phantom_inputs, "no-such-model", device="cpu").start()
    assert job.wait(120)
    assert job.state is JobState.FAILED
    assert "no-such-model" in job.error.reason and "\n" not in job.error.reason
    assert "Traceback" in job.error.details, "the worker's traceback is the failure's details"
    assert job.process.returncode == EXIT_FAILED
    assert job.folder is None


def test_an_input_the_engine_refuses_fails_the_job_by_name(phantom_inputs):
    flat = sitk.Image(phantom_inputs[Sequence.T2W])
    flat = sitk.Cast(flat * 0 + 7.0, flat.GetPixelID())
    job = ProcessJob({**phantom_inputs, Sequence.T2W: flat}, "demo", device="cpu").start()
    assert job.wait(120)
    assert job.state is JobState.FAILED
    assert job.error.reason.endswith("input-t2w.nrrd: constant volume (every voxel is 7)"), job.error.reason


def test_worker_refuses_a_corrupt_input_file_with_one_line(tmp_path, phantom_inputs):
    names = write_input_images(phantom_inputs, tmp_path)
    corrupt = tmp_path / names[Sequence.T1N]
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # header kept, voxels cut off
    write_request(WorkerRequest(kind="synthesis", inputs=names, model="demo", device="cpu"), tmp_path / "r.json")
    done = subprocess.run(worker_command(tmp_path / "r.json", lifeline=False), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == EXIT_FAILED
    events = [parse_event_line(line) for line in done.stdout.splitlines()]
    assert all(events), f"stdout holds only protocol lines: {done.stdout!r}"
    failure = events[-1]
    assert failure["event"] == "failed" and str(corrupt) in failure["reason"], failure["reason"]
    assert done.stderr.strip().splitlines()[-1] == f"error: {failure['reason']}"
    assert not (tmp_path / "results").exists()


def test_worker_ends_when_the_starting_process_goes_away(tmp_path, phantom_inputs):
    names = write_input_images(phantom_inputs, tmp_path)
    write_request(WorkerRequest(kind="synthesis", inputs=names, model="demo", device="cpu"), tmp_path / "r.json")
    worker = subprocess.Popen(worker_command(tmp_path / "r.json"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    first = parse_event_line(worker.stdout.readline().decode())
    assert first is not None and first["event"] == "log"
    worker.stdin.close()  # what the supervisor's death looks like from the worker
    assert worker.wait(timeout=10) in (3, 4)
    assert not (tmp_path / "results").exists()


def test_validation_in_a_worker_gives_four_results_with_error_maps(phantom_inputs):
    case = generate_case(0, small=True)
    job = ProcessJob(case.images, "demo", kind="validation", device="cpu").start()
    assert job.wait(300)
    assert job.state is JobState.SUCCEEDED, job.error
    results = job.take_result()
    assert [list(r.targets) for r in results] == [[s] for s in Sequence]
    for result in results:
        target = next(iter(result.targets.values()))
        assert target.error_map is not None and np.isfinite(target.metrics["ssim"])


def test_results_survive_the_file_round_trip_exactly(tmp_path, in_process_result):
    in_process_result.targets[Sequence.T1C].metrics = {"ssim": float("nan"), "psnr": 21.5}
    save_results([in_process_result], tmp_path)
    (loaded,) = load_results(tmp_path)
    expected, actual = in_process_result.targets[Sequence.T1C], loaded.targets[Sequence.T1C]
    for role in IMAGE_ROLES:
        if getattr(expected, role) is None:
            assert getattr(actual, role) is None
            continue
        a, e = getattr(actual, role), getattr(expected, role)
        assert (a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (e.GetSpacing(), e.GetOrigin(), e.GetDirection())
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(e))
    assert np.isnan(actual.metrics["ssim"]) and actual.metrics["psnr"] == 21.5
    assert actual.sources == expected.sources and loaded.messages == in_process_result.messages
    in_process_result.targets[Sequence.T1C].metrics = {}


def test_a_damaged_results_manifest_is_one_line_naming_it(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"results": [{"targets": {"t1c": {"files": {}}}}]}))
    with pytest.raises(RuntimeError, match=r"results\.json: malformed results manifest"):
        load_results(tmp_path)


@pytest.mark.parametrize("returncode, expected", [
    (-11, "the synthesis process ended unexpectedly (signal 11, SIGSEGV); the log has its last lines"),
    (1, "the synthesis process ended unexpectedly (exit code 1); the log has its last lines"),
    (3221225477, "the synthesis process ended unexpectedly (exit code 0xC0000005); the log has its last lines"),
])
def test_how_an_unexpected_end_is_worded(returncode, expected):
    assert ended_reason(returncode) == expected


def test_worker_command_runs_this_interpreter_unless_told(tmp_path):
    assert worker_command(tmp_path / "r.json")[0] == sys.executable
    assert worker_command(tmp_path / "r.json", python="/opt/Slicer/bin/PythonSlicer")[0] == \
        "/opt/Slicer/bin/PythonSlicer"


def test_a_standby_worker_takes_the_next_job_and_a_new_one_waits_after_it(phantom_inputs, in_process_result):
    from MRISynthesisLib.worker import supervisor

    supervisor.prestart_worker(None, 1)
    try:
        waiting = supervisor._standby.process
        job = ProcessJob(phantom_inputs, "demo", device="cpu", cpu_threads=1, use_standby=True).start()
        lines, folders = run_until(job, f"handing the job to the waiting synthesis process ({waiting.pid})")
        assert job.wait(180) and job.state is JobState.SUCCEEDED, job.error
        assert job.process is waiting
        assert_cleaned_up(job, folders)
        assert waiting.returncode == EXIT_OK, "the standby ran the job, then ended by itself"
        synthetic = job.take_result().targets[Sequence.T1C].synthetic
        expected = in_process_result.targets[Sequence.T1C].synthetic
        assert synthetic.GetOrigin() == expected.GetOrigin() and synthetic.GetSize() == expected.GetSize()
        following = supervisor._standby
        assert following is not None and following.alive() and following.process is not waiting
        job = ProcessJob(phantom_inputs, "demo", device="cpu", cpu_threads=1, use_standby=True).start()
        _, folders = run_until(job, "reading 3 input volume(s)")
        started = time.monotonic()
        job.cancel()
        assert job.wait(CANCEL_LIMIT_S + 1.0) and time.monotonic() - started < CANCEL_LIMIT_S
        assert job.state is JobState.CANCELLED
        assert_cleaned_up(job, folders)
    finally:
        last = supervisor._standby
        supervisor.discard_standby()
    assert supervisor._standby is None and (last is None or not group_alive(last.process.pid))


def test_a_standby_worker_ends_when_its_starter_goes_away(tmp_path):
    worker = subprocess.Popen(worker_command(None), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    worker.stdin.close()
    assert worker.wait(timeout=60) == 4
    assert worker.stdout.read() == b"", "a standby worker says nothing until it has a job"


def test_results_are_read_only_from_regular_files_the_worker_names(tmp_path, in_process_result):
    save_results([in_process_result], tmp_path)
    manifest = json.loads((tmp_path / "results.json").read_text())
    name = manifest["results"][0]["targets"]["t1c"]["files"]["synthetic"]
    outside = tmp_path.parent / f"{tmp_path.name}-outside.nrrd"
    (tmp_path / name).replace(outside)
    (tmp_path / name).symlink_to(outside)  # a link to a file elsewhere is never followed
    with pytest.raises(RuntimeError, match="not a regular file"):
        load_results(tmp_path)
    (tmp_path / name).unlink()
    (tmp_path / name).write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                                  b"data file: /etc/hostname\n\n")
    with pytest.raises(RuntimeError, match="names a separate data file"):
        load_results(tmp_path)
    manifest["results"][0]["targets"]["t1c"]["files"]["synthetic"] = "../elsewhere.nrrd"
    (tmp_path / "results.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="bad image file entry"):
        load_results(tmp_path)
    (tmp_path / "results.json").unlink()
    os.mkfifo(tmp_path / "results.json")  # would block a reader forever
    with pytest.raises(RuntimeError, match="not a regular file"):
        load_results(tmp_path)
