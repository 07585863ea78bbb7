"""What every training run shares: run folder, log, time budget, schedule, RNG state, checkpoints.

A *run folder* (``RUN_DIR``) holds one training project: the case split, caches, a log per
command, metrics (CSV and JSON), resumable training checkpoints under ``checkpoints/`` and
the model bundle (``stage1.pt``, ``segmenter.pt``, ``refiner.pt``, ``bundle.json``) that
``mrisynth synthesize --model RUN_DIR`` loads.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import io as text_io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from .. import __version__
from ..core.io import atomic_path, write_text

#: Written into resumable training checkpoints so foreign files are refused.
TRAINING_STATE_FORMAT = "mrisynthesis-training-state"
CHECKPOINT_DIR = "checkpoints"
LogCallback = Callable[[str], None]


class TrainingError(ValueError):
    """A training request that cannot run; the message names the file or option at fault."""


# --------------------------------------------------------------------------- common options

#: Which weights a run's bundle holds: those of the epoch that validated ``best``, or the ``last``.
KEEP_CHOICES = ("best", "last")


@dataclasses.dataclass
class TrainOptions:
    """Options every training command shares (CLI flags of ``mrisynth train``)."""

    data_dir: Path = Path(".")
    run_dir: Path = Path("run")
    epochs: int = 1
    batch_size: int = 1
    steps_per_epoch: Optional[int] = None
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    val_cases: Optional[int] = None
    max_minutes: Optional[float] = None
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    accumulation: int = 1
    log_every: int = 10
    cpu_threads: Optional[int] = None
    val_targets: Optional[tuple] = None
    keep: str = "best"

    def check(self) -> None:
        """Raise :class:`TrainingError` for option values no run can use."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accumulation": self.accumulation,
                    "log_every": self.log_every}
        for name, value in positive.items():
            if int(value) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainingError(f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}")
        if self.val_cases is not None and self.val_cases < 0:
            raise TrainingError(f"--val-cases must be 0 or more, got {self.val_cases}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise TrainingError(f"--max-minutes must be positive, got {self.max_minutes}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise TrainingError(f"--threads must be at least 1, got {self.cpu_threads}")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning rate must be positive, got {self.learning_rate}")
        if self.keep not in KEEP_CHOICES:
            raise TrainingError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {self.keep!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


#: Input-pattern schemes of the synthesis stages: ``hfgan`` as HF-GAN trains (one to three inputs);
#: ``missing-one`` always the other three (the BraSyn task: exactly one sequence missing).
INPUT_PATTERNS = ("hfgan", "missing-one")


def check_input_patterns(scheme: str, option: str = "input patterns") -> None:
    """Raise :class:`TrainingError` unless ``scheme`` is one of :data:`INPUT_PATTERNS`."""
    if scheme not in INPUT_PATTERNS:
        raise TrainingError(f"{option} must be one of {', '.join(INPUT_PATTERNS)}, got {scheme!r}")


@dataclasses.dataclass
class SynthesisTrainOptions(TrainOptions):
    """Options shared by the two synthesis stages, which draw the inputs of each sample."""

    input_patterns: str = "hfgan"

    def check(self) -> None:
        """The common checks, and a known input-pattern scheme."""
        super().check()
        check_input_patterns(self.input_patterns, "--input-patterns")


# --------------------------------------------------------------------------- log and metrics


class RunLog:
    """Timestamped lines appended to ``RUN_DIR/<name>.log`` and echoed to ``echo`` (the terminal)."""

    def __init__(self, path: Path, echo: Optional[LogCallback] = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
        if self.echo is not None:
            self.echo(message)


def write_metrics(run_dir: Path, name: str, history: list) -> tuple:
    """Write the per-epoch ``history`` as ``<name>-metrics.csv`` and ``.json``; returns both paths."""
    json_path = run_dir / f"{name}-metrics.json"
    write_text(json.dumps(history, indent=2, default=_json_number) + "\n", json_path)
    columns: list = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    csv_path = run_dir / f"{name}-metrics.csv"
    write_text(buffer.getvalue(), csv_path)
    return csv_path, json_path


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _json_number(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def mean_losses(records: list) -> dict:
    """Mean of each loss over the steps of an epoch (``train_<name>`` keys)."""
    keys = sorted({k for r in records for k in r})
    return {f"train_{k}": float(np.mean([r[k] for r in records if k in r])) for k in keys}


# --------------------------------------------------------------------------- time budget


class TimeBudget:
    """Wall-clock budget: ``expired()`` turns True after ``minutes`` (never when None)."""

    def __init__(self, minutes: Optional[float]) -> None:
        self.minutes = minutes
        self.started = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def expired(self) -> bool:
        """True once the budget is spent."""
        return self.minutes is not None and self.elapsed_s >= self.minutes * 60.0


# --------------------------------------------------------------------------- schedule and devices


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then cosine down to ``floor`` at the end."""
    total = max(1, int(total_steps))
    warmup = max(0, min(int(warmup_steps), total - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimizer(parameters, learning_rate: float, weight_decay: float, total_steps: int, warmup_steps: int,
                   betas: tuple = (0.9, 0.999)):
    """AdamW with a warm-up + cosine LambdaLR schedule (stepped once per optimiser step)."""
    import torch

    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
    return optimizer, scheduler


def autocast_context(device):
    """Mixed precision on CUDA (bf16 where supported, else fp16); float32 elsewhere."""
    import torch

    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype(device))


def amp_dtype(device):
    """The autocast dtype on ``device`` (None off CUDA)."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_scaler(device):
    """A gradient scaler that is active only for fp16 autocast."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def training_device(options: TrainOptions):
    """The torch device of ``options.device``; ``cpu_threads`` caps torch's CPU threads.

    On a shared machine fewer threads than cores can be several times faster (OpenMP
    threads spin while they wait for a core).
    """
    import torch

    from ..core.devices import resolve_device

    device = resolve_device(options.device)
    if options.cpu_threads is not None:
        torch.set_num_threads(int(options.cpu_threads))
    return device


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return the run's numpy generator (all data sampling uses it)."""
    import torch

    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def rng_state(rng: np.random.Generator) -> dict:
    """Every RNG the run uses, as plain types and tensors (``torch.load(weights_only=True)`` safe)."""
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": _plain(rng.bit_generator.state)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping, rng: np.random.Generator) -> None:
    """Put back the RNG states saved by :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    """numpy scalars inside a nested dict -> Python ints/floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


# --------------------------------------------------------------------------- training checkpoints


def training_state_path(run_dir: Path, name: str) -> Path:
    """Where the resumable state of command ``name`` lives."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}-last.pt"


def best_weights_path(run_dir: Path, name: str) -> Path:
    """Where the weights of command ``name``'s best-validated epoch live."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}-best.pt"


def save_training_state(path: Path, state: Mapping) -> Path:
    """Write a resumable training state atomically (a crash mid-write keeps the previous one)."""
    import torch

    payload = dict(state)
    payload["format"] = TRAINING_STATE_FORMAT
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_training_state(path: Path, kind: str) -> dict:
    """Read a state written by :func:`save_training_state` for command ``kind``."""
    import torch

    if not path.is_file():
        raise TrainingError(f"{path}: no training checkpoint to resume from (train without --resume first)")
    from ..core.weights import CheckpointError, check_checkpoint_archive

    try:
        check_checkpoint_archive(path)  # sizes from the zip index before anything is inflated
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as error:
        raise TrainingError(str(error)) from error
    except Exception as error:  # torch, zip and pickle errors all mean an unusable file
        raise TrainingError(f"{path}: not a readable training checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT or state.get("kind") != kind:
        raise TrainingError(f"{path}: not a {kind} training checkpoint")
    return state


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- bundle in the run folder


def load_run_model(run_dir: Path, kind: str):
    """The ``kind`` network saved in the run folder, or None when there is none."""
    from ..core.weights import build_model, read_checkpoint

    path = Path(run_dir) / f"{kind}.pt"
    if not path.is_file():
        return None
    return build_model(read_checkpoint(path), path)


def write_run_bundle(run_dir: Path, kind: str, model, info: Mapping, log: Optional[LogCallback] = None) -> Path:
    """Save ``model`` as ``RUN_DIR/<kind>.pt`` and rewrite ``bundle.json`` listing every network there.

    The other networks' files are left byte for byte as they are (the stage-2 cache is keyed
    by the stage-1 file's SHA-256). Without a stage-1 model the checkpoint is written but no
    ``bundle.json`` (a bundle cannot synthesise without stage 1).
    """
    from ..core.weights import BUNDLE_FILE, save_bundle, save_checkpoint

    run_dir = Path(run_dir)
    provenance = {"software": f"MRISynthesis {__version__}", "run_dir": str(run_dir), "command": f"train {kind}",
                  **dict(info)}
    models = {k: load_run_model(run_dir, k) for k in ("stage1", "refiner", "segmenter") if k != kind}
    models[kind] = model
    metadata = _bundle_metadata(run_dir, kind, provenance)
    if models.get("stage1") is None:
        save_checkpoint(run_dir / f"{kind}.pt", kind, model, provenance)
        if log:
            log(f"wrote {run_dir / f'{kind}.pt'}; no bundle.json yet (train stage1 into this folder)")
        return run_dir
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=run_dir))
    try:
        save_bundle(staging, name=run_dir.name, description=_bundle_description(models),
                    provenance=provenance, metadata=metadata, **models)
        os.replace(staging / f"{kind}.pt", run_dir / f"{kind}.pt")
        os.replace(staging / BUNDLE_FILE, run_dir / BUNDLE_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if log:
        listed = ", ".join(f"{k}.pt" for k in ("stage1", "refiner", "segmenter") if models.get(k) is not None)
        log(f"bundle written to {run_dir} ({listed})")
    return run_dir


def _bundle_metadata(run_dir: Path, kind: str, provenance: Mapping) -> dict:
    """Earlier ``bundle.json`` metadata with this command's training record added."""
    from ..core.weights import BUNDLE_FILE

    metadata: dict = {}
    path = run_dir / BUNDLE_FILE
    if path.is_file():
        try:
            metadata = dict(json.loads(path.read_text(encoding="utf-8")).get("metadata", {}))
        except (OSError, json.JSONDecodeError, AttributeError):
            metadata = {}
    training = dict(metadata.get("training", {}))
    training[kind] = dict(provenance,
                          trained=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    metadata["training"] = training
    return metadata


def _bundle_description(models: Mapping) -> str:
    parts = ["HF-GAN"] + (["Refiner"] if models.get("refiner") is not None else [])
    parts += ["segmenter"] if models.get("segmenter") is not None else []
    return f"trained with mrisynth train ({' + '.join(parts)})"


@contextlib.contextmanager
def frozen(module) -> Iterator[None]:
    """Temporarily stop gradients into ``module``'s parameters (the GAN's D during the G step)."""
    flags = [p.requires_grad for p in module.parameters()]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


# --------------------------------------------------------------------------- the epoch loop


@dataclasses.dataclass
class TrainingResult:
    """What a training command did: epochs and steps done, per-epoch history, where things are."""

    run_dir: Path
    epochs_done: int
    global_step: int
    history: list
    stopped_early: bool
    checkpoint: Path
    bundle: Optional[Path] = None


ProgressFn = Callable[[float, str], None]


class EpochTrainer:
    """The loop every command shares: epochs of steps, accumulation, validation, checkpoints, budget.

    ``modules`` and ``optimizers`` (name -> (optimizer, scheduler)) are saved and restored
    by name; the ``step`` callable does one micro-batch's forward and ``backward`` (through
    :meth:`backward`), the trainer steps the optimisers every ``accumulation`` micro-batches.
    """

    def __init__(self, kind: str, options: TrainOptions, modules: Mapping, optimizers: Mapping, device,
                 rng: np.random.Generator, log: LogCallback, progress: Optional[ProgressFn] = None,
                 config: Optional[Mapping] = None, budget: Optional[TimeBudget] = None,
                 select_by: tuple = ()) -> None:
        self.kind = kind
        self.options = options
        self.modules = dict(modules)
        self.optimizers = dict(optimizers)
        self.device = device
        self.scaler = make_scaler(device)
        self.rng = rng
        self.log = log
        self.progress = progress
        self.config = dict(config or {})
        self.epoch = 0
        self.global_step = 0
        self.history: list = []
        self.budget = budget or TimeBudget(options.max_minutes)
        self.checkpoint_path = training_state_path(options.run_dir, kind)
        self.select_by = tuple(select_by)
        self.best_path = best_weights_path(options.run_dir, kind)

    # ----------------------------------------------------------------- state

    def state(self) -> dict:
        """Everything needed to continue: weights, optimisers, schedules, scaler, counters, RNGs."""
        return {
            "kind": self.kind, "epoch": self.epoch, "global_step": self.global_step,
            "modules": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in self.modules.items()},
            "optimizers": {k: opt.state_dict() for k, (opt, _) in self.optimizers.items()},
            "schedulers": {k: sched.state_dict() for k, (_, sched) in self.optimizers.items()},
            "scaler": self.scaler.state_dict(), "rng": rng_state(self.rng),
            "history": json.loads(json.dumps(self.history, default=_json_number)),
            "config": json.loads(json.dumps(self.config, default=str)),
            "best": self.best_epoch(),
        }

    def save(self) -> Path:
        """Write the resumable state (every epoch)."""
        return save_training_state(self.checkpoint_path, self.state())

    def restore(self, state: Mapping) -> None:
        """Continue from a state written by :meth:`save`."""
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, (optimizer, scheduler) in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            scheduler.load_state_dict(state["schedulers"][name])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], self.rng)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.log(f"resumed {self.kind} from {self.checkpoint_path} after epoch {self.epoch} "
                 f"(step {self.global_step})")

    # ----------------------------------------------------------------- steps

    def backward(self, loss) -> None:
        """Backward of one micro-batch's loss, scaled for accumulation (and fp16)."""
        self.scaler.scale(loss / self.options.accumulation).backward()

    def _optimizer_step(self) -> None:
        for optimizer, _ in self.optimizers.values():
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer, scheduler in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()

    def run(self, steps_per_epoch: int, batches: Callable, step: Callable, validate: Callable) -> TrainingResult:
        """Train until ``options.epochs`` epochs are done or the time budget is spent.

        ``batches(steps, rng)`` yields an epoch's micro-batches, ``step(batch)`` returns a
        dict of float losses, ``validate()`` a dict of validation metrics.
        """
        options = self.options
        total = options.epochs * steps_per_epoch
        stopped = False
        if self.epoch >= options.epochs:
            self.log(f"{self.kind}: {self.epoch} epochs already done (--epochs {options.epochs}); nothing to train")
        while self.epoch < options.epochs and not stopped:
            for module in self.modules.values():
                module.train()
            started, cpu_started = time.perf_counter(), time.process_time()
            records: list = []
            done = 0
            for micro, batch in enumerate(batches(steps_per_epoch, self.rng)):
                records.append(step(batch))
                done = micro + 1
                boundary = done % options.accumulation == 0 or done == steps_per_epoch
                stopped = self.budget.expired()
                if boundary or stopped:
                    self._optimizer_step()
                self.global_step += 1
                self._report(records, done, steps_per_epoch, total, started)
                if stopped:
                    self.log(f"time budget of {options.max_minutes:g} min spent: stopping {self.kind} after step "
                             f"{done} of epoch {self.epoch + 1}")
                    break
            self.epoch += 1
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            row = {"epoch": self.epoch, "steps": done, "global_step": self.global_step,
                   "lr": self._learning_rate(), "epoch_s": wall, "step_s": wall / max(done, 1),
                   "step_cpu_s": cpu / max(done, 1)}
            row.update(mean_losses(records))
            if stopped:
                self.log("validation skipped (time budget spent)")
            else:
                for module in self.modules.values():
                    module.eval()
                validation_started = time.perf_counter()
                row.update(validate())
                row["val_s"] = time.perf_counter() - validation_started
            self.history.append(row)
            write_metrics(Path(options.run_dir), self.kind, self.history)
            self._keep_if_best()
            self.save()
            self.log(f"epoch {self.epoch}/{options.epochs}: " + _summary(row))
        return TrainingResult(run_dir=Path(options.run_dir), epochs_done=self.epoch, global_step=self.global_step,
                              history=self.history, stopped_early=stopped, checkpoint=self.checkpoint_path)

    # ----------------------------------------------------------------- best epoch

    @property
    def selection_name(self) -> str:
        """The validation score that picks the best epoch, as logged (``val_ssim + val_dice``)."""
        return " + ".join(self.select_by)

    def best_epoch(self) -> Optional[dict]:
        """``{"epoch", "score"}`` of the first epoch in the history with the highest score, or None."""
        best = None
        for row in self.history:
            score = selection_score(row, self.select_by)
            if score is not None and (best is None or score > best["score"]):
                best = {"epoch": int(row["epoch"]), "score": score}
        return best

    def _keep_if_best(self) -> None:
        """Save the modules' weights when the epoch just validated beats every earlier one."""
        best = self.best_epoch()
        if best is None or best["epoch"] != self.epoch:
            return
        weights = {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in self.modules.items()}
        save_training_state(self.best_path, {"kind": self.kind, "modules": weights, **best})
        self.log(f"epoch {self.epoch} is the best so far by {self.selection_name} ({best['score']:.4f})")

    def select_weights(self) -> dict:
        """Put the weights the bundle should hold into the modules (``options.keep``); say which.

        ``best`` reloads the best-validated epoch's weights (the last ones when no epoch was
        validated); ``last`` keeps the weights as training left them.
        """
        last = {"keep": "last", "epoch": self.epoch}
        if self.options.keep != "best":
            return last
        best = self.best_epoch()
        if best is None:
            self.log(f"{self.kind}: no epoch was validated, so the bundle holds the last weights")
            return last
        chosen = {"keep": "best", "epoch": best["epoch"], "selected_by": self.selection_name, "score": best["score"]}
        if chosen["epoch"] != self.epoch:
            if not self.best_path.is_file():  # a run resumed from a checkpoint older than best-epoch keeping
                raise TrainingError(f"{self.best_path}: missing, so epoch {chosen['epoch']}'s weights were not kept; "
                                    "train again with --keep last or without --resume")
            state = load_training_state(self.best_path, self.kind)
            if int(state["epoch"]) != chosen["epoch"]:
                raise TrainingError(f"{self.best_path}: holds epoch {state['epoch']}, but the run's best is epoch "
                                    f"{chosen['epoch']}; train again with --keep last or without --resume")
            for name, module in self.modules.items():
                module.load_state_dict(state["modules"][name])
        self.log(f"{self.kind}: the bundle holds epoch {chosen['epoch']} of {self.epoch}, the best by "
                 f"{self.selection_name} ({chosen['score']:.4f})")
        return chosen

    def _learning_rate(self) -> float:
        optimizer = next(iter(self.optimizers.values()))[0]
        return float(optimizer.param_groups[0]["lr"])

    def _report(self, records: list, done: int, steps: int, total: int, started: float) -> None:
        recent = records[-self.options.log_every:]
        loss = float(np.mean([r.get("total", 0.0) for r in recent]))
        if self.progress:
            fraction = (self.epoch * steps + done) / max(total, 1)
            self.progress(fraction, f"epoch {self.epoch + 1}/{self.options.epochs} step {done}/{steps} loss {loss:.4f}")
        if done % self.options.log_every == 0:
            per_step = (time.perf_counter() - started) / done
            parts = " ".join(f"{k} {v:.4f}" for k, v in mean_losses(recent).items())
            parts = parts.replace("train_", "")
            self.log(f"epoch {self.epoch + 1} step {done}/{steps} ({per_step:.2f} s/step) {parts}")


def is_headline(key: str) -> bool:
    """``val_ssim``, ``val_dice``...: one validation number per epoch (not per target, not a time)."""
    return key.startswith("val_") and key.count("_") == 1 and key != "val_s"


def validation_targets(options: TrainOptions) -> tuple:
    """The targets validated each epoch (all four unless ``val_targets`` narrows them)."""
    from ..sequences import SEQUENCES, parse_sequence

    if not options.val_targets:
        return SEQUENCES
    wanted = {parse_sequence(t) for t in options.val_targets}
    return tuple(s for s in SEQUENCES if s in wanted)


def selection_score(row: Mapping, keys: tuple) -> Optional[float]:
    """Sum of ``keys`` in a history row (higher is better), or None when one is missing or not finite."""
    if not keys:
        return None
    values = [row.get(key) for key in keys]
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        return None
    return float(sum(values))


def summary_metrics(history: list, epoch: Optional[int] = None) -> dict:
    """Headline numbers of epoch ``epoch`` (default the last) for ``bundle.json``."""
    rows = [row for row in history if epoch is None or int(row.get("epoch", -1)) == int(epoch)]
    if not rows:
        return {}
    keep = ("epoch", "global_step", "train_total")
    return {k: v for k, v in rows[-1].items() if k in keep or k.startswith("val_")}


def bundle_training_info(result: TrainingResult, selected: Mapping) -> dict:
    """What ``bundle.json`` records of a run: epochs and steps done, and which epoch's weights it holds."""
    info = {"epochs": result.epochs_done, "steps": result.global_step, "kept": dict(selected),
            "last_metrics": summary_metrics(result.history)}
    if selected.get("epoch") != result.epochs_done:
        info["kept_metrics"] = summary_metrics(result.history, selected.get("epoch"))
    return info


def _summary(row: Mapping) -> str:
    keys = [k for k in row if k == "train_total" or is_headline(k)]
    return ", ".join(f"{k} {row[k]:.4f}" for k in keys if isinstance(row[k], float)) + f" ({row['epoch_s']:.0f} s)"
