"""``mrisynth reproduce``: every training and evaluation behind the paper's Tables 1-4, resumable.

The plan (:func:`reproduction_plan`) is a list of steps, each one ``mrisynth`` command run in its
own process, with the file whose presence means the step is done:

1. the cases are split into training and held-out folders (links to the case folders) unless
   held-out cases are given;
2. three stage-1 models for Table 1: ``hfgan`` (no intensity encoding, no SSIM loss),
   ``ssim-loss`` (no intensity encoding) and ``two-stage`` (the method), then the segmenter and
   the Refiner of ``two-stage``;
3. evaluations with the BraSyn protocol: ``hfgan`` and ``ssim-loss`` with the prior mean,
   ``two-stage`` with the prior mean, a 2-sigma draw and the ground-truth intensity;
4. ``tables.md``: Tables 1-4 beside the paper's numbers, and ``reproduction.json`` with the time
   each step took and the time the full paper recipe would take on this device.

A step whose output exists, is newer than what it was made from and was made by the same command
is skipped, and a training with a resumable state is continued (``--resume``), so running the
command again after an interruption picks up where it stopped; the same output folder with other
options (data, budgets, recipe) is refused in one line rather than mixed into the tables.
Running each step as its own process keeps one step's memory from the next and lets the
commands' own checks and atomic writes do their work.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence as TypingSequence, Tuple

from ..core.io import InputError

__all__ = ["ReproductionError", "ReproductionOptions", "Step", "reproduction_plan", "run_plan", "split_cases",
           "full_recipe_estimate", "changed_budgets", "write_tables", "RUNS"]


class ReproductionError(InputError):
    """A reproduction that cannot run (no cases, too few to hold some out, a failed step); one line."""


#: The stage-1 models of Table 1: run name -> the ablation switches of ``train stage1``.
RUNS: Dict[str, Tuple[str, ...]] = {
    "hfgan": ("--no-intensity-encoding", "--no-ssim-loss", "--no-tumour-ssim-loss"),
    "ssim-loss": ("--no-intensity-encoding",),
    "two-stage": (),
}
#: The evaluations: (run, intensity mode).
EVALUATIONS: Tuple[Tuple[str, str], ...] = (("hfgan", "mean"), ("ssim-loss", "mean"), ("two-stage", "mean"),
                                             ("two-stage", "2sigma"), ("two-stage", "gt"))


@dataclass
class ReproductionOptions:
    """What to reproduce with: data, output, device and (for tests and quick looks) smaller budgets.

    ``None`` budgets leave the ``--config`` preset's values (for ``paper``: the paper's recipe).
    """

    data_dir: Path
    output_dir: Path
    held_out_dir: Optional[Path] = None
    held_out_fraction: float = 0.2
    device: str = "auto"
    config: str = "paper"
    seed: int = 0
    stage1_epochs: Optional[int] = None
    segmenter_epochs: Optional[int] = None
    stage2_epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    image_size: Optional[int] = None
    crop_size: Optional[int] = None
    batch_size: Optional[int] = None
    val_cases: Optional[int] = None
    segmenter: Optional[Path] = None
    evaluation_cases: Optional[int] = None


@dataclass
class Step:
    """One ``mrisynth`` command of the plan and the file that shows it is done."""

    name: str
    arguments: List[str]
    done: Path
    resume_state: Optional[Path] = None
    #: Files the step's output is made from: an output older than any of them is made again.
    inputs: Tuple[Path, ...] = ()
    seconds: Optional[float] = field(default=None, compare=False)

    @property
    def slug(self) -> str:
        """The step's name as a file name: ``train-stage-1-hfgan``."""
        return self.name.replace(" ", "-").replace("(", "").replace(")", "")

    def record(self, folder: Path) -> Path:
        """Where the command that made ``done`` is kept."""
        return folder / f"{self.slug}.json"

    def is_done(self) -> bool:
        """``done`` exists and is not older than any of ``inputs``."""
        if not self.done.exists():
            return False
        made = self.done.stat().st_mtime
        return all(not source.exists() or source.stat().st_mtime <= made for source in self.inputs)


# --------------------------------------------------------------------------- data


def _case_folders(folder: Path) -> List[Path]:
    from ..evaluation.cases import find_evaluation_cases

    return [case.folder for case in find_evaluation_cases(folder)]


def _link(source: Path, link: Path) -> None:
    """A symbolic link to a case folder; a copy where the file system has no links."""
    try:
        link.symlink_to(source.resolve(), target_is_directory=True)
    except OSError:
        shutil.copytree(source, link)


def split_cases(options: ReproductionOptions) -> Tuple[Path, Path]:
    """(training folder, held-out folder). With ``held_out_dir`` the data is used as it is; else the
    last ``held_out_fraction`` of the sorted cases (at least one) is held out, as folders of links
    under ``OUTPUT/data`` (kept from an earlier run, so a resumed run sees the same split)."""
    if options.held_out_dir is not None:
        return Path(options.data_dir), Path(options.held_out_dir)
    data = Path(options.output_dir) / "data"
    train, held_out = data / "train", data / "held-out"
    source = data / "source.json"
    if train.is_dir() and held_out.is_dir():
        recorded = json.loads(source.read_text(encoding="utf-8")).get("data") if source.exists() else None
        if recorded != str(Path(options.data_dir).resolve()):
            raise ReproductionError(f"{options.output_dir}: holds a reproduction of {recorded}, not of "
                                    f"{options.data_dir}; use another --output-dir")
        return train, held_out
    cases = _case_folders(Path(options.data_dir))
    count = max(1, int(round(len(cases) * options.held_out_fraction)))
    if len(cases) - count < 2:
        raise ReproductionError(f"{options.data_dir}: {len(cases)} case(s); a reproduction needs at least 2 for "
                                f"training and 1 held out (or give held-out cases)")
    staging = data.with_name(".data-partial")
    if staging.exists():
        shutil.rmtree(staging)
    for folder, selected in (("train", cases[:-count]), ("held-out", cases[-count:])):
        (staging / folder).mkdir(parents=True)
        for case in selected:
            _link(case, staging / folder / case.name)
    (staging / "source.json").write_text(json.dumps({"data": str(Path(options.data_dir).resolve())}) + "\n",
                                         encoding="utf-8")
    staging.rename(data)
    return train, held_out


# --------------------------------------------------------------------------- plan


def _budget(flag: str, value) -> List[str]:
    return [flag, str(value)] if value is not None else []


def reproduction_plan(options: ReproductionOptions, train: Path, held_out: Path) -> List[Step]:
    """The steps in order (see the module docstring)."""
    from .run_files import training_state_path

    output = Path(options.output_dir)
    common = ["--device", options.device, "--seed", str(options.seed), "--config", options.config,
              *_budget("--steps-per-epoch", options.steps_per_epoch), *_budget("--val-cases", options.val_cases)]
    steps: List[Step] = []
    for run, switches in RUNS.items():
        folder = output / "runs" / run
        steps.append(Step(f"train stage 1 ({run})",
                          ["train", "stage1", "--data", str(train), "-o", str(folder), *switches, *common,
                           *_budget("--epochs", options.stage1_epochs), *_budget("--image-size", options.image_size),
                           *_budget("--batch-size", options.batch_size)],
                          folder / "stage1.pt", training_state_path(folder, "stage1")))
    full = output / "runs" / "two-stage"
    if options.segmenter is None:
        steps.append(Step("train segmenter (two-stage)",
                          ["train", "segmenter", "--data", str(train), "-o", str(full), *common,
                           *_budget("--epochs", options.segmenter_epochs), *_budget("--crop-size", options.crop_size)],
                          full / "segmenter.pt", training_state_path(full, "segmenter")))
    steps.append(Step("train stage 2 (two-stage)",
                      ["train", "stage2", "--data", str(train), "-o", str(full), *common,
                       *_budget("--epochs", options.stage2_epochs), *_budget("--crop-size", options.crop_size),
                       *(["--segmenter", str(options.segmenter)] if options.segmenter is not None else [])],
                      full / "refiner.pt", training_state_path(full, "stage2"),
                      inputs=(full / "stage1.pt", full / "segmenter.pt")))
    for run, intensity in EVALUATIONS:
        folder = output / "evaluations" / f"{run}-{intensity}"
        steps.append(Step(f"evaluate {run} ({intensity})",
                          ["evaluate", "--data", str(held_out), "-o", str(folder), "--model", str(output / "runs" / run),
                           "--device", options.device, "--protocol", "brasyn", "--intensity", intensity,
                           "--intensity-seed", str(options.seed), "--overwrite",
                           *_budget("--cases", options.evaluation_cases),
                           *(["--segmenter", str(options.segmenter)] if options.segmenter is not None else [])],
                          folder / "evaluation.csv",
                          inputs=tuple(output / "runs" / run / name for name in ("stage1.pt", "refiner.pt",
                                                                              "segmenter.pt"))))
    return steps


def run_plan(steps: TypingSequence[Step], log_dir: Path, echo: Callable[[str], None] = print,
             runner: Optional[Callable[[List[str], Path], int]] = None) -> List[Step]:
    """Run the steps not yet done, in order, each ``mrisynth`` command in its own process with its
    output in ``log_dir/<n>-<name>.log`` and the command kept in ``log_dir/commands/<name>.json``;
    stop at the first failure with a one-line error."""
    records = log_dir / "commands"
    records.mkdir(parents=True, exist_ok=True)
    run = runner or _run_command
    for index, step in enumerate(steps, 1):
        if step.is_done():
            made_by = json.loads(step.record(records).read_text(encoding="utf-8")) if step.record(records).exists() else None
            if made_by != step.arguments:
                raise ReproductionError(f"{step.done}: made by another command than this reproduction's "
                                        f"'mrisynth {' '.join(step.arguments)}'; use another --output-dir")
            echo(f"[{index}/{len(steps)}] {step.name}: done earlier")
            continue
        arguments = list(step.arguments)
        if step.resume_state is not None and step.resume_state.exists():
            if step.done.exists():  # made from networks trained since: train it again from the start
                step.resume_state.unlink()
            else:  # interrupted: continue from the last checkpoint
                arguments.append("--resume")
        log = log_dir / f"{index:02d}-{step.slug}.log"
        echo(f"[{index}/{len(steps)}] {step.name} ... (log: {log})")
        started = time.perf_counter()
        code = run(arguments, log)
        step.seconds = time.perf_counter() - started
        if code != 0 or not step.done.exists():
            raise ReproductionError(f"{step.name} failed (exit {code}); see {log}; run the same command again to "
                                    "continue from here")
        step.record(records).write_text(json.dumps(step.arguments) + "\n", encoding="utf-8")
        echo(f"[{index}/{len(steps)}] {step.name}: {step.seconds / 60.0:.1f} min")
    return list(steps)


def _run_command(arguments: List[str], log: Path) -> int:
    """``mrisynth ARGUMENTS`` in a child process, its output appended to ``log``."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("$ mrisynth " + " ".join(arguments) + "\n")
        handle.flush()
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        return subprocess.run([sys.executable, "-m", "MRISynthesisLib.cli", *arguments], stdout=handle,
                              stderr=subprocess.STDOUT, env=environment).returncode


# --------------------------------------------------------------------------- time


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


#: Budget options that change the networks' inputs or batches: a step time measured with them is no
#: step time of the recipe.
SHAPE_OPTIONS = ("image_size", "batch_size", "crop_size")


def changed_budgets(options: ReproductionOptions) -> List[str]:
    """The budget options set (``--stage1-epochs 1``, ...): what makes this run differ from the recipe."""
    names = ("stage1_epochs", "segmenter_epochs", "stage2_epochs", "steps_per_epoch", "batch_size", "image_size",
             "crop_size", "val_cases", "evaluation_cases")
    return [f"--{name.replace('_', '-')} {getattr(options, name)}" for name in names
            if getattr(options, name) is not None]


def full_recipe_estimate(output_dir: Path, config: str, options: Optional[ReproductionOptions] = None
                         ) -> Dict[str, dict]:
    """Per trained network: the seconds per step measured in this reproduction (on this device, with
    these networks), the steps of the full ``config`` recipe on this data (the preset's epochs x the
    steps of an uncapped epoch, both recorded by the training) and their product in hours.

    A reproduction with fewer epochs or steps measures the step time of the real networks on the real
    data, so the product is the time the full run would take here. With another slice size, batch or
    crop size (``options``) the step is not the recipe's: no hours are given, and ``why`` says so. A
    short stage-2 run fills its stage-1 cache during its few steps, so its step time is an upper bound.
    The segmenter is left out: the paper used the pretrained FeTS models.
    """
    from .presets import preset_values

    estimates = {}
    for run in RUNS:
        folder = Path(output_dir) / "runs" / run
        for kind in ("stage1", "stage2"):
            history, recipe = _json(folder / f"{kind}-metrics.json"), _json(folder / f"{kind}-recipe.json")
            if not history or not recipe:
                continue
            steps = sum(int(epoch.get("steps", 0)) for epoch in history)
            seconds = sum(float(epoch.get("step_s", 0.0)) * int(epoch.get("steps", 0)) for epoch in history)
            per_step = seconds / steps if steps else math.nan
            full_steps = int(preset_values(kind, config)["epochs"]) * int(recipe.get("full_epoch_steps") or 0)
            changed = [f"--{name.replace('_', '-')}" for name in SHAPE_OPTIONS
                       if options is not None and getattr(options, name) is not None]
            if changed:
                estimates[f"{run}/{kind}"] = {"measured_steps": steps, "seconds_per_step": round(per_step, 4),
                                              "full_recipe_steps": None, "full_recipe_hours": None,
                                              "why": f"measured with {', '.join(changed)}: not the recipe's step"}
                continue
            estimates[f"{run}/{kind}"] = {
                "measured_steps": steps, "seconds_per_step": round(per_step, 4),
                "full_recipe_steps": full_steps or None,
                "full_recipe_hours": round(per_step * full_steps / 3600.0, 2) if full_steps else None}
    return estimates


# --------------------------------------------------------------------------- tables


def write_tables(output_dir: Path, notes: TypingSequence[str] = ()) -> Path:
    """``OUTPUT/tables.md`` from the evaluations done so far (missing ones show as n/a)."""
    from ..core.io import write_text
    from ..evaluation.paper_tables import paper_tables, read_rows

    evaluations = {}
    for run, intensity in EVALUATIONS:
        csv_path = Path(output_dir) / "evaluations" / f"{run}-{intensity}" / "evaluation.csv"
        if csv_path.exists():
            evaluations[(run, intensity)] = read_rows(csv_path)
    path = Path(output_dir) / "tables.md"
    write_text(paper_tables(evaluations, notes), path)
    return path
