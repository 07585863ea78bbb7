"""Background jobs: a thread, progress and log lines through a queue, cancellation, errors."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.core import io, jobs
from MRISynthesisLib.core.bundles import ModelBundle
from MRISynthesisLib.core.progress import Cancelled, check_cancel
from MRISynthesisLib.core.pipeline import SynthesisResult, TargetResult
from MRISynthesisLib.sequences import SEQUENCES, Sequence

WAIT_S = 10.0  # generous upper bound for a job to finish; never a timing assertion


def smooth_slices(image: sitk.Image):
    """A job function doing real work slice by slice, reporting each slice."""

    def run(context: jobs.JobContext) -> np.ndarray:
        array = sitk.GetArrayFromImage(image)
        out = np.empty_like(array)
        context.log(f"smoothing {array.shape[0]} slices")
        for index in range(array.shape[0]):
            context.check_cancel()
            out[index] = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(array[index]), 1.0))
            context.progress((index + 1) / array.shape[0], f"slice {index + 1}/{array.shape[0]}")
        return out

    return run


def wait_until(predicate, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_job_runs_in_a_thread_and_reports_progress_and_log(make_volume):
    image = make_volume(size=(16, 12, 6))
    caller = threading.get_ident()
    seen_threads = []

    def run(context):
        seen_threads.append(threading.get_ident())
        return smooth_slices(image)(context)

    job = jobs.Job(run, name="smooth").start()
    assert job.wait(WAIT_S) and job.state is jobs.JobState.SUCCEEDED
    events = job.poll()

    expected = np.stack([sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(a), 1.0)) for a in sitk.GetArrayFromImage(image)])
    np.testing.assert_array_equal(job.result, expected)
    assert seen_threads and seen_threads[0] != caller
    fractions = [e.fraction for e in events if e.kind == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 6
    logs = [e.message for e in events if e.kind == "log"]
    assert logs == ["smoothing 6 slices", "slice 1/6"]  # a new phase is logged once, not every slice
    assert job.fraction == 1.0 and job.message == "slice 6/6" and job.error is None
    assert job.poll() == []  # the queue was drained


def test_events_can_be_polled_while_the_job_runs():
    release = threading.Event()

    def run(context):
        context.progress(0.25, "first half")
        release.wait(WAIT_S)
        context.progress(0.75, "second half")
        return "done"

    job = jobs.Job(run).start()
    wait_until(lambda: job.poll() is not None and job.fraction == 0.25)  # poll() updates job.fraction
    assert job.state is jobs.JobState.RUNNING and not job.done and job.message == "first half"
    release.set()
    assert job.wait(WAIT_S)
    assert [e.fraction for e in job.poll() if e.kind == "progress"] == [0.75]
    assert job.result == "done"


def test_cancel_stops_the_job_and_keeps_no_result(make_volume):
    started, polls = threading.Event(), []

    def run(context):
        started.set()
        while not context.cancelled:
            polls.append(1)
            time.sleep(0.002)
        return "a result that must be dropped"

    job = jobs.Job(run).start()
    assert started.wait(WAIT_S)
    job.cancel()
    assert job.wait(WAIT_S)
    assert job.state is jobs.JobState.CANCELLED and job.result is None and job.error is None
    assert "cancelled" in [e.message for e in job.poll() if e.kind == "log"]
    count = len(polls)
    time.sleep(0.05)
    assert len(polls) == count  # the function really stopped


def test_cancel_through_the_engines_exception_is_not_an_error():
    """The pipeline raises its own ``Cancelled`` when the event is set; that is a cancellation."""
    started = threading.Event()

    def run(context):
        started.set()
        while True:
            check_cancel(context.cancel_event)
            time.sleep(0.002)

    job = jobs.Job(run).start()
    assert started.wait(WAIT_S)
    job.cancel()
    assert job.wait(WAIT_S)
    assert job.state is jobs.JobState.CANCELLED and job.error is None
    assert issubclass(Cancelled, Exception)


def test_cancel_before_start_means_it_never_runs():
    ran = []
    job = jobs.Job(lambda context: ran.append(1))
    job.cancel()
    assert job.state is jobs.JobState.CANCELLED and job.done
    assert job.start() is job, "starting a cancelled job is allowed and runs nothing"
    assert job.wait(1) and ran == [] and job.state is jobs.JobState.CANCELLED
    started = jobs.Job(lambda context: None).start()
    with pytest.raises(RuntimeError, match="already started"):
        started.start()


def test_an_exception_becomes_an_error_with_a_one_line_reason_and_details(tmp_path):
    missing = tmp_path / "missing-t1n.nii.gz"

    job = jobs.Job(lambda context: io.read_image(missing)).start()

    assert job.wait(WAIT_S)
    assert job.state is jobs.JobState.FAILED and job.result is None
    assert job.error.reason == f"{missing}: no such file or folder"
    assert "Traceback" in job.error.details and "read_image" in job.error.details
    assert f"failed: {missing}: no such file or folder" in [e.message for e in job.poll()]


def test_reason_is_the_first_line_or_the_class_name():
    assert jobs.one_line_reason(ValueError("bad  input\n\nmore detail")) == "bad input"
    assert jobs.one_line_reason(MemoryError()) == "MemoryError"


def test_a_job_starts_once():
    job = jobs.Job(lambda context: 1).start()
    job.wait(WAIT_S)
    with pytest.raises(RuntimeError, match="already started"):
        job.start()


# --------------------------------------------------------------------------- synthesis tasks


def mean_of_inputs(images, bundle, targets=None, device="auto", progress=None, cancel=None, tumour_maps=True,
                   ground_truth=None, metrics_protocol="brain"):
    """A small function with ``pipeline.synthesize``'s signature and result: each target is the inputs' mean."""
    inputs = [Sequence(k) for k in images]
    wanted = [Sequence(t) for t in targets] if targets else [s for s in SEQUENCES if s not in inputs]
    reference = images[inputs[0]]
    mean = sitk.Cast(sum(sitk.Cast(images[s], sitk.sitkFloat32) for s in inputs) / len(inputs), sitk.sitkFloat32)
    out = {}
    for index, target in enumerate(wanted):
        check_cancel(cancel)
        progress(index / len(wanted), f"target {target.value}")
        error = None
        if ground_truth and target in ground_truth:
            error = sitk.Abs(mean - sitk.Cast(ground_truth[target], sitk.sitkFloat32))
        out[target] = TargetResult(sequence=target, synthetic=mean, stage1=mean, error_map=error,
                                   metrics={"mae": float(sitk.GetArrayViewFromImage(error).mean())} if error else {})
    progress(1.0, "done")
    return SynthesisResult(targets=out, inputs=inputs, model_name=bundle.name, device=device,
                           timings={}, messages=[f"grid {reference.GetSize()}"])


#: A bundle without networks: ``mean_of_inputs`` needs none.
MEAN_BUNDLE = ModelBundle(name="mean of inputs", stage1=None)


@pytest.fixture
def four_images(make_volume):
    return {sequence: make_volume(seed=index) for index, sequence in enumerate(SEQUENCES)}


def test_synthesis_task_runs_the_synthesis_with_the_jobs_progress_and_cancel(four_images):
    images = {s: four_images[s] for s in (Sequence.T1N, Sequence.T2F)}
    job = jobs.Job(jobs.synthesis_task(images, MEAN_BUNDLE, device="cpu", synthesize=mean_of_inputs)).start()

    assert job.wait(WAIT_S) and job.state is jobs.JobState.SUCCEEDED
    result = job.result
    assert list(result.targets) == [Sequence.T1C, Sequence.T2W] and result.device == "cpu"
    assert result.model_name == "mean of inputs"
    expected = (sitk.GetArrayFromImage(images[Sequence.T1N]) + sitk.GetArrayFromImage(images[Sequence.T2F])) / 2
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.targets[Sequence.T2W].synthetic), expected)
    assert [e.message for e in job.poll() if e.kind == "log"] == ["target t1c", "target t2w", "done"]


def test_validation_task_synthesises_each_sequence_from_the_other_three(four_images):
    job = jobs.Job(jobs.validation_task(four_images, MEAN_BUNDLE, synthesize=mean_of_inputs)).start()

    assert job.wait(WAIT_S) and job.state is jobs.JobState.SUCCEEDED
    results = job.result
    assert [list(r.targets) for r in results] == [[s] for s in SEQUENCES]
    for result, target in zip(results, SEQUENCES):
        assert result.inputs == [s for s in SEQUENCES if s is not target]
        others = [sitk.GetArrayFromImage(four_images[s]).astype(np.float32) for s in result.inputs]
        expected_error = np.abs(np.mean(others, axis=0) - sitk.GetArrayFromImage(four_images[target]))
        np.testing.assert_allclose(sitk.GetArrayFromImage(result.targets[target].error_map), expected_error,
                                   rtol=1e-5)
    fractions = [e.fraction for e in job.poll() if e.kind == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_validation_needs_all_four_sequences(four_images):
    three = {s: four_images[s] for s in (Sequence.T1N, Sequence.T1C, Sequence.T2W)}
    with pytest.raises(ValueError, match="validation needs all four sequences; missing: T2-FLAIR"):
        jobs.validation_task(three, MEAN_BUNDLE, synthesize=mean_of_inputs)


def test_cancelled_validation_returns_nothing(four_images):
    def slow_mean(images, bundle, **options):
        options["cancel"].wait(WAIT_S)
        return mean_of_inputs(images, bundle, **options)

    job = jobs.Job(jobs.validation_task(four_images, MEAN_BUNDLE, synthesize=slow_mean)).start()
    job.cancel()
    assert job.wait(WAIT_S)
    assert job.state is jobs.JobState.CANCELLED and job.result is None


def test_a_part_of_a_job_moves_one_bar_forward():
    context = jobs.JobContext()
    context.part(0.0, 0.2).progress(1.0, "prepared")
    second = context.part(0.2, 1.0)
    second.progress(0.0, "stage 1")
    second.progress(0.5, "stage 1")
    second.part(0.5, 1.0).progress(1.0, "done")
    fractions = []
    while not context.events.empty():
        event = context.events.get()
        if event.kind == "progress":
            fractions.append(round(event.fraction, 6))
    assert fractions == [0.2, 0.2, 0.6, 1.0]
    assert second.cancel_event is context.cancel_event
