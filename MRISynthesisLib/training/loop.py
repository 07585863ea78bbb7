"""The training loop every command shares: opening a run (:func:`start_run`), the epoch trainer with its
time budget, and choosing and summarising the epoch whose weights the bundle keeps.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np

from .cases import find_cases
from .optimisation import make_scaler, restore_rng_state, rng_state, seed_everything, training_device
from .options import TrainingError, TrainOptions
from .run_files import (
    LogCallback,
    RunLog,
    best_weights_path,
    json_number,
    load_training_state,
    save_training_state,
    training_state_path,
    write_metrics,
)

__all__ = ["TimeBudget", "RunStart", "start_run", "TrainingResult", "ProgressFn", "EpochTrainer", "mean_losses",
           "is_headline", "selection_score", "summary_metrics", "bundle_training_info"]

#: Receives the fraction done (0 to 1) and a short message (a progress bar).
ProgressFn = Callable[[float, str], None]


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


# --------------------------------------------------------------------------- opening a run


class RunStart(NamedTuple):
    """The pieces a trainer works with once its run has been opened (unpack them in this order)."""

    budget: TimeBudget  # started before case preparation, so that counts too
    cases: list
    run_dir: Path
    log: RunLog
    device: Any  # torch.device
    rng: np.random.Generator
    state: Optional[dict]  # the saved training state when resuming, else None


def start_run(options: TrainOptions, kind: str, echo: Optional[Callable[[str], None]] = None) -> RunStart:
    """Open the run of ``kind`` (stage1, segmenter, stage2): nothing is written before the cases are found."""
    options.check()
    budget = TimeBudget(options.max_minutes)
    cases = find_cases(options.data_dir)
    run_dir = Path(options.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / f"train-{kind}.log", echo)
    device = training_device(options)
    rng = seed_everything(options.seed)
    state = load_training_state(training_state_path(run_dir, kind), kind) if options.resume else None
    return RunStart(budget, cases, run_dir, log, device, rng, state)


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
            "history": json.loads(json.dumps(self.history, default=json_number)),
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


# --------------------------------------------------------------------------- best epoch and summaries


def is_headline(key: str) -> bool:
    """``val_ssim``, ``val_dice``...: one validation number per epoch (not per target, not a time)."""
    return key.startswith("val_") and key.count("_") == 1 and key != "val_s"


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


def mean_losses(records: list) -> dict:
    """Mean of each loss over the steps of an epoch (``train_<name>`` keys)."""
    keys = sorted({k for r in records for k in r})
    return {f"train_{k}": float(np.mean([r[k] for r in records if k in r])) for k in keys}
