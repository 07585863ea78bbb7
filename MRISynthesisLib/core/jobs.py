"""Background jobs: run a long computation in a thread, report progress, cancel it. No Qt, no MRML.

A :class:`Job` runs ``function(context)`` in a daemon thread. The function reports through
its :class:`JobContext` (``progress(fraction, message)``, ``log(message)``) and watches
``context.cancel_event``; everything it reports goes into a thread-safe queue that the
caller drains with :meth:`Job.poll` (the Slicer widget does so from a ``qt.QTimer`` on the
main thread, which is also the only thread that touches MRML). When the function ends the
job is ``SUCCEEDED`` (with ``result``), ``FAILED`` (with a one-line ``error.reason`` and the
traceback in ``error.details``) or ``CANCELLED`` (no result, whatever the function did).

Cancel wins until the result is delivered: the caller claims a result with
:meth:`Job.take_result`, once; a :meth:`Job.cancel` that comes after the function returned
but before that claim turns the job into ``CANCELLED`` and drops the result, so a Cancel
click between the worker's end and the widget's next poll never adds nodes. After the claim
a cancel changes nothing.

:func:`synthesis_task` and :func:`validation_task` build the functions the module runs;
they import the engine (torch, MONAI) only when they run.
"""
from __future__ import annotations

import dataclasses
import enum
import queue
import re
import threading
import traceback
from typing import Any, Callable, Mapping, Optional

from ..sequences import SEQUENCES, Sequence
from .devices import release_cached_memory
from .progress import check_cancel, scaled


class JobState(str, enum.Enum):
    """Life cycle of a job."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States after which nothing changes any more.
FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """Something the job reported: ``kind`` is ``"progress"`` (with ``fraction``) or ``"log"``."""

    kind: str
    message: str
    fraction: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class JobError:
    """Why a job failed: one line for a message box, the traceback for the log, and for failures a front end
    acts on a ``code`` (``"not-ready"``: the inputs need preparing; ``problems`` lists why)."""

    reason: str
    details: str
    code: str = ""
    problems: tuple = ()


def one_line_reason(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its class name when it has none."""
    for line in str(error).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(error).__name__


class JobContext:
    """What a running function uses to report and to notice cancellation.

    Usable without a :class:`Job` too (``JobContext()``): the reports then go to a queue
    nobody reads and the computation runs in the caller's thread.
    """

    #: Progress events closer than this (and with the same message) are dropped.
    MIN_PROGRESS_STEP = 0.005

    def __init__(self, events: Optional[queue.Queue] = None, cancel_event: Optional[threading.Event] = None):
        self.events: queue.Queue = events if events is not None else queue.Queue()
        self.cancel_event = cancel_event if cancel_event is not None else threading.Event()
        self._last_fraction = -1.0
        self._last_message = ""
        self._last_phase = ""
        self._start, self._stop = 0.0, 1.0

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancel(self) -> None:
        """Raise :class:`~MRISynthesisLib.core.progress.Cancelled` once cancellation was asked for."""
        check_cancel(self.cancel_event)

    def log(self, message: str) -> None:
        """A line for the log."""
        self.events.put(JobEvent("log", str(message)))

    def progress(self, fraction: float, message: str = "") -> None:
        """Progress in [0, 1]; a new phase of work (message without its numbers) is also logged."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        phase = re.sub(r"\d+", "#", message)
        if message and phase != self._last_phase:
            self._last_phase = phase
            self.log(message)
        if (message == self._last_message and abs(fraction - self._last_fraction) < self.MIN_PROGRESS_STEP
                and fraction not in (0.0, 1.0)):
            return
        self._last_fraction, self._last_message = fraction, message
        self.events.put(JobEvent("progress", message, self._start + (self._stop - self._start) * fraction))

    def part(self, start: float, stop: float) -> "JobContext":
        """A context for one part of the work: its progress 0..1 is reported as ``start``..``stop`` of this one
        (same events, same cancellation), so a job of several steps moves one bar forward only."""
        part = JobContext(self.events, self.cancel_event)
        part._start = self._start + (self._stop - self._start) * start
        part._stop = self._start + (self._stop - self._start) * stop
        return part


class JobFailure(Exception):
    """A failure whose details are not this process's traceback (a worker process's log, for example)."""

    def __init__(self, reason: str, details: str = "", code: str = "", problems: tuple = ()):
        super().__init__(reason)
        self.details = details
        self.code = code
        self.problems = tuple(problems)


class JobBase:
    """The life cycle every job shares, whatever runs it: states, cancel, claiming the result, events.

    A subclass implements :meth:`_execute`, which runs in the job's daemon thread, reports through
    ``self.context`` and returns the result (or raises; :class:`JobFailure` carries its own details).
    """

    def __init__(self, name: str = "job"):
        self.name = name
        self._cancel = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self.context = JobContext(self._events, self._cancel)
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._state = JobState.WAITING
        self._delivered = False
        self.result: Any = None
        self.error: Optional[JobError] = None
        self.fraction = 0.0
        self.message = ""

    @property
    def state(self) -> JobState:
        with self._lock:
            return self._state

    @property
    def done(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def start(self) -> "JobBase":
        """Start the thread (once)."""
        with self._lock:
            if self._state is JobState.CANCELLED and self._thread is None:
                return self  # cancelled before it started: nothing to run
            if self._state is not JobState.WAITING:
                raise RuntimeError(f"job {self.name!r} was already started")
            self._state = JobState.RUNNING
        self._thread = threading.Thread(target=self._run, name=f"MRISynthesis {self.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def delivered(self) -> bool:
        """True once :meth:`take_result` handed the result over (a later cancel changes nothing)."""
        with self._lock:
            return self._delivered

    def cancel(self) -> None:
        """Ask the job to stop; it ends as CANCELLED and keeps no result.

        A job that already SUCCEEDED but whose result was not claimed yet becomes CANCELLED
        at once and drops its result: the user's Cancel wins over a result nobody has used.
        A delivered result, a failure or a finished cancellation is left as it is.
        """
        with self._lock:
            if self._delivered or self._state in (JobState.FAILED, JobState.CANCELLED):
                return
            self._cancel.set()
            if self._state is JobState.WAITING:
                self._state = JobState.CANCELLED
            elif self._state is JobState.SUCCEEDED:
                self._state, self.result = JobState.CANCELLED, None
                self.context.log("cancelled after it finished: its result is dropped")

    def take_result(self) -> Any:
        """Claim the result of a SUCCEEDED job: returned once, then marked delivered.

        None when the job did not succeed (cancelled, failed, still running) or the result
        was already claimed. Atomic with :meth:`cancel`: a job is never both delivered and
        cancelled.
        """
        with self._lock:
            if self._state is not JobState.SUCCEEDED or self._delivered:
                return None
            self._delivered = True
            return self.result

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job has finished (or ``timeout`` seconds); True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    def poll(self) -> list:
        """Everything reported since the last call (progress and log events), oldest first."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.kind == "progress":
                self.fraction, self.message = event.fraction, event.message
            events.append(event)
        return events

    def _execute(self) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        result, error, state = None, None, JobState.SUCCEEDED
        try:
            result = self._execute()
        except BaseException as exception:  # noqa: BLE001 - every failure must end the job cleanly
            if self._cancel.is_set():
                state = JobState.CANCELLED
            else:
                state = JobState.FAILED
                details = getattr(exception, "details", "") if isinstance(exception, JobFailure) else ""
                report = getattr(exception, "report", None)  # inputs not ready, found in this process
                code = getattr(exception, "code", "") or ("not-ready" if report is not None else "")
                problems = getattr(exception, "problems", ()) or (tuple(report.problems) if report is not None else ())
                error = JobError(one_line_reason(exception), details or traceback.format_exc(), code, tuple(problems))
                self.context.log(f"failed: {error.reason}")
        with self._lock:  # the same lock as cancel(): a cancel is seen here or sees SUCCEEDED
            if self._cancel.is_set():
                state, result, error = JobState.CANCELLED, None, None
            self.result, self.error, self._state = result, error, state
        if state is JobState.CANCELLED:
            self.context.log("cancelled")


class Job(JobBase):
    """``function(context)`` run in a daemon thread of this process; poll it, wait for it or cancel it.

    In Slicer the module runs synthesis in a worker *process* instead
    (:class:`MRISynthesisLib.worker.supervisor.ProcessJob`, the same interface); this in-process
    job stays for scripts, tests and the command line.
    """

    def __init__(self, function: Callable[[JobContext], Any], name: str = "job"):
        super().__init__(name)
        self._function = function

    def _execute(self) -> Any:
        return self._function(self.context)


# --------------------------------------------------------------------------- synthesis tasks


def _engine_synthesize() -> Callable:
    """The engine's ``pipeline.synthesize`` (imported here: it pulls in torch and MONAI)."""
    from .pipeline import synthesize

    return synthesize


def _load_bundle(bundle: Any, context: JobContext) -> Any:
    """A loaded model bundle from a catalogue name or path; a loaded bundle is passed through."""
    if bundle is None or isinstance(bundle, (str, bytes)) or hasattr(bundle, "__fspath__"):
        from .bundles import load_bundle

        context.log(f"loading model {bundle or '(default)'}")
        return load_bundle(bundle)
    return bundle


def synthesis_task(images: Mapping[Sequence, Any], bundle: Any, *, targets=None, device: str = "auto",
                   tumour_maps: bool = True, ground_truth: Optional[Mapping] = None,
                   synthesize: Optional[Callable] = None, uncertainty: int = 0) -> Callable[[JobContext], Any]:
    """A job function: synthesise the missing sequences of ``images`` and return the SynthesisResult.

    ``bundle`` is a loaded model bundle or a catalogue name / path (the engine loads it, with progress).
    ``uncertainty``: samples of the uncertainty map (0: none; see :mod:`.uncertainty`).
    """
    inputs = dict(images)

    def run(context: JobContext) -> Any:
        function = synthesize or _engine_synthesize()
        context.check_cancel()
        try:
            result = function(inputs, bundle, targets=targets, device=device, progress=context.progress,
                              cancel=context.cancel_event, tumour_maps=tumour_maps, ground_truth=ground_truth,
                              **({"uncertainty": uncertainty} if uncertainty else {}))
        finally:
            release_cached_memory()  # a worker process returns it by ending
        context.check_cancel()
        return result

    return run


def validation_task(images: Mapping[Sequence, Any], bundle: Any, *, device: str = "auto",
                    tumour_maps: bool = True, synthesize: Optional[Callable] = None,
                    metrics_protocol: str = "brain", uncertainty: int = 0) -> Callable[[JobContext], list]:
    """A job function: leave-one-out on a complete case, one SynthesisResult per sequence.

    The bundle is loaded once for the four runs. Each sequence is synthesised from the other three and compared with the acquired one
    (``ground_truth``), which gives its error map and metrics, scored by ``metrics_protocol`` (``brain`` or
    ``brasyn``, see :mod:`MRISynthesisLib.metrics.protocols`; checked before the job starts).
    """
    from ..metrics.protocols import check_protocol

    check_protocol(metrics_protocol)
    inputs = {Sequence(k): v for k, v in images.items()}
    missing = [s.display_name for s in SEQUENCES if s not in inputs]
    if missing:
        raise ValueError(f"validation needs all four sequences; missing: {', '.join(missing)}")

    def run(context: JobContext) -> list:
        function = synthesize or _engine_synthesize()
        model = _load_bundle(bundle, context)
        results = []
        for index, target in enumerate(SEQUENCES):
            context.check_cancel()
            context.log(f"validation {index + 1}/4: {target.display_name} from the other three")
            others = {s: image for s, image in inputs.items() if s is not target}
            share = scaled(context.progress, index / len(SEQUENCES), (index + 1) / len(SEQUENCES))

            def progress(fraction: float, message: str, share=share, name: str = target.short_name) -> None:
                share(fraction, f"{name}: {message}")

            try:
                results.append(function(others, model, targets=[target], device=device, progress=progress,
                                        cancel=context.cancel_event, tumour_maps=tumour_maps,
                                        ground_truth={target: inputs[target]}, metrics_protocol=metrics_protocol,
                                        **({"uncertainty": uncertainty} if uncertainty else {})))
            finally:
                release_cached_memory()
        context.check_cancel()
        return results

    return run
