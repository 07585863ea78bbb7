"""The real HD-BET program (``pip install hd-bet``, version 2) through our brain-extraction path, offline.

HD-BET downloads its weights on first use, which tests cannot do; :mod:`hdbet_test_model` makes a
small nnU-Net model of HD-BET's layout from phantom studies (once per session, about half a
minute) and the tests point ``HOME`` at it, so the real ``hd-bet`` runs as our code calls it:
command line, device name, output names, its worker processes, the mask's geometry. Network
access is cut for the program (proxies to a closed local port), so a download attempt fails at
once even on a machine with a network. Each real run takes about half a minute on two cores
(HD-BET starts a dozen worker processes, each importing torch and nnU-Net).

The real runs are skipped only where the HD_BET package is not installed (CI installs it:
``.ci/run``). Stand-in programs check what a real run cannot show quickly: where the program is
found, and that a hung run is stopped with the worker processes it started.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk
from hdbet_test_model import dice, make_model, model_folder, write_model

from MRISynthesisLib.cli.main import main
from MRISynthesisLib.clinical import brain_masks
from MRISynthesisLib.clinical.prepare import prepare_study
from MRISynthesisLib.core.progress import Cancelled
from MRISynthesisLib.phantom import generate_clinical_study, write_clinical_study
from MRISynthesisLib.sequences import Sequence

#: Least Dice of the made model's mask against the true brain mask (it reaches 0.93-0.95 on study 7's T1).
MIN_DICE = 0.85


@pytest.fixture(scope="session")
def hdbet_installed():
    """The one skip: where HD-BET's package is missing there is no program to run."""
    pytest.importorskip("HD_BET", reason="HD-BET is not installed (pip install hd-bet)")


@pytest.fixture(scope="session")
def made_model(hdbet_installed):
    """The small HD-BET-layout model, trained once per session on phantom studies 101 and 104."""
    return make_model()


@pytest.fixture(scope="session")
def hdbet_home(tmp_path_factory, made_model):
    """A home folder holding the made model where HD-BET looks (``~/hd-bet_params/release_2.0.0``), with the
    file ending of HD-BET's release (the mask is ``X_bet.nii.gz``)."""
    home = tmp_path_factory.mktemp("hdbet-home")
    write_model(home, made_model)
    return home


@pytest.fixture(scope="session")
def hdbet_home_nnunet_ending(tmp_path_factory, made_model):
    """The same model with the file ending ``.nii.gz`` in its ``dataset.json``, as nnU-Net's datasets have it:
    nnU-Net then appends it to HD-BET's mask name (``X_bet.nii.gz.nii.gz``)."""
    home = tmp_path_factory.mktemp("hdbet-home-ending")
    write_model(home, made_model, file_ending=".nii.gz")
    return home


@pytest.fixture(scope="module")
def study():
    return generate_clinical_study(7, small=True)


@pytest.fixture(scope="module")
def study_on_disk(tmp_path_factory, study):
    return write_clinical_study(study, tmp_path_factory.mktemp("hdbet-study"), dicom=False)


def model_files(home) -> dict:
    """The model folder's files and their sizes."""
    folder = model_folder(home)
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_the_real_program_masks_the_t1_of_a_study_prepared_through_the_api(tmp_path, study, hdbet_home, offline,
                                                                            monkeypatch, capfd):
    monkeypatch.setenv("HOME", str(hdbet_home))
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    files_before = model_files(hdbet_home)
    t1 = study.primary(Sequence.T1N)
    prepared = prepare_study({Sequence.T1N: t1.image}, brain_extraction="hd-bet", device="auto", spacing_mm=2.0,
                             names={Sequence.T1N: "T1"})
    assert prepared.brain_extraction == "hd-bet" and "brain extraction: HD-BET" in prepared.messages
    mask = prepared.reference_brain_mask
    assert mask.GetSize() == t1.image.GetSize() and np.allclose(mask.GetOrigin(), t1.image.GetOrigin())
    assert np.allclose(mask.GetDirection(), t1.image.GetDirection())
    found = sitk.GetArrayFromImage(mask) > 0
    truth = sitk.GetArrayFromImage(t1.brain_mask) > 0
    overlap = dice(found, truth)
    volume_ml = found.sum() * np.prod(t1.image.GetSpacing()) / 1000
    assert overlap >= MIN_DICE, f"Dice {overlap:.3f} of HD-BET's (made model) mask with the true brain mask"
    assert brain_masks.MIN_BRAIN_ML <= volume_ml <= brain_masks.MAX_MASK_ML
    printed = capfd.readouterr()
    assert "cite" not in printed.out + printed.err, "HD-BET's output stays in the subprocess"
    assert not any(private.iterdir()), "the private HD-BET folder is removed"
    assert model_files(hdbet_home) == files_before, "nothing downloaded or changed in the model folder"


@pytest.mark.slow
def test_cli_prepares_with_the_real_program_and_writes_its_mask_and_results(tmp_path, study_on_disk,
                                                                            hdbet_home_nnunet_ending, offline,
                                                                            monkeypatch, capsys):
    """``mrisynth synthesize --prepare --brain-extraction hd-bet``; the model's ``dataset.json`` names the file
    ending ``.nii.gz`` here, so HD-BET's mask is ``brain_bet.nii.gz.nii.gz`` (the other name our code reads)."""
    monkeypatch.setenv("HOME", str(hdbet_home_nnunet_ending))
    nifti = study_on_disk / "nifti"
    out = tmp_path / "out"
    inputs = [a for key in ("t1n", "t2w", "t2f") for a in ("--input", f"{key}={next(nifti.glob(f'*-{key}.nii.gz'))}")]
    code = main(["synthesize", *inputs, "--prepare", "--brain-extraction", "hd-bet", "-o", str(out),
                 "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "brain extraction: HD-BET" in printed.out + printed.err
    case = next(out.glob("*-report.json")).name[: -len("-report.json")]
    reference = sitk.ReadImage(str(next(nifti.glob("*-t1n.nii.gz"))))
    written = sitk.ReadImage(str(out / f"{case}-brain-mask.nii.gz"))
    assert written.GetSize() == reference.GetSize() and np.allclose(written.GetOrigin(), reference.GetOrigin())
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(study_on_disk / "truth" / "brain-mask-t1n.nii.gz"))) > 0
    overlap = dice(sitk.GetArrayFromImage(written) > 0, truth)
    assert overlap >= MIN_DICE, f"Dice {overlap:.3f} of the written brain mask with the true brain mask"
    brain = sitk.GetArrayFromImage(written) > 0
    synthetic = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}-t1c.nii.gz")))
    assert synthetic.shape == brain.shape, "the synthetic T1c lies on the reference grid"
    assert synthetic[brain].any() and not synthetic[~brain].any(), "... inside the brain mask, 0 outside"
    report = json.loads((out / f"{case}-report.json").read_text())
    assert report["preparation"]["brain_extraction"] == "hd-bet"


@pytest.mark.slow
def test_offline_without_its_weights_the_real_program_stops_with_one_line_and_nothing_is_written(
        hdbet_installed, tmp_path, study_on_disk, offline, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    out = tmp_path / "out"
    t1 = next((study_on_disk / "nifti").glob("*-t1n.nii.gz"))
    code = main(["synthesize", "--input", f"t1n={t1}", "--prepare", "--brain-extraction", "hd-bet", "-o", str(out),
                 "--device", "cpu"])
    message = capsys.readouterr().err.strip()
    assert code == 2 and len(message.splitlines()) == 1, message
    assert "HD-BET could not extract the brain of" in message and "offline, it cannot fetch its weights" in message
    assert "--brain-mask FILE" in message and "...;" in message, "HD-BET's own error is shortened"
    assert len(message) < 360 + len(str(t1)), message
    assert not out.exists(), "nothing is written"
    assert not (model_folder(home) / "fold_all").exists()


def fake_program(folder, body: str):
    """An executable ``hd-bet`` in ``folder`` running the Python ``body``."""
    program = folder / "hd-bet"
    program.write_text(f"#!{sys.executable}\n{body}")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return program


def test_the_program_is_found_among_this_pythons_scripts_when_not_on_path_and_else_named_with_its_install(
        tmp_path, monkeypatch):
    scripts, empty = tmp_path / "scripts", tmp_path / "empty"
    scripts.mkdir()
    empty.mkdir()
    program = fake_program(scripts, "")
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(brain_masks.sysconfig, "get_path", lambda name: str(scripts))
    assert brain_masks._hd_bet_program() == str(program)
    program.unlink()
    image = sitk.Image(8, 8, 8, sitk.sitkUInt16)
    with pytest.raises(brain_masks.BrainExtractionError, match=r'HD-BET is not installed \(pip install hd-bet '
                       r'"torch==[0-9.]+", which keeps this torch; .*--brain-mask FILE'):
        brain_masks.hd_bet_mask(image, name="T1")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its adoptive parent) counts as ended
        with open(f"/proc/{pid}/stat") as status:
            return status.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_hung_run_is_stopped_with_the_workers_it_started(tmp_path, monkeypatch, stop):
    """HD-BET starts worker processes (nnU-Net's pools): a timeout or a cancel ends them with it."""
    pids = tmp_path / "pids"
    fake_program(tmp_path, f"""import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open({str(pids)!r}, "w").write(str(worker.pid))
time.sleep(600)
""")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    image = sitk.Image(8, 8, 8, sitk.sitkUInt16)
    cancel = threading.Event()
    if stop == "cancel":
        threading.Timer(2.0, cancel.set).start()
        expected = pytest.raises(Cancelled)
    else:
        expected = pytest.raises(brain_masks.BrainExtractionError, match=r"HD-BET did not finish within 3 s \(stopped\)"
                                 r"; or give a brain mask with --brain-mask FILE")
    tick = time.monotonic()
    with expected:
        brain_masks.hd_bet_mask(image, name="T1", cancel=cancel, timeout_s=3.0)
    assert time.monotonic() - tick < 15
    worker = int(pids.read_text())
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), "the program's worker process is ended too"
