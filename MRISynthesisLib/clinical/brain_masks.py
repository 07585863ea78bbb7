"""Brain extraction for a clinical study, with pluggable backends: a mask the user gives, or HD-BET.

* ``mask``: a brain mask file (or a Slicer label map / segmentation turned into one), in the
  reference series' physical space (it is resampled onto the reference grid, nearest neighbour);
* ``hd-bet``: HD-BET, the brain extraction of the BraTS preprocessing, when its package is
  installed. It runs as its own program on the reference series; it downloads its weights
  on first use, so offline it fails, and the error names the alternative.

No home-made fallback is offered: a brain extraction that silently leaves skull in, or cuts
tumour out, changes what the model synthesises, and none was measured well enough here to
be offered as a backend. Every mask is checked: it must overlap the reference and have the
volume of a brain.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .model_space import into_grid

__all__ = ["BACKENDS", "BrainExtractionError", "MIN_BRAIN_ML", "MAX_MASK_ML", "check_brain_mask", "mask_from_file",
           "mask_on_grid", "hd_bet_mask", "HD_BET_COMMAND"]

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


#: Where HD-BET (version 2) writes the mask of ``-o brain.nii.gz`` with ``--save_bet_mask``.
HD_BET_MASK_NAME = "brain_bet.nii.gz"


def _hd_bet_program() -> Optional[str]:
    return shutil.which(HD_BET_COMMAND)


def hd_bet_command(program: str, source: Path, target: Path, device: str) -> list:
    """HD-BET 2's command line: the mask only (no brain image), on ``cuda``, ``mps`` or ``cpu`` (there without
    test-time augmentation, which would take minutes)."""
    from ..core.devices import resolve_device

    kind = resolve_device(device).type  # HD-BET takes a torch device name, not "auto"
    command = [program, "-i", str(source), "-o", str(target), "-device", kind, "--save_bet_mask", "--no_bet_image"]
    return command + (["--disable_tta"] if kind == "cpu" else [])


def hd_bet_mask(reference: sitk.Image, device: str = "cpu", name: str = "the reference series") -> sitk.Image:
    """HD-BET's brain mask of ``reference`` (run as its own program in a private temporary folder).

    One-line errors: HD-BET not installed; HD-BET failed (its last line, for example when its weights
    cannot be downloaded offline). Both name the alternative.
    """
    program = _hd_bet_program()
    if program is None:
        raise BrainExtractionError(f"HD-BET is not installed (pip install hd-bet; it downloads its weights on first "
                                   f"use); {_ALTERNATIVE}")
    folder = Path(tempfile.mkdtemp(prefix="mrisynth-hdbet-"))
    os.chmod(folder, 0o700)
    try:
        source, target = folder / "reference.nii.gz", folder / "brain.nii.gz"
        sitk.WriteImage(reference, str(source))
        done = subprocess.run(hd_bet_command(program, source, target, device), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        mask = folder / HD_BET_MASK_NAME
        if done.returncode != 0 or not mask.is_file():
            text = done.stderr or done.stdout or ""
            lines = [line for line in text.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"exit status {done.returncode}, no mask written"
            offline = ("; offline, it cannot fetch its weights" if any(word in text.lower() for word in
                       ("urlopen", "connection", "download", "resolve host", "network")) else "")
            raise BrainExtractionError(f"HD-BET could not extract the brain of {name} ({last}{offline}); "
                                       f"{_ALTERNATIVE}")
        return mask_on_grid(sitk.ReadImage(str(mask)), reference, f"HD-BET mask of {name}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
