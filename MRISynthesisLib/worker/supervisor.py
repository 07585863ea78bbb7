"""A job whose synthesis runs in a worker process, supervised from a background thread.

:class:`ProcessJob` has the interface of :class:`~MRISynthesisLib.core.jobs.Job` (``start``,
``poll``, ``cancel``, ``take_result``, ``wait``, ``state``, ``error``), so the Slicer widget
drives either the same way. Its thread:

1. writes the input images (NRRD) and ``request.json`` into a private temporary folder (0700);
2. starts ``python -m MRISynthesisLib.worker request.json --lifeline`` in a process group of its
   own (``python``: Slicer's ``PythonSlicer`` inside Slicer, else this interpreter);
3. turns the worker's event lines into the job's progress and log events, keeps the last lines
   of its standard error, and watches for Cancel and for silence;
4. reads the results back into memory, and removes the folder whatever happened.

Cancel ends the whole process group (SIGTERM, SIGKILL after half a second). A worker that
dies (signal, crash, out-of-memory kill) or goes silent for ``silence_limit_s`` gives a
FAILED job with a one-line reason, and its last log lines in the job's log and details.
"""
from __future__ import annotations

import atexit
import collections
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Mapping, Optional

import SimpleITK as sitk

from ..core.jobs import JobBase, JobEvent, JobFailure
from ..core.progress import Cancelled
from ..sequences import Sequence
from .protocol import JOB_KINDS, WorkerRequest, parse_event_line, write_request
from .run import LIFELINE_FLAG, PRELOAD_FLAG, STANDBY_FLAG
from .transfer import load_results, write_input_images

__all__ = ["ProcessJob", "DEFAULT_SILENCE_LIMIT_S", "TAIL_LINES", "worker_command", "ended_reason",
           "prestart_worker", "discard_standby"]

#: Seconds without any line from the worker after which it counts as hung (model loading on a
#: slow network drive and one refiner window on a slow CPU stay well below).
DEFAULT_SILENCE_LIMIT_S = 600.0
#: Lines of the worker's standard error kept for the log of a failed job.
TAIL_LINES = 20
#: Seconds between SIGTERM and SIGKILL when a worker is stopped.
_TERMINATE_GRACE_S = 0.5
#: How often the supervising thread looks at Cancel and the clock.
_TICK_S = 0.05
#: After its results, how long a worker may take to end by itself.
_EXIT_AFTER_RESULT_S = 10.0
#: After the worker ended, how long its last lines may take to arrive (something it started may hold the pipe).
_DRAIN_S = 1.0
#: Longest line kept from the worker (a runaway line must not fill Slicer's memory), and a log tail line.
_MAX_LINE = 65536
_MAX_TAIL_LINE = 2000

# Started (and not yet reaped) workers: ended when this interpreter exits, so that closing Slicer
# mid-job leaves no worker computing for nobody (the worker's lifeline covers a crash of Slicer).
_LIVE_JOBS: "weakref.WeakSet[ProcessJob]" = weakref.WeakSet()

#: Runs the worker module with the library's folder first on ``sys.path``: Slicer's launcher
#: sets PYTHONPATH itself, so the folder is passed as an argument instead.
_BOOTSTRAP = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
              "runpy.run_module('MRISynthesisLib.worker', run_name='__main__', alter_sys=True)")


def library_root() -> Path:
    """The folder that holds the ``MRISynthesisLib`` package (source checkout or Slicer install)."""
    return Path(__file__).resolve().parents[2]


def worker_command(request_path: Optional[Path], python: Optional[str] = None, lifeline: bool = True,
                   preload: Optional[str] = None) -> list:
    """The command line that runs the worker on ``request_path`` with ``python`` (None: a standby worker that
    reads the path from stdin); with ``lifeline`` the worker ends when its standard input closes (its starter
    is gone), so the starter must give it a pipe."""
    request = [STANDBY_FLAG] + ([PRELOAD_FLAG, str(preload)] if preload else []) if request_path is None else [
        str(request_path)]
    return [python or sys.executable, "-c", _BOOTSTRAP, str(library_root())] + request + (
        [LIFELINE_FLAG] if lifeline else [])


def _worker_environment(cpu_threads: Optional[int]) -> dict:
    environment = dict(os.environ)
    environment.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    environment["PYTHONIOENCODING"] = "utf-8"
    if cpu_threads:
        environment["OMP_NUM_THREADS"] = str(cpu_threads)
    return environment


def _spawn(command: list, cwd: str, cpu_threads: Optional[int]) -> subprocess.Popen:
    """Start a worker in a process group of its own (Cancel ends the whole tree) with three pipes."""
    options: dict = {}
    if os.name == "nt":
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        options["start_new_session"] = True
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=cwd, env=_worker_environment(cpu_threads), **options)


class _Standby:
    """A worker started ahead of the next job: Python, torch and the engine load while nobody waits.

    It still runs exactly one job and ends (memory and GPU memory go back to the system); the next
    standby is started when it is taken. Idle, it holds the memory of an imported torch (a few hundred MB).
    """

    def __init__(self, python: Optional[str], cpu_threads: Optional[int], model: Optional[str]):
        self.key = (python or sys.executable, cpu_threads, model)
        self.process = _spawn(worker_command(None, python, preload=model), tempfile.gettempdir(), cpu_threads)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.alive():
            _signal_group(self.process, getattr(signal, "SIGKILL", None))
            self.process.wait()


_standby_lock = threading.Lock()
_standby: "Optional[_Standby]" = None
#: False after :func:`discard_standby` until :func:`prestart_worker` is asked again: a job ending after
#: the panel closed starts no new standby.
_standby_wanted = False


def prestart_worker(python: Optional[str] = None, cpu_threads: Optional[int] = None,
                    model: Optional[str] = None) -> None:
    """Start a standby worker for the next :class:`ProcessJob` with ``use_standby`` (none if one is ready);
    with ``model`` it also loads that model and runs it once while it waits."""
    global _standby
    global _standby_wanted
    _standby_wanted = True
    with _standby_lock:
        key = (python or sys.executable, cpu_threads, model)
        if _standby is not None and _standby.alive() and _standby.key == key:
            return
        if _standby is not None:
            _standby.close()
        try:
            _standby = _Standby(python, cpu_threads, model)
        except OSError:
            _standby = None  # the job will start its own worker and say why it cannot


def _take_standby(python: Optional[str], cpu_threads: Optional[int]) -> Optional[subprocess.Popen]:
    """The waiting worker if it runs the same Python with the same threads (any preloaded model: a job for
    another model loads its own), else None; the caller starts the next one."""
    global _standby
    with _standby_lock:
        standby, _standby = _standby, None
    if standby is None:
        return None
    if standby.alive() and standby.key[:2] == (python or sys.executable, cpu_threads):
        return standby.process
    standby.close()
    return None


def discard_standby() -> None:
    """End the standby worker, if any (module closed, settings changed); no new one until asked again."""
    global _standby, _standby_wanted
    _standby_wanted = False
    with _standby_lock:
        standby, _standby = _standby, None
    if standby is not None:
        standby.close()


def ended_reason(returncode: int) -> str:
    """Why a worker that ended without results ended, in one line."""
    if returncode < 0:
        number = -returncode
        try:
            name = f", {signal.Signals(number).name}"
        except ValueError:
            name = ""
        cause = "; out of memory, or killed by another program" if number == getattr(signal, "SIGKILL", 9) else ""
        return f"the synthesis process ended unexpectedly (signal {number}{name}{cause}); the log has its last lines"
    code = f"0x{returncode:08X}" if returncode > 0xFFFF else str(returncode)  # Windows crash codes read in hex
    return f"the synthesis process ended unexpectedly (exit code {code}); the log has its last lines"


class ProcessJob(JobBase):
    """Synthesis (or leave-one-out validation) of ``images`` in a worker process.

    ``images``: ``{Sequence: SimpleITK.Image}`` on one grid (``SelectedInputs.images``); they are
    only read. ``model``: a catalogue name or path. ``python``: the interpreter for the worker.
    ``cpu_threads``: torch's CPU thread cap in the worker (Slicer keeps one core for itself).
    """

    def __init__(self, images: Mapping[Sequence, Any], model: Optional[str], *, kind: str = "synthesis",
                 device: str = "auto", tumour_maps: bool = True, targets: Optional[list] = None,
                 python: Optional[str] = None, cpu_threads: Optional[int] = None,
                 silence_limit_s: float = DEFAULT_SILENCE_LIMIT_S, use_standby: bool = False,
                 prepare: bool = False, brain_mask: Any = None, brain_extraction: str = "mask",
                 bias_correction: bool = False, keep_stage1: bool = True, name: Optional[str] = None,
                 metrics_protocol: str = "brain", uncertainty_samples: int = 0):
        if kind not in JOB_KINDS:
            raise ValueError(f"kind must be one of {', '.join(JOB_KINDS)}, got {kind!r}")
        if not images:
            raise ValueError("no input images")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a catalogue name or a path for a worker process, got "
                            f"{type(model).__name__}")
        if not silence_limit_s > 0:
            raise ValueError(f"silence_limit_s must be positive, got {silence_limit_s!r}")
        super().__init__(name or kind)
        self._images = dict(images)
        self._request = WorkerRequest(kind=kind, inputs={}, model=None if model is None else str(model),
                                      device=device, tumour_maps=tumour_maps, targets=targets,
                                      cpu_threads=cpu_threads, prepare=prepare, brain_extraction=brain_extraction,
                                      bias_correction=bias_correction, keep_stage1=keep_stage1,
                                      metrics_protocol=metrics_protocol, uncertainty_samples=uncertainty_samples)
        #: A brain mask image (in the reference's physical space) for preparing the study, or None.
        self._brain_mask = brain_mask
        self._python = python
        #: Take the worker :func:`prestart_worker` started, if it fits, and start the next one.
        self.use_standby = use_standby
        self.silence_limit_s = float(silence_limit_s)
        #: The private folder of this job while it runs (None before and after).
        self.folder: Optional[Path] = None
        #: The worker process while it runs (for tests and diagnostics).
        self.process: Optional[subprocess.Popen] = None
        self._tail: collections.deque = collections.deque(maxlen=TAIL_LINES)

    # ------------------------------------------------------------------ the supervising thread

    def _execute(self) -> Any:
        folder = Path(tempfile.mkdtemp(prefix="mrisynth-job-"))
        os.chmod(folder, 0o700)  # the inputs are patient images: this user only
        self.folder = folder
        _LIVE_JOBS.add(self)
        finished = False
        try:
            self.context.log("writing the inputs for the synthesis process")
            self._request.inputs = write_input_images(self._images, folder)
            if self._brain_mask is not None:
                self._request.brain_mask = "brain-mask.nrrd"
                sitk.WriteImage(self._brain_mask, str(folder / "brain-mask.nrrd"), False)
            request_path = write_request(self._request, folder / "request.json")
            self.context.check_cancel()
            self.process = self._launch(request_path)
            results_folder = self._supervise(self.process)
            results = load_results(results_folder)  # while the worker ends (torch's teardown takes a moment)
            finished = True
            return results if self._request.kind == "validation" else results[0]
        finally:
            if finished:  # the job is done; the worker may end in its own time, a thread reaps it
                threading.Thread(target=_reap, args=(self.process,), daemon=True,
                                 name="MRISynthesis worker reaper").start()
            else:
                self._end_process()
            _remove_folder(folder)
            self.folder = None
            _LIVE_JOBS.discard(self)
            if self.use_standby and _standby_wanted and not self._cancel.is_set():
                # warm for the next job; started now, not during this one (it would take cores)
                prestart_worker(self._python, self._request.cpu_threads, self._request.model)

    def _launch(self, request_path: Path) -> subprocess.Popen:
        python, threads = self._python, self._request.cpu_threads
        if self.use_standby:
            process = _take_standby(python, threads)
            if process is not None:
                self.context.log(f"handing the job to the waiting synthesis process ({process.pid})")
                try:
                    process.stdin.write(f"{request_path}\n".encode("utf-8"))
                    process.stdin.flush()
                    return process
                except OSError:  # it died while waiting: start one as usual
                    _signal_group(process, getattr(signal, "SIGKILL", None))
        command = worker_command(request_path, python)
        self.context.log(f"starting the synthesis process ({Path(command[0]).name})")
        try:
            return _spawn(command, str(request_path.parent), threads)
        except OSError as error:
            raise JobFailure(f"cannot start the synthesis process with {command[0]}: "
                             f"{error.strerror or error}") from None

    def _supervise(self, process: subprocess.Popen) -> Path:
        """Relay events until the worker ends; the results folder, or raise why there is none."""
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(process.stdout, lines.put, True), daemon=True,
                                  name="MRISynthesis worker stdout")
        errors = threading.Thread(target=_read_lines, args=(process.stderr, self._tail.append, False, _MAX_TAIL_LINE), daemon=True,
                                  name="MRISynthesis worker stderr")
        reader.start()
        errors.start()
        last_sign, failure, results, exited_at = time.monotonic(), None, None, None
        while True:
            if self._cancel.is_set():
                raise Cancelled()
            try:
                line = lines.get(timeout=_TICK_S)
            except queue.Empty:
                now = time.monotonic()
                if process.poll() is not None:  # ended, but something it started may still hold its output
                    exited_at = exited_at or now
                    if now - exited_at > _DRAIN_S:
                        break
                elif now - last_sign > self.silence_limit_s:
                    self._end_process()
                    raise self._failure(f"the synthesis process gave no sign of life for {self.silence_limit_s:g} s "
                                        "and was stopped; the log has its last lines")
                continue
            if line is None:  # standard output closed: the worker has ended (or is ending)
                break
            last_sign = time.monotonic()
            event = parse_event_line(line)
            if event is None:
                self._tail.append(line[:_MAX_TAIL_LINE])
            elif event["event"] == "progress":
                self._events.put(JobEvent("progress", event["message"], event["fraction"]))
            elif event["event"] == "log":
                self._events.put(JobEvent("log", event["message"]))
            elif event["event"] == "failed":
                failure = event
                if not failure["reason"].strip():
                    failure["reason"] = "the synthesis process failed without saying why; the log has its last lines"
            else:
                results = Path(event["folder"])
                break  # complete (the manifest is written last): read it back while the worker ends
        if results is not None:
            return self._inside_job_folder(results)
        returncode = self._wait_for_exit(process, last_sign)
        errors.join(1.0)
        if failure is not None:
            details, problems = failure.get("details"), failure.get("problems")
            problems = tuple(p for p in problems if isinstance(p, str)) if isinstance(problems, list) else ()
            code = failure.get("code") if failure.get("code") == "not-ready" else ""
            raise JobFailure(" ".join(failure["reason"].split()),
                             details if isinstance(details, str) and details else self._tail_text(), code, problems)
        raise self._failure(ended_reason(returncode) if returncode != 0 else
                            "the synthesis process ended without results; the log has its last lines")

    def _inside_job_folder(self, results: Path) -> Path:
        """The results folder the worker named, refused unless it is a plain folder of this job's folder."""
        try:
            inside = results.resolve().parent == self.folder.resolve() and not results.is_symlink()
        except (OSError, ValueError):
            inside = False
        if not inside:
            raise JobFailure(f"the synthesis process named a results folder outside its job folder: {results!r}")
        return results

    def _wait_for_exit(self, process: subprocess.Popen, last_sign: float) -> int:
        """The worker's exit status once its output has closed; one that closed its output but goes on
        running is stopped after the silence limit like a silent one."""
        while True:
            if self._cancel.is_set():
                raise Cancelled()
            try:
                return process.wait(timeout=_TICK_S)
            except subprocess.TimeoutExpired:
                if time.monotonic() - last_sign > self.silence_limit_s:
                    self._end_process()
                    raise self._failure("the synthesis process closed its output but did not end, and was stopped; "
                                        "the log has its last lines")

    def _failure(self, reason: str) -> JobFailure:
        """A failure whose details are the worker's last lines, which also go to the job's log."""
        for line in self._tail:
            self.context.log(f"synthesis process: {line}")
        return JobFailure(reason, self._tail_text())

    def _tail_text(self) -> str:
        return "\n".join(self._tail) or "(the synthesis process wrote nothing to its log)"

    def _end_process(self) -> None:
        """End the worker's whole process group (SIGTERM, then SIGKILL) and reap it; idempotent."""
        process = self.process
        if process is None:
            return
        if process.returncode is not None:
            return  # reaped already: its group id may belong to someone else by now
        if process.poll() is None:
            _signal_group(process, getattr(signal, "SIGTERM", None))
            try:
                process.wait(timeout=_TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group (the worker, anything it started); see _signal_group for why this is safe
        _signal_group(process, getattr(signal, "SIGKILL", None))
        process.wait()
        try:
            process.stdin.close()  # stdout and stderr stay with their reader threads (closing would block)
        except (OSError, AttributeError):
            pass


def _read_lines(stream: Any, put, end_mark: bool, cut: int = _MAX_LINE) -> None:
    """Every line of a binary pipe, decoded and cut to ``cut`` characters, to ``put``; then ``put(None)`` if
    ``end_mark``. The rest of an overlong line is read and dropped."""
    try:
        skipping = False
        while True:
            raw = stream.readline(_MAX_LINE)
            if not raw:
                break
            complete = raw.endswith(b"\n")
            if not skipping:
                put(raw.decode("utf-8", errors="replace").rstrip("\r\n")[:cut])
            skipping = not complete
    except (OSError, ValueError):
        pass
    if end_mark:
        put(None)


def _reap(process: subprocess.Popen) -> None:
    """Wait for a worker that delivered its results to end by itself; end its group if it does not."""
    try:
        process.wait(timeout=_EXIT_AFTER_RESULT_S)
    except subprocess.TimeoutExpired:
        _signal_group(process, getattr(signal, "SIGKILL", None))
        process.wait()
    try:
        process.stdin.close()
    except (OSError, AttributeError):
        pass


def _signal_group(process: subprocess.Popen, number: Optional[int]) -> None:
    """Send ``number`` to the worker's process group (POSIX) or end its tree (Windows).

    Only while the worker is not yet reaped: until then its process id (which is its group id) cannot
    be given to another process, so the signal reaches no one else."""
    if process.returncode is not None:
        return
    if os.name == "nt":
        if process.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
        return
    try:
        os.killpg(process.pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_folder(folder: Path) -> None:
    """Remove the job folder; a file still held (Windows, a worker ending) gets a few retries."""
    for _ in range(20):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)


@atexit.register
def _end_live_jobs() -> None:
    discard_standby()
    for job in list(_LIVE_JOBS):
        job._cancel.set()
        if job.process is not None and job.process.returncode is None:
            _signal_group(job.process, getattr(signal, "SIGKILL", None))
        job._end_process()
        if job.folder is not None:
            _remove_folder(job.folder)
