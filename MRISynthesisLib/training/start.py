"""What every trainer does first: check options, find cases, open the run folder, log and resume state."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from .common import RunLog, TimeBudget, TrainOptions, load_training_state, seed_everything, training_device
from .common import training_state_path
from .datasets import find_cases


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
