"""Brain extraction for a clinical study, with pluggable backends: a mask the user gives, or HD-BET.

* ``mask``: a brain mask file (or a Slicer label map / segmentation turned into one), in the
  reference series' physical space (it is resampled onto the reference grid, nearest neighbour);
* ``hd-bet``: HD-BET, the brain extraction of the BraTS preprocessing, when its package is
  installed. It runs as its own program (``hd-bet``, version 2) on the reference series, put in
  the axial layout of BraTS volumes (:func:`hd_bet_input`), in a private folder and its own
  process group: it starts a dozen worker processes (nnU-Net's preprocessing and export pools),
  which a timeout or a cancel ends with it. It downloads its weights (into ``~/hd-bet_params``)
  on first use, so offline it fails, and the error names the alternative. Tested against the
  real program with a small model made from phantoms (``Testing/test_hdbet_real.py``).

No home-made fallback is offered: a brain extraction that silently leaves skull in, or cuts
tumour out, changes what the model synthesises, and none was measured well enough here to
be offered as a backend. Every mask is checked: it must overlap the reference and have the
volume of a brain.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .model_space import into_grid

__all__ = ["BACKENDS", "BrainExtractionError", "MIN_BRAIN_ML", "MAX_MASK_ML", "check_brain_mask", "mask_from_file",
           "mask_on_grid", "needed_the_network", "hd_bet_mask", "hd_bet_command", "hd_bet_input", "HD_BET_COMMAND"]

#: Brain-extraction backends by name.
BACKENDS = ("mask", "hd-bet")
#: A brain mask holds at least this much (a child's brain, a resected one) ...
MIN_BRAIN_ML = 300.0
#: ... and at most this much (a brain with a large tumour; a head is larger).
MAX_MASK_ML = 2800.0
#: HD-BET's command-line program (``pip install hd-bet``).
HD_BET_COMMAND = "hd-bet"
_ALTERNATIVE = "or give a brain mask with --brain-mask FILE (in Slicer: a label map or segmentation)"


class BrainExtractionError(ValueError):
    """A brain extraction that cannot run or whose mask cannot be used (one line, names the mask or backend)."""


def check_brain_mask(mask: sitk.Image, name: str) -> sitk.Image:
    """``mask`` as a 0/1 UInt8 image, refused when empty or not the size of a brain."""
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(binary)))
    if voxels == 0:
        raise BrainExtractionError(f"{name}: the brain mask is empty there (does it belong to this study's "
                                   "reference series?)")
    volume_ml = voxels * float(np.prod(binary.GetSpacing())) / 1000.0
    if not MIN_BRAIN_ML <= volume_ml <= MAX_MASK_ML:
        raise BrainExtractionError(f"{name}: the brain mask holds {volume_ml:.0f} ml; a brain holds "
                                   f"{MIN_BRAIN_ML:.0f}-{MAX_MASK_ML:.0f} ml (a head mask, or a tumour mask?)")
    return binary


def mask_on_grid(mask: sitk.Image, reference: sitk.Image, name: str) -> sitk.Image:
    """A mask in the reference's physical space, resampled onto its grid (nearest neighbour) and checked."""
    if mask.GetDimension() != 3:
        raise BrainExtractionError(f"{name}: the brain mask is {mask.GetDimension()}D; expected a 3D mask")
    return check_brain_mask(into_grid(sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8), reference, nearest=True),
                            name)


def mask_from_file(path: Path, reference: sitk.Image) -> sitk.Image:
    """The brain mask in ``path`` on the reference grid; a file that is no usable mask is a one-line error."""
    from ..core.io import InputError, read_image

    try:
        mask = read_image(path, check=False)  # a mask has two values: the input checks would refuse it
    except InputError as error:
        raise BrainExtractionError(str(error)) from None
    return mask_on_grid(mask, reference, str(path))


#: Where HD-BET (version 2) writes the mask of ``-o brain.nii.gz`` with ``--save_bet_mask``: it hands nnU-Net
#: ``brain_bet.nii.gz`` as the output name, and nnU-Net appends the file ending of the model's ``dataset.json``
#: (empty in HD-BET's release, which reads ``brain_bet.nii.gz`` back; a model whose ending is ``.nii.gz``, as
#: nnU-Net's datasets have it, gives ``brain_bet.nii.gz.nii.gz``, also accepted).
HD_BET_MASK_NAME = "brain_bet.nii.gz"
#: Longest HD-BET run waited for (s): its CPU run takes minutes; a stalled download or a hung worker ends here.
HD_BET_TIMEOUT_S = 3600.0
#: Longest piece of HD-BET's own last line quoted in an error (its download errors run to 300 characters).
_QUOTE_CHARS = 160
#: Words of an error that says the network was needed (HD-BET fetches its weights, and in Slicer's HD Brain
#: Extraction also its code, on first use).
_OFFLINE_WORDS = ("urlopen", "connection", "download", "resolve host", "network", "name resolution", "zenodo")


def needed_the_network(text: str) -> bool:
    """Whether an error ``text`` says that something had to be fetched (and, offline, could not be)."""
    return any(word in text.lower() for word in _OFFLINE_WORDS)


def _hd_bet_program() -> Optional[str]:
    """HD-BET's program: on ``PATH``, else among the scripts of this Python (Slicer's Python, whose scripts
    folder is not on ``PATH``, installs it there)."""
    return shutil.which(HD_BET_COMMAND) or shutil.which(HD_BET_COMMAND, path=sysconfig.get_path("scripts"))


def install_hint() -> str:
    """How to install HD-BET here: with this torch pinned, since its torchvision requirement otherwise lets pip
    replace a CPU torch by the newest (CUDA) build."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "pip install hd-bet"
    return f'pip install hd-bet "torch=={torch_version}", which keeps this torch'


def hd_bet_command(program: str, source: Path, target: Path, device: str) -> list:
    """HD-BET 2's command line: the mask only (no brain image), on the torch device ``device`` resolves to
    (``cuda``, ``cuda:1``, ``mps`` or ``cpu``; HD-BET takes a torch device name, not ``auto``), on the CPU
    without test-time augmentation (which would take several times longer)."""
    from ..core.devices import resolve_device

    resolved = resolve_device(device)
    command = [program, "-i", str(source), "-o", str(target), "-device", str(resolved), "--save_bet_mask",
               "--no_bet_image"]
    return command + (["--disable_tta"] if resolved.type == "cpu" else [])


def hd_bet_input(reference: sitk.Image) -> sitk.Image:
    """The reference as HD-BET is given it: its voxels reordered (axes permuted and flipped, nothing
    interpolated) into the axial layout of BraTS volumes (``LPS``: identity direction), whatever plane the
    series was acquired in. nnU-Net hands the network the voxel array as stored, and a network learns
    the layouts it was trained on; a sagittal 3D T1 stored as acquired would reach it on its side.
    The mask comes back on this grid and is then put onto the reference's own grid."""
    return sitk.DICOMOrient(reference, "LPS")


def _mask_file(folder: Path) -> Optional[Path]:
    """The mask HD-BET wrote in ``folder`` (see :data:`HD_BET_MASK_NAME`), or None."""
    exact = folder / HD_BET_MASK_NAME
    if exact.is_file():
        return exact
    found = sorted(p for p in folder.glob(HD_BET_MASK_NAME + "*.nii.gz") if p.is_file())
    return found[0] if found else None


def _stop(process: subprocess.Popen) -> None:
    """End HD-BET and the worker processes it started (its own process group on POSIX)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except OSError:
        pass  # it ended on its own meanwhile
    process.communicate()


def _run(command: list, folder: Path, timeout_s: float, cancel: Optional[threading.Event]) -> Tuple[int, str]:
    """Run HD-BET in ``folder``; returns its exit status and its output (stdout then stderr, UTF-8).

    Its own session (POSIX), so that a timeout or a cancel ends the worker processes it spawns too;
    output decoded as UTF-8 with replacement, as its progress bars print block characters that a
    non-UTF-8 locale cannot decode.
    """
    from ..core.progress import Cancelled

    environment = dict(os.environ, PYTHONIOENCODING="utf-8")
    process = subprocess.Popen(command, cwd=str(folder), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=environment, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out, err = process.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                _stop(process)
                raise Cancelled("cancelled") from None
            if time.monotonic() > deadline:
                _stop(process)
                within = f"{timeout_s / 60:.0f} min" if timeout_s >= 120 else f"{timeout_s:.0f} s"
                raise BrainExtractionError(f"HD-BET did not finish within {within} (stopped); "
                                           f"{_ALTERNATIVE}") from None
    text = out.decode("utf-8", "replace") + "\n" + err.decode("utf-8", "replace")
    return process.returncode, text


def _failure(name: str, status: int, text: str) -> BrainExtractionError:
    """The one-line error of a failed HD-BET run: its last line (shortened), whether it failed offline."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {status}, no mask written"
    if len(last) > _QUOTE_CHARS:
        last = last[:_QUOTE_CHARS - 3].rstrip() + "..."
    offline = ("; offline, it cannot fetch its weights" if needed_the_network(text)
               else "")
    return BrainExtractionError(f"HD-BET could not extract the brain of {name} ({last}{offline}); {_ALTERNATIVE}")


def hd_bet_mask(reference: sitk.Image, device: str = "cpu", name: str = "the reference series",
                cancel: Optional[threading.Event] = None, timeout_s: float = HD_BET_TIMEOUT_S) -> sitk.Image:
    """HD-BET's brain mask of ``reference`` (run as its own program in a private temporary folder).

    One-line errors: HD-BET not installed; HD-BET failed (its last line, for example when its weights
    cannot be downloaded offline); HD-BET ran past ``timeout_s``. All name the alternative. A set
    ``cancel`` event (``threading.Event``) ends the run and raises ``Cancelled``.
    """
    program = _hd_bet_program()
    if program is None:
        raise BrainExtractionError(f"HD-BET is not installed ({install_hint()}; it downloads its weights on first "
                                   f"use); {_ALTERNATIVE}")
    folder = Path(tempfile.mkdtemp(prefix="mrisynth-hdbet-"))
    os.chmod(folder, 0o700)
    try:
        source, target = folder / "reference.nii.gz", folder / "brain.nii.gz"
        sitk.WriteImage(hd_bet_input(reference), str(source))
        status, text = _run(hd_bet_command(program, source, target, device), folder, timeout_s, cancel)
        mask = _mask_file(folder)
        if status != 0 or mask is None:
            raise _failure(name, status, text)
        return mask_on_grid(sitk.ReadImage(str(mask)), reference, f"HD-BET mask of {name}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
