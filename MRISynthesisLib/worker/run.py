"""The worker process itself: read a request, run the synthesis, print events, save the results.

``python -m MRISynthesisLib.worker REQUEST.json`` (or ``mrisynth worker REQUEST.json``) runs
:func:`main`. Standard output carries only protocol lines (:mod:`.protocol`): the original
stdout is kept for them and file descriptor 1 is pointed at standard error, so whatever a
library prints (Python or C) cannot break a line. Exit status: 0 results saved, 1 the job
failed (a ``failed`` event says why), 2 the request or the command line is wrong, 3
cancelled (SIGTERM/SIGINT), 4 the supervising process went away (``--lifeline``).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Optional

from ..core.jobs import JobContext, JobEvent, one_line_reason, synthesis_task, validation_task
from ..core.progress import Cancelled
from .protocol import RequestError, WorkerRequest, event_line, read_request
from .stdio import reserve_stdout_for_events
from .transfer import save_results

__all__ = ["main", "run_request", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_CANCELLED", "EXIT_ORPHANED",
           "LIFELINE_FLAG", "STANDBY_FLAG"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_ORPHANED = 0, 1, 2, 3, 4
#: With this flag the worker ends when its standard input closes: the process that started it is gone.
LIFELINE_FLAG = "--lifeline"
#: With a standby worker: load this model (catalogue name or path) and run it once while waiting.
PRELOAD_FLAG = "--preload"
#: The model a standby worker loaded and ran once, by the name it was asked for.
_PRELOADED: dict = {}
#: With this flag (instead of a request file) the worker loads Python's heavy packages first and then
#: waits for the request file's path as one line on its standard input: started ahead of a job, it
#: hides the start-up, and it still runs one job and ends.
STANDBY_FLAG = "--standby"
#: Seconds a cancelled or orphaned worker gets to stop by itself before it ends hard.
_GRACE_S = 2.0

USAGE = (f"usage: python -m MRISynthesisLib.worker REQUEST.json [{LIFELINE_FLAG}]\n"
         f"       python -m MRISynthesisLib.worker {STANDBY_FLAG} [{LIFELINE_FLAG}]  (request path on stdin)")


class EventChannel:
    """Where the worker's events go: one flushed JSON line each, from any thread.

    Has the ``put`` of a queue, so a :class:`~MRISynthesisLib.core.jobs.JobContext` reports
    straight into it. A write that fails means the reader is gone: the worker ends.
    """

    def __init__(self, stream: Any):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        line = event_line(kind, **fields)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                os._exit(EXIT_ORPHANED)  # nobody reads: the supervising process died

    def put(self, event: JobEvent) -> None:
        if event.kind == "progress":
            self.send("progress", fraction=event.fraction, message=event.message)
        else:
            self.send("log", message=event.message)


def _protocol_channel(events_fd: Optional[int]) -> EventChannel:
    if events_fd is None:
        events_fd = reserve_stdout_for_events()
    return EventChannel(os.fdopen(events_fd, "w", encoding="utf-8", newline="\n"))


def _install_signal_handlers(cancel: threading.Event) -> None:
    """SIGTERM and SIGINT ask the job to stop (it checks within about a second)."""
    def stop(signum, frame) -> None:
        cancel.set()

    for name in ("SIGTERM", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, stop)


def _watch_lifeline(cancel: threading.Event) -> None:
    """End the worker when its standard input closes (the supervisor died without cancelling it).

    The supervisor never writes to the pipe, so the read returns only when its end is closed. The
    descriptor is read directly: a thread blocked in ``sys.stdin``'s buffered reader would hold
    its lock and make the interpreter abort at exit.
    """
    descriptor = sys.stdin.fileno()

    def watch() -> None:
        try:
            while os.read(descriptor, 1):
                pass
        except (OSError, ValueError):
            pass
        cancel.set()
        threading.Timer(_GRACE_S, lambda: os._exit(EXIT_ORPHANED)).start()

    threading.Thread(target=watch, name="MRISynthesis worker lifeline", daemon=True).start()


def _use_cpu_threads(request: WorkerRequest) -> None:
    """Thread cap and MPS fallback through the environment: torch reads both when it starts."""
    if request.cpu_threads:
        os.environ["OMP_NUM_THREADS"] = str(request.cpu_threads)
    os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


#: Share of the progress bar a study's preparation takes (registration and resampling are quick beside
#: the synthesis; N4, when asked for, is not, and then the bar waits a little longer at this mark).
PREPARATION_SHARE = 0.2
#: Advice of a worker whose inputs are not ready (the Slicer module words its own from the problems).
NOT_READY_ADVICE = "prepare the inputs (Prepare inputs in Slicer, --prepare on the command line)"


def _ready_inputs(request: WorkerRequest, images: dict, context: JobContext):
    """The inputs checked, or prepared; ``(images, bundle, PreparedStudy or None)``."""
    import SimpleITK as sitk

    from ..clinical.study_run import StudyOptions, model_ready_inputs
    from ..core.bundles import load_bundle

    bundle = _PRELOADED.get(request.model)
    if bundle is None:
        context.log(f"loading model {request.model or '(default)'}")
        bundle = load_bundle(request.model)
    else:
        context.log(f"loading model {request.model or '(default)'}: loaded while waiting")
    mask = None if request.brain_mask is None else sitk.ReadImage(str(request.brain_mask))
    options = StudyOptions(prepare=request.prepare, brain_mask=mask, brain_extraction=request.brain_extraction,
                           bias_correction=request.bias_correction)
    if request.prepare:
        context.log("preparing the study: bias correction, co-registration, brain extraction, resampling")
    else:
        context.log("checking that the inputs are what the model expects")
    ready, prepared, _ = model_ready_inputs(images, bundle, options, advice=NOT_READY_ADVICE,
                                            progress=context.part(0.0, PREPARATION_SHARE).progress,
                                            cancel=context.cancel_event, device=request.device)
    for line in prepared.messages if prepared is not None else []:
        context.log(line)
    return ready, bundle, prepared


def run_request(request: WorkerRequest, request_folder: Path, context: JobContext) -> Path:
    """Read the inputs, check or prepare them, run the job, save the results; returns the results folder."""
    from ..core.io import read_inputs

    context.log(f"worker {os.getpid()} reading {len(request.inputs)} input volume(s)")
    images = read_inputs(request.inputs)
    context.check_cancel()
    images, bundle, prepared = _ready_inputs(request, images, context)
    context.check_cancel()
    if prepared is not None:  # one bar: the preparation's share, then the synthesis
        context = context.part(PREPARATION_SHARE, 1.0)
    if request.kind == "validation":
        task = validation_task(images, bundle, device=request.device, tumour_maps=request.tumour_maps,
                               metrics_protocol=request.metrics_protocol, uncertainty=request.uncertainty_samples)
        results = task(context)
    else:
        task = synthesis_task(images, bundle, targets=request.targets, device=request.device,
                              tumour_maps=request.tumour_maps, uncertainty=request.uncertainty_samples)
        results = [task(context)]
    if prepared is not None:
        results = [prepared.result_on_grid(result) for result in results]
    if not request.keep_stage1:
        for result in results:
            for target in result.targets.values():
                target.stage1 = None
    torch = sys.modules.get("torch")
    if torch is not None:
        context.log(f"worker used {torch.get_num_threads()} CPU thread(s)")
    context.check_cancel()
    folder = request_folder / request.results_folder
    save_results(results, folder)
    return folder


def _load_engine() -> None:
    """Import what every job needs (torch, MONAI, the pipeline) while no job waits for it."""
    import importlib

    for name in ("torch", "monai", "MRISynthesisLib.core.pipeline", "MRISynthesisLib.core.stages",
                 "MRISynthesisLib.core.bundles"):
        importlib.import_module(name)


def _preload(model: str) -> None:
    """Load ``model`` and run its stage 1 once on an empty slice (the first run of a network in a process pays
    for setting up its kernels), so that a job with this model starts at once. Failures are left to the job."""
    try:
        import torch

        from ..core.bundles import load_bundle
        from ..core.model_grid_inputs import model_grid_for

        bundle = load_bundle(model)
        (height, width), _ = model_grid_for(bundle.stage1)
        with torch.inference_mode():
            bundle.stage1(torch.full((1, 4, height, width), -1.0), [[0]], torch.tensor([1]), torch.tensor([0.5]))
        _PRELOADED[model] = bundle
    except Exception:  # noqa: BLE001 - the job itself loads the model again and reports what is wrong
        pass


def _read_request_line() -> Optional[str]:
    """The request path a standby worker is given: one line on stdin, read byte by byte (no buffering, so
    the lifeline watch reads the rest of the same descriptor). None when stdin closes first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(sys.stdin.fileno(), 1)
        if not chunk:
            return None
        data += chunk
    return data.decode("utf-8").strip()


def main(argv: Optional[list] = None, events_fd: Optional[int] = None) -> int:
    """Run one request file; see the module docstring for the exit statuses. ``events_fd``: the protocol
    stream, when the caller reserved it already (:func:`reserve_stdout_for_events`)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    lifeline = LIFELINE_FLAG in arguments
    standby = STANDBY_FLAG in arguments
    preload = None
    if PRELOAD_FLAG in arguments:
        at = arguments.index(PRELOAD_FLAG)
        preload = arguments[at + 1] if at + 1 < len(arguments) else ""
        del arguments[at:at + 2]
    arguments = [a for a in arguments if a not in (LIFELINE_FLAG, STANDBY_FLAG)]
    if len(arguments) != (0 if standby else 1) or any(a.startswith("-") for a in arguments):
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    channel = _protocol_channel(events_fd)
    cancel = threading.Event()
    _install_signal_handlers(cancel)
    if standby:
        _load_engine()
        if preload:
            _preload(preload)
        line = _read_request_line()
        if not line:
            return EXIT_ORPHANED  # nobody will send a request: the starter went away
        arguments = [line]
    if lifeline:
        _watch_lifeline(cancel)
    path = Path(arguments[0]).absolute()
    try:
        request = read_request(path)
    except RequestError as error:
        print(f"error: {error}", file=sys.stderr)
        channel.send("failed", reason=str(error), details="")
        return EXIT_USAGE
    _use_cpu_threads(request)
    context = JobContext(events=channel, cancel_event=cancel)  # type: ignore[arg-type]
    try:
        folder = run_request(request, path.parent, context)
    except Cancelled:
        return EXIT_CANCELLED
    except BaseException as error:  # noqa: BLE001 - every failure is reported as one line and its traceback
        if cancel.is_set():
            return EXIT_CANCELLED
        print(f"error: {one_line_reason(error)}", file=sys.stderr)
        extra = {}
        report = getattr(error, "report", None)
        if report is not None:  # inputs not ready: the front end offers to prepare them
            extra = {"code": "not-ready", "problems": list(report.problems)}
        channel.send("failed", reason=one_line_reason(error), details=traceback.format_exc(), **extra)
        return EXIT_FAILED
    channel.send("result", folder=str(folder))
    return EXIT_OK
