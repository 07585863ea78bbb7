"""Hostile inputs and careless use of the command line and the engine: nothing lost, nothing outside the
output folder, nothing silent.

Every test here reproduces one failure class of the hostile-input pass (issue 12) with real files,
real torch models and real ``mrisynth`` processes; the bundle loader's and the Slicer scene's
cases live in ``test_bundles_hostile.py`` and ``test_scene_hostile.py``.
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MRISynthesisLib.core import pipeline, stages
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.io import InputError, read_image
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.phantom import generate_case, write_case
from MRISynthesisLib.sequences import Sequence
from MRISynthesisLib.core.bundles import ModelBundle, save_bundle

CASE = "Phantom-00031"


# --------------------------------------------------------------------------- fixtures


def _tiny_generator(seed: int = 0) -> HFGANGenerator:
    torch.manual_seed(seed)
    return HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    refiner = Refiner(RefinerConfig(channels=4))
    with torch.no_grad():
        refiner.head.weight.normal_(0.0, 0.5)
    return save_bundle(tmp_path_factory.mktemp("bundle"), "tiny-hostile", _tiny_generator(), refiner)


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    """A complete small phantom case folder (module-wide, never written to: tests copy it)."""
    return write_case(generate_case(31, small=True), tmp_path_factory.mktemp("source"))


@pytest.fixture
def case_dir(tmp_path, phantom_case):
    """A private copy of the phantom case without its T1c (so T1c is what is missing)."""
    folder = tmp_path / CASE
    folder.mkdir()
    for path in phantom_case.iterdir():
        if "-t1c" not in path.name:
            (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` (hidden ones too) with its bytes: what must not change."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run_cli(args: list, capsys) -> tuple:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("mrisynth: error: ") and "\n" not in err, err
    for word in words:
        assert word.lower() in err.lower(), err


def _write_array(array: np.ndarray, path: Path, like: sitk.Image = None) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    if like is not None:
        image.CopyInformation(like)
    sitk.WriteImage(image, str(path))
    return path


# --------------------------------------------------------------------------- 1. inputs are never written


def test_output_folder_equal_to_case_folder_never_replaces_an_acquired_input(case_dir, bundle_dir, capsys):
    before = _snapshot(case_dir)
    code, err = _run_cli(["synthesize", case_dir, "-o", case_dir, "--targets", "t1n", "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, f"{CASE}-t1n.nii.gz", "input")
    assert _snapshot(case_dir) == before


def test_overwrite_does_not_allow_replacing_an_input_either(case_dir, bundle_dir, capsys):
    before = _snapshot(case_dir)
    code, err = _run_cli(["synthesize", case_dir, "-o", case_dir, "--targets", "t2w", "--overwrite",
                          "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, f"{CASE}-t2w.nii.gz", "input")
    assert _snapshot(case_dir) == before


def test_output_folder_reached_through_a_link_is_still_the_input_folder(tmp_path, case_dir, bundle_dir, capsys):
    link = tmp_path / "link-to-case"
    link.symlink_to(case_dir, target_is_directory=True)
    before = _snapshot(case_dir)
    code, err = _run_cli(["synthesize", case_dir, "-o", link, "--targets", "t1n", "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, "input")
    assert _snapshot(case_dir) == before


def test_named_inputs_with_a_case_name_that_matches_them_are_not_replaced(case_dir, bundle_dir, capsys):
    before = _snapshot(case_dir)
    t2w = case_dir / f"{CASE}-t2w.nii.gz"
    code, err = _run_cli(["synthesize", "--input", f"t1n={case_dir / f'{CASE}-t1n.nii.gz'}", "--input",
                          f"t2w={t2w}", "--case", CASE, "--targets", "t2w,t1c", "-o", case_dir,
                          "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(t2w), "input")
    assert _snapshot(case_dir) == before


def test_validate_into_the_case_folder_is_refused_and_changes_nothing(tmp_path, phantom_case, bundle_dir, capsys):
    folder = tmp_path / "complete"
    folder.mkdir()
    for path in phantom_case.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    before = _snapshot(folder)
    code, err = _run_cli(["validate", folder, "-o", folder, "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, "input")
    assert _snapshot(folder) == before


def test_output_folder_inside_a_dicom_input_folder_is_refused(tmp_path, case_dir, bundle_dir,
                                                              write_dicom_series, capsys):
    dicom = tmp_path / "t2-dicom"
    write_dicom_series(read_image(case_dir / f"{CASE}-t2w.nii.gz"), dicom, description="T2")
    before = _snapshot(dicom)
    code, err = _run_cli(["synthesize", "--input", f"t1n={case_dir / f'{CASE}-t1n.nii.gz'}", "--input",
                          f"t2w={dicom}", "-o", dicom / "out", "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(dicom))
    assert _snapshot(dicom) == before and not (dicom / "out").exists()


def test_writing_the_missing_sequences_into_the_case_folder_keeps_the_inputs(case_dir, bundle_dir, capsys):
    before = _snapshot(case_dir)
    code, err = _run_cli(["synthesize", case_dir, "-o", case_dir, "--model", bundle_dir, "--device", "cpu"], capsys)
    assert code == 0, err
    after = _snapshot(case_dir)
    assert all(after[name] == content for name, content in before.items())
    assert f"{CASE}-t1c.nii.gz" in after


# --------------------------------------------------------------------------- 2. nothing outside the output folder


@pytest.mark.parametrize("case_name", ["../../x", "../x", "sub/x", "{absolute}", "..", ".hidden", "a\\b"])
def test_case_names_that_would_leave_the_output_folder_are_refused(tmp_path, case_dir, bundle_dir, capsys,
                                                                   case_name):
    work = tmp_path / "a" / "b"
    out = work / "out"
    out.mkdir(parents=True)
    case_name = case_name.format(absolute=tmp_path / "absolute-x")
    before = _snapshot(tmp_path)
    code, err = _run_cli(["synthesize", case_dir, "-o", out, "--case", case_name, "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, "--case", "case name")
    assert _snapshot(tmp_path) == before


def test_report_lists_only_files_that_exist(tmp_path, case_dir, bundle_dir, capsys):
    out = tmp_path / "out"
    code, err = _run_cli(["synthesize", case_dir, "-o", out, "--case", "renamed", "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads((out / "renamed-report.json").read_text())
    listed = [Path(p) for target in report["targets"].values() for p in target["outputs"].values()]
    assert listed and all(p.is_file() and p.parent == out for p in listed)


# --------------------------------------------------------------------------- 3. silent garbage


def _last_one_channel_conv(generator: HFGANGenerator) -> torch.nn.Conv2d:
    convs = [m for m in generator.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1]
    return convs[-1]


@pytest.mark.parametrize("broken, words", [("nan", ["NaN or Inf", "T1c"]), ("empty", ["empty T1c"])])
def test_a_network_that_outputs_no_image_stops_the_run(phantom_case, broken, words):
    generator = _tiny_generator()
    with torch.no_grad():
        conv = _last_one_channel_conv(generator)
        conv.weight.zero_()
        conv.bias.fill_(float("nan") if broken == "nan" else -5.0)
    images = {s: read_image(phantom_case / f"{CASE}-{s.value}.nii.gz") for s in (Sequence.T1N, Sequence.T2W)}
    with pytest.raises(stages.ModelOutputError) as error:
        pipeline.synthesize(images, ModelBundle("broken", generator), targets=["t1c"], device="cpu")
    for word in words:
        assert word in str(error.value)


def test_z_scored_input_is_refused_with_its_file_name(tmp_path, case_dir, bundle_dir, capsys):
    t2w = case_dir / f"{CASE}-t2w.nii.gz"
    image = sitk.ReadImage(str(t2w))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    brain = array > 0
    array[brain] = (array[brain] - array[brain].mean()) / array[brain].std()
    _write_array(array, t2w, like=image)
    code, err = _run_cli(["synthesize", case_dir, "-o", tmp_path / "out", "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(t2w), "negative", "z-scored")
    assert not (tmp_path / "out").exists()


def test_z_scored_image_is_refused_by_the_engine_too(phantom_case):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    scored = sitk.GetImageFromArray(array - np.median(array[array > 0]))
    scored.CopyInformation(image)
    with pytest.raises(InputError, match="T1 input.*negative"):
        pipeline.synthesize({"t1n": scored}, ModelBundle("tiny", _tiny_generator()), targets=["t1c"], device="cpu")


def test_only_negative_input_is_refused_naming_it(tmp_path, make_volume):
    image = make_volume()
    negative = sitk.GetImageFromArray(-sitk.GetArrayFromImage(image))
    path = tmp_path / "negative-t1n.nii.gz"
    sitk.WriteImage(negative, str(path))
    with pytest.raises(InputError, match="no positive voxel") as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_a_little_interpolation_ringing_below_zero_is_accepted(tmp_path, make_volume):
    array = sitk.GetArrayFromImage(make_volume(size=(20, 20, 20)))
    array.flat[:10] = -3.0  # 10 of 8000 voxels: well under the 1 % limit
    path = _write_array(array, tmp_path / "ringing.nii.gz")
    assert read_image(path).GetSize() == (20, 20, 20)


def test_the_same_file_given_twice_is_refused(tmp_path, case_dir, bundle_dir, capsys):
    t1n = case_dir / f"{CASE}-t1n.nii.gz"
    code, err = _run_cli(["synthesize", "--input", f"t1n={t1n}", "--input", f"t2w={t1n}", "-o", tmp_path / "out",
                          "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(t1n), "T1", "T2")
    assert not (tmp_path / "out").exists()


def test_a_copy_of_one_scan_given_for_two_sequences_is_refused(tmp_path, case_dir, bundle_dir, capsys):
    t1n = case_dir / f"{CASE}-t1n.nii.gz"
    copy = tmp_path / "t2-really-t1.nii.gz"
    copy.write_bytes(t1n.read_bytes())
    hardlink = tmp_path / "hardlink.nii.gz"
    os.link(t1n, hardlink)
    code, err = _run_cli(["synthesize", "--input", f"t1n={t1n}", "--input", f"t2w={copy}", "-o", tmp_path / "out",
                          "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(copy), "exactly the voxels")
    code, err = _run_cli(["synthesize", "--input", f"t1n={t1n}", "--input", f"t2f={hardlink}",
                          "-o", tmp_path / "out", "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(hardlink))
    assert not (tmp_path / "out").exists()


def test_the_engine_refuses_one_image_for_two_sequences(phantom_case):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    with pytest.raises(InputError, match="T2 input.*T1 input"):
        pipeline.synthesize({"t1n": image, "t2w": sitk.Image(image)}, ModelBundle("tiny", _tiny_generator()),
                            targets=["t1c"], device="cpu")


def test_a_synthetic_output_fed_back_as_acquired_is_refused(tmp_path, case_dir, bundle_dir, capsys):
    out = tmp_path / "out"
    code, err = _run_cli(["synthesize", case_dir, "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)
    assert code == 0, err
    synthetic = out / f"{CASE}-t1c.nii.gz"
    code, err = _run_cli(["synthesize", "--input", f"t1n={case_dir / f'{CASE}-t1n.nii.gz'}", "--input",
                          f"t1c={synthetic}", "--targets", "t2w", "-o", tmp_path / "again", "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(synthetic), "synthetic")
    (case_dir / synthetic.name).write_bytes(synthetic.read_bytes())  # a synthetic T1c slipped into the case
    code, err = _run_cli(["synthesize", case_dir, "--targets", "t2w", "-o", tmp_path / "third", "--model",
                         bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(case_dir / synthetic.name), "synthetic")
    assert not (tmp_path / "again").exists() and not (tmp_path / "third").exists()


def test_the_engine_refuses_a_synthetic_image_read_back_from_disk(tmp_path, case_dir, bundle_dir, capsys):
    out = tmp_path / "out"
    assert _run_cli(["synthesize", case_dir, "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)[0] == 0
    synthetic = sitk.ReadImage(str(out / f"{CASE}-t1c.nii.gz"))
    assert synthetic.GetMetaData("descrip").startswith("SYNTHETIC")
    with pytest.raises(InputError, match="T1 contrast-enhanced input: is a synthetic volume"):
        pipeline.synthesize({"t1c": synthetic}, ModelBundle("tiny", _tiny_generator()), targets=["t2w"],
                            device="cpu")


# --------------------------------------------------------------------------- 4. sizes before memory


def _nifti_header_only(path: Path, shape: tuple, dtype=np.uint8) -> Path:
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_data_offset(352)
    header.set_qform(np.eye(4), code=1)
    path.write_bytes(header.binaryblock + b"\0" * 4)
    return path


_PEAK_MEMORY_SCRIPT = """
import resource, sys
from MRISynthesisLib.core.io import read_image, InputError
try:
    read_image(sys.argv[1])
    print("read")
except InputError as error:
    print("refused:", error)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _read_in_subprocess(path: Path) -> tuple:
    """(first output line, peak memory rise in MB) of ``read_image(path)`` in a fresh process.

    The rise is measured against the same process not reading: a child's ``ru_maxrss`` starts
    from what it inherited, so only the difference says what reading cost.
    """
    idle = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT.replace("read_image(sys.argv[1])", "pass"),
                           str(path)], capture_output=True, text=True, check=True)
    completed = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT, str(path)], capture_output=True,
                               text=True, timeout=120, check=True)
    first, peak = completed.stdout.splitlines()
    return first, (int(peak) - int(idle.stdout.splitlines()[-1])) / 1024


@pytest.mark.parametrize("shape", [(2000, 2000, 400), (30000, 30000, 2), (5000, 10, 10)])
def test_a_header_that_declares_a_huge_image_is_refused_before_allocating(tmp_path, shape):
    path = _nifti_header_only(tmp_path / "huge.nii", shape)
    first, rise_mb = _read_in_subprocess(path)
    assert first.startswith("refused:") and str(path) in first and "exceeds" in first, first
    assert rise_mb < 200, f"reading the header raised peak memory by {rise_mb:.0f} MB"


def test_a_gzipped_header_that_declares_more_voxels_than_it_holds_is_refused(tmp_path):
    plain = _nifti_header_only(tmp_path / "plain.nii", (512, 512, 400), np.float32)
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(plain.read_bytes() + b"\1" * 4096))
    with pytest.raises(InputError, match="truncated") as error:
        read_image(path)
    assert str(path) in str(error.value)


# --------------------------------------------------------------------------- 5. interrupted runs, earlier runs


def _signal_when_writing(process: subprocess.Popen, folder: Path, signum: int) -> None:
    """Stop the process as soon as a staged file exists, send ``signum``, let it continue."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any(folder.glob(".mrisynth-staging-*/*")):
            process.send_signal(signal.SIGSTOP)
            process.send_signal(signum)
            process.send_signal(signal.SIGCONT)
            return
        time.sleep(0.0005)


def _synthesize_interrupted(case_dir: Path, bundle_dir: Path, out: Path, signum: int) -> tuple:
    """(exit code, stderr) of ``mrisynth synthesize`` sent ``signum`` as soon as it writes its first file."""
    process = subprocess.Popen([sys.executable, "-m", "MRISynthesisLib.cli", "synthesize", str(case_dir), "-o",
                                str(out), "--model", str(bundle_dir), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_signal_when_writing, args=(process, out, signum))
    watcher.start()
    _, err = process.communicate(timeout=600)
    watcher.join()
    return process.returncode, err


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_writing_leaves_nothing_behind(tmp_path, case_dir, bundle_dir, signum, code):
    out = tmp_path / "out"
    out.mkdir()
    returncode, err = _synthesize_interrupted(case_dir, bundle_dir, out, signum)
    assert returncode == code, err
    assert list(out.iterdir()) == [], "an interrupted run leaves the output folder as it was"


def test_a_second_run_into_the_same_folder_is_refused_without_overwrite(tmp_path, case_dir, bundle_dir, capsys):
    out = tmp_path / "out"
    assert _run_cli(["synthesize", case_dir, "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)[0] == 0
    before = _snapshot(out)
    code, err = _run_cli(["synthesize", case_dir, "-o", out, "--no-tumour-maps", "--model", bundle_dir,
                          "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, "earlier run", "--overwrite")
    assert _snapshot(out) == before


def test_overwrite_replaces_the_earlier_set_of_that_case_as_a_whole(tmp_path, case_dir, bundle_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Other-case-t1c.nii.gz").write_bytes(b"another case's result")
    (out / "notes.txt").write_text("mine")
    assert _run_cli(["synthesize", case_dir, "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)[0] == 0
    assert (out / f"{CASE}-t1c-tumor-map.nii.gz").is_file()
    code, err = _run_cli(["synthesize", case_dir, "-o", out, "--no-tumour-maps", "--overwrite", "--model",
                          bundle_dir, "--device", "cpu"], capsys)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert f"{CASE}-t1c-tumor-map.nii.gz" not in names, "the earlier run's tumour map must not stay beside"
    assert {"Other-case-t1c.nii.gz", "notes.txt", f"{CASE}-t1c.nii.gz", f"{CASE}-report.json"} <= names
    assert not [name for name in names if name.startswith(".")]
    report = json.loads((out / f"{CASE}-report.json").read_text())
    listed = {Path(p).name for p in report["targets"]["t1c"]["outputs"].values()}
    assert listed == {name for name in names if name.startswith(f"{CASE}-t1c")}


def test_evaluate_never_replaces_a_table_it_did_not_write(tmp_path, phantom_case, bundle_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / phantom_case.name).symlink_to(phantom_case, target_is_directory=True)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "evaluation.csv").write_text("somebody's own table\n")
    code, err = _run_cli(["evaluate", "--data", data, "-o", out, "--model", bundle_dir, "--device", "cpu",
                          "--targets", "t1c", "--overwrite"], capsys)
    _assert_one_line_error(code, err, "evaluation.csv", "not written by MRISynthesis")
    assert (out / "evaluation.csv").read_text() == "somebody's own table\n"


def test_evaluate_replaces_an_earlier_evaluation_only_with_overwrite(tmp_path, phantom_case, bundle_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / phantom_case.name).symlink_to(phantom_case, target_is_directory=True)
    out = tmp_path / "eval"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "notes.nii.gz").write_bytes(b"not ours")
    arguments = ["evaluate", "--data", data, "-o", out, "--model", bundle_dir, "--device", "cpu", "--targets", "t1c"]
    assert _run_cli(arguments + ["--save-volumes"], capsys)[0] == 0
    volumes = sorted(p.name for p in out.glob("*.nii.gz"))
    assert volumes, "--save-volumes wrote the synthetic volumes"
    before = _snapshot(out)
    code, err = _run_cli(arguments, capsys)
    _assert_one_line_error(code, err, "earlier run", "--overwrite")
    assert _snapshot(out) == before
    code, err = _run_cli(arguments + ["--overwrite"], capsys)
    assert code == 0, err
    assert not list(out.glob("*.nii.gz")), "the earlier evaluation's volumes belong to its set and go with it"
    assert (out / "keep" / "notes.nii.gz").read_bytes() == b"not ours"


# --------------------------------------------------------------------------- 6. geometry the file does not state


def _raw_nifti(path: Path, pixdim=(1.0, 1.0, 1.0), sform=None) -> Path:
    """A NIfTI file written byte by byte, so that no library repairs its header on the way out."""
    data = (np.arange(8 * 9 * 10, dtype=np.float32) + 1.0).reshape(10, 9, 8).T
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(data.shape)
    header.set_data_offset(352)
    if sform is not None:
        header.set_sform(np.asarray(sform, dtype=float), code=1)
    else:
        header.set_qform(np.eye(4), code=1)
    block = bytearray(header.binaryblock)
    struct.pack_into("<3f", block, 80, *pixdim)  # pixdim[1:4]
    path.write_bytes(bytes(block) + b"\0" * 4 + data.tobytes(order="F"))
    return path


@pytest.mark.parametrize("pixdim", [(0.0, 0.0, 0.0), (1.0, 0.0, 1.0), (1.0, 1.0, -2.0), (1.0, float("nan"), 1.0)])
def test_a_nifti_without_a_voxel_size_is_refused(tmp_path, pixdim):
    path = _raw_nifti(tmp_path / "no-size.nii", pixdim=pixdim)
    with pytest.raises(InputError, match="voxel size") as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("columns, words", [
    ([[1, 0, 0], [1, 0, 0], [0, 0, 1]], ["axes 1 and 2", "parallel"]),
    ([[1, 0, 0], [0, 1, 0], [0, 0, 0]], ["axis 3", "zero length"]),
    ([[1, 0, 0], [0.5, 1, 0], [0, 0, 1]], ["axes 1 and 2", "sheared"]),
])
def test_a_degenerate_orientation_says_what_is_wrong(tmp_path, columns, words):
    sform = np.eye(4)
    sform[:3, :3] = np.asarray(columns, dtype=float).T
    path = _raw_nifti(tmp_path / "degenerate.nii", sform=sform)
    with pytest.raises(InputError) as error:
        read_image(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, message


def test_an_nrrd_with_a_zero_space_direction_is_refused(tmp_path):
    path = tmp_path / "flat.nrrd"
    data = (np.arange(8 * 9 * 10, dtype=np.float32) + 1.0)
    header = ("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 9 10\n"
              "space directions: (1,0,0) (0,0,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
              "encoding: raw\nspace origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + data.tobytes())
    with pytest.raises(InputError) as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_well_formed_image_passes_every_header_check(tmp_path, make_volume, rotation):
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(make_volume(spacing=(0.5, 0.9, 3.0), direction=rotation(20)), str(path))
    assert read_image(path).GetSpacing() == pytest.approx((0.5, 0.9, 3.0))


# --------------------------------------------------------------------------- 7. hangs and unclear errors


def test_a_fifo_given_as_input_fails_at_once_instead_of_hanging(tmp_path):
    fifo = tmp_path / "pipe-t1n.nii.gz"
    os.mkfifo(fifo)
    completed = subprocess.run([sys.executable, "-m", "MRISynthesisLib.cli", "synthesize", "--input",
                                f"t1n={fifo}", "-o", str(tmp_path / "out")], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 2
    assert str(fifo) in completed.stderr and "FIFO" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_device_files_and_empty_files_are_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="device"):
        read_image("/dev/zero")
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(InputError, match="empty file"):
        read_image(empty)
    link = tmp_path / "dangling.nii.gz"
    link.symlink_to(tmp_path / "nowhere.nii.gz")
    with pytest.raises(InputError, match="broken link"):
        read_image(link)


@pytest.mark.parametrize("arguments, words", [
    (dict(images=None), ["images must be a mapping", "NoneType"]),
    (dict(images=[]), ["images must be a mapping", "list"]),
    (dict(cancel="yes"), ["cancel must be a threading.Event", "str"]),
    (dict(targets="t1c"), ["targets must be a list", "'t1c'"]),
    (dict(targets=5), ["targets must be a list"]),
    (dict(progress="bar"), ["progress must be a callable"]),
    (dict(device=123), ["device must be"]),
    (dict(ground_truth=[1]), ["ground_truth must be a mapping"]),
    (dict(ground_truth={"t2f": "x"}), ["ground_truth['t2f']"]),
    (dict(label="x"), ["label must be"]),
    (dict(bundle={}), ["bundle must be"]),
])
def test_the_python_api_names_wrong_argument_types(phantom_case, arguments, words):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    call = dict(images={"t1n": image}, bundle=ModelBundle("tiny", _tiny_generator()), device="cpu")
    call.update(arguments)
    with pytest.raises(TypeError) as error:
        pipeline.synthesize(**call)
    for word in words:
        assert word in str(error.value)


def test_an_image_of_the_wrong_type_is_a_type_error_naming_the_sequence():
    with pytest.raises(TypeError, match="T2-FLAIR input: expected a SimpleITK image, got ndarray"):
        pipeline.synthesize({"flair": np.zeros((4, 4, 4))}, ModelBundle("tiny", _tiny_generator()), device="cpu")


# --------------------------------------------------------------------------- a second hostile pass (new variants)


def test_overwrite_never_deletes_an_acquired_scan_that_is_not_an_input(tmp_path, phantom_case, bundle_dir, capsys):
    folder = tmp_path / "c4"
    folder.mkdir()
    for sequence in ("t1n", "t1c", "t2w"):
        name = f"{CASE}-{sequence}.nii.gz"
        (folder / name).write_bytes((phantom_case / name).read_bytes())
    before = _snapshot(folder)
    code, err = _run_cli(["synthesize", "--input", f"t1n={folder / f'{CASE}-t1n.nii.gz'}", "--input",
                          f"t2w={folder / f'{CASE}-t2w.nii.gz'}", "--targets", "t2f", "-o", folder, "--overwrite",
                          "--model", bundle_dir, "--device", "cpu"], capsys)
    assert code == 0, err
    after = _snapshot(folder)
    assert all(after[name] == content for name, content in before.items()), "acquired T1c must survive"


def test_an_acquired_scan_with_an_output_name_is_never_replaced(tmp_path, case_dir, phantom_case, bundle_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    acquired = out / f"{CASE}-t1c.nii.gz"
    acquired.write_bytes((phantom_case / acquired.name).read_bytes())
    code, err = _run_cli(["synthesize", case_dir, "-o", out, "--overwrite", "--model", bundle_dir, "--device",
                          "cpu"], capsys)
    _assert_one_line_error(code, err, str(acquired), "not written by MRISynthesis")
    assert acquired.read_bytes() == (phantom_case / acquired.name).read_bytes()


def test_the_demo_keeps_a_case_that_shares_its_folder(tmp_path, phantom_case, bundle_dir, capsys):
    folder = tmp_path / "d1"
    folder.mkdir()
    for path in phantom_case.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    before = _snapshot(folder)
    code, err = _run_cli(["demo", "--small", "-o", folder, "--model", bundle_dir, "--device", "cpu"], capsys)
    assert code == 0, err
    after = _snapshot(folder)
    assert all(after.get(name) == content for name, content in before.items())
    code, err = _run_cli(["demo", "--small", "-o", folder, "--model", bundle_dir, "--device", "cpu",
                          "--missing", "t2w"], capsys)
    assert code == 0, err
    names = {p.name for p in folder.iterdir()}
    assert not [n for n in names if "-t1c-" in n and n.startswith("Phantom-") and n not in before], \
        "a second demo replaces the first demo's set"
    assert all((folder / name).read_bytes() == content for name, content in before.items())


def _nrrd(path: Path, sizes=(8, 9, 10), fields: str = "", data: bytes = None, type_name: str = "float") -> Path:
    header = (f"NRRD0004\ntype: {type_name}\ndimension: {len(sizes)}\nsizes: {' '.join(map(str, sizes))}\n"
              "endian: little\n" + fields)
    if data is None:
        data = (np.arange(int(np.prod(sizes)), dtype=np.float32) + 1.0).tobytes()
    path.write_bytes(header.encode() + ("\n" if "data file" not in fields else "") .encode() + data)
    return path


SPACE = "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"


@pytest.mark.parametrize("data_file, words", [("/dev/zero", ["device"]), ("/dev/urandom", ["device"]),
                                              ("missing.raw", ["no such file"])])
def test_an_nrrd_whose_data_file_is_not_a_file_is_refused(tmp_path, data_file, words):
    path = tmp_path / "detached.nhdr"
    path.write_text(f"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 64 64 64\nencoding: raw\n{SPACE}"
                    f"data file: {data_file}\n")
    with pytest.raises(InputError) as error:
        read_image(path)
    for word in words:
        assert word in str(error.value)
    assert str(path) in str(error.value)


def test_a_data_file_that_is_a_fifo_fails_at_once(tmp_path):
    fifo = tmp_path / "data.raw"
    os.mkfifo(fifo)
    for header, text in (("pipe.nhdr", f"NRRD0004\ntype: float\ndimension: 3\nsizes: 8 9 10\nencoding: raw\n{SPACE}"
                                       f"data file: {fifo.name}\n"),
                         ("pipe.mhd", "ObjectType = Image\nNDims = 3\nDimSize = 8 9 10\nElementSpacing = 1 1 1\n"
                                      f"ElementType = MET_FLOAT\nElementDataFile = {fifo.name}\n")):
        (tmp_path / header).write_text(text)
        completed = subprocess.run([sys.executable, "-c", "import sys; from MRISynthesisLib.core.io import read_image\n"
                                    "try: read_image(sys.argv[1])\nexcept Exception as e: print(e)",
                                    str(tmp_path / header)], capture_output=True, text=True, timeout=60)
        assert "FIFO" in completed.stdout, completed


def test_headers_that_declare_more_than_their_data_file_holds_are_refused_without_memory(tmp_path):
    (tmp_path / "small.raw").write_bytes(b"\1" * 2_000_000)
    (tmp_path / "big.nhdr").write_text(f"NRRD0004\ntype: float\ndimension: 3\nsizes: 512 512 400\nencoding: raw\n"
                                       f"{SPACE}data file: small.raw\n")
    (tmp_path / "big.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 512 512 400\nElementSpacing = 1 1 1\n"
                                      "ElementType = MET_FLOAT\nElementDataFile = small.raw\n")
    (tmp_path / "bomb.raw.gz").write_bytes(gzip.compress(b"\0" * 50_000_000))
    (tmp_path / "bomb.nhdr").write_text(f"NRRD0004\ntype: double\ndimension: 3\nsizes: 640 640 640\nencoding: gzip\n"
                                        f"{SPACE}data file: bomb.raw.gz\n")
    for name, word in (("big.nhdr", "truncated"), ("big.mhd", "truncated"), ("bomb.nhdr", "GiB")):
        first, rise_mb = _read_in_subprocess(tmp_path / name)
        assert first.startswith("refused:") and word in first and name in first, first
        assert rise_mb < 200, f"{name}: reading raised peak memory by {rise_mb:.0f} MB"


@pytest.mark.parametrize("fields, words", [
    ("", ["no valid voxel size"]),
    ("space: left-posterior-superior\nspace directions: (2.5,0,0) (0,2.5,0) none\nspace origin: (0,0,0)\n",
     ["2 of 3 axes"]),
    ("spacings: 2.5 2.5 nan\n", ["no valid voxel size"]),
    ("space: left-posterior-superior\nspace directions: (1,0,0) (0,nan,0) (0,0,1)\nspace origin: (0,0,0)\n",
     ["NaN"]),
])
def test_an_nrrd_that_does_not_state_its_voxel_size_is_refused(tmp_path, fields, words):
    path = _nrrd(tmp_path / "nogeometry.nrrd", fields="encoding: raw\n" + fields)
    with pytest.raises(InputError) as error:
        read_image(path)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_a_metaimage_without_element_spacing_is_refused(tmp_path):
    data = (np.arange(8 * 9 * 10, dtype=np.float32) + 1.0).tobytes()
    path = tmp_path / "nogeometry.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 8 9 10\nElementType = MET_FLOAT\n"
                     b"ElementDataFile = LOCAL\n" + data)
    with pytest.raises(InputError, match="ElementSpacing"):
        read_image(path)


def test_a_nifti_whose_sform_and_pixdim_disagree_or_whose_qform_is_not_finite_is_refused(tmp_path):
    sform = np.diag([250.0, 1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="sform states voxel size"):
        read_image(_raw_nifti(tmp_path / "disagree.nii", sform=sform))
    path = _raw_nifti(tmp_path / "qform.nii")
    block = bytearray(path.read_bytes())
    struct.pack_into("<h", block, 252, 1)  # qform_code
    struct.pack_into("<f", block, 268, float("inf"))  # qoffset_x
    path.write_bytes(bytes(block))
    with pytest.raises(InputError, match="qform"):
        read_image(path)


def test_a_nifti_with_its_data_offset_inside_the_header_names_the_file(tmp_path):
    path = _raw_nifti(tmp_path / "offset.nii")
    block = bytearray(path.read_bytes())
    struct.pack_into("<f", block, 108, 300.0)  # vox_offset
    path.write_bytes(bytes(block))
    with pytest.raises(InputError, match="vox_offset 300") as error:
        read_image(path)
    assert str(path) in str(error.value)


def _disguises(image: sitk.Image) -> dict:
    scaled = sitk.Cast(image, sitk.sitkFloat32) * 1.001
    scaled.CopyInformation(image)
    moved = sitk.Image(image)
    moved.SetSpacing([s + 0.0005 for s in image.GetSpacing()])
    return {"scaled": scaled, "spacing": moved, "permuted": sitk.PermuteAxes(image, [1, 0, 2]),
            "flipped": sitk.Flip(image, [True, False, False])}


@pytest.mark.parametrize("disguise", ["scaled", "spacing", "permuted", "flipped"])
def test_one_scan_in_disguise_given_for_two_sequences_is_refused(phantom_case, disguise):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    copy = _disguises(image)[disguise]
    with pytest.raises(InputError, match="T2 input.*T1 input"):
        pipeline.synthesize({"t1n": image, "t2w": copy}, ModelBundle("tiny", _tiny_generator()), targets=["t1c"],
                            device="cpu")


def test_different_sequences_of_one_case_are_not_taken_for_duplicates(phantom_case):
    from MRISynthesisLib.core.input_checks import find_duplicate

    images = {s: read_image(phantom_case / f"{CASE}-{s}.nii.gz") for s in ("t1n", "t1c", "t2w", "t2f")}
    assert find_duplicate(images) is None


@pytest.mark.parametrize("kind", ["label map", "brain mask"])
def test_a_label_map_or_mask_given_as_a_sequence_is_refused(tmp_path, case_dir, bundle_dir, capsys, kind):
    label = case_dir / f"{CASE}-seg.nii.gz"
    path = label
    if kind == "brain mask":
        image = sitk.ReadImage(str(case_dir / f"{CASE}-t1n.nii.gz"))
        path = tmp_path / "mask.nii.gz"
        sitk.WriteImage(sitk.Cast(image > 0, sitk.sitkUInt8), str(path))
    code, err = _run_cli(["synthesize", "--input", f"t1n={case_dir / f'{CASE}-t1n.nii.gz'}", "--input",
                          f"t2w={path}", "-o", tmp_path / "out", "--model", bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, str(path), "distinct values", "not an MR image")


def test_a_synthetic_dicom_series_is_refused_as_input(tmp_path, phantom_case, write_dicom_series):
    image = read_image(phantom_case / f"{CASE}-t2f.nii.gz")
    folder = tmp_path / "synthetic-flair"
    write_dicom_series(image, folder, description="SYNTHETIC FLAIR from T1+T2 by MRISynthesis demo")
    with pytest.raises(InputError, match="synthetic volume"):
        pipeline.synthesize({"t2f": read_image(folder)}, ModelBundle("tiny", _tiny_generator()), targets=["t1c"],
                            device="cpu")


def test_a_case_name_too_long_for_file_names_is_refused_before_any_work(tmp_path, case_dir, bundle_dir, capsys):
    started = time.perf_counter()
    code, err = _run_cli(["synthesize", case_dir, "-o", tmp_path / "out", "--case", "A" * 235, "--model",
                          bundle_dir, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, "--case", "at most")
    assert time.perf_counter() - started < 5 and not (tmp_path / "out").exists()


def test_signals_during_the_final_move_wait_until_it_is_done():
    from MRISynthesisLib.core.result_files import deferred_signals

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            sender.start()
            sender.join()
            time.sleep(0.05)
            reached.append("the move finished")
    assert reached == ["the move finished"]


def test_an_interrupted_run_removes_the_output_folder_it_created(tmp_path, case_dir, bundle_dir):
    out = tmp_path / "new-out"
    returncode, err = _synthesize_interrupted(case_dir, bundle_dir, out, signal.SIGTERM)
    assert returncode == 143, err
    assert not out.exists()


# --------------------------------------------------------------------------- a third hostile pass


def test_evaluate_overwrite_leaves_another_runs_volumes_alone(tmp_path, case_dir, phantom_case, bundle_dir, capsys):
    out = tmp_path / "shared"
    assert _run_cli(["synthesize", case_dir, "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)[0] == 0
    synthesized = _snapshot(out)
    data = tmp_path / "data"
    data.mkdir()
    (data / phantom_case.name).symlink_to(phantom_case, target_is_directory=True)
    arguments = ["evaluate", "--data", data, "-o", out, "--model", bundle_dir, "--device", "cpu", "--targets", "t1n"]
    assert _run_cli(arguments, capsys)[0] == 0, "another run's volumes are not an earlier evaluation"
    code, err = _run_cli(arguments + ["--overwrite", "--save-volumes"], capsys)
    assert code == 0, err
    after = _snapshot(out)
    assert all(after.get(name) == content for name, content in synthesized.items())
    code, err = _run_cli(arguments + ["--overwrite"], capsys)
    assert code == 0, err
    final = {p.name for p in out.iterdir()}
    assert set(synthesized) <= final, "the synthesize set survives"
    assert not [n for n in final if n.startswith(f"{CASE}-t1n-")], "the evaluation's own volumes went with its set"


def test_the_demo_leaves_another_cases_results_alone(tmp_path, case_dir, bundle_dir, capsys):
    out = tmp_path / "shared"
    assert _run_cli(["synthesize", case_dir, "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)[0] == 0
    synthesized = _snapshot(out)
    code, err = _run_cli(["demo", "--small", "-o", out, "--model", bundle_dir, "--device", "cpu"], capsys)
    assert code == 0, err
    after = _snapshot(out)
    assert all(after.get(name) == content for name, content in synthesized.items())


def test_a_nifti_that_states_no_orientation_or_two_is_refused(tmp_path):
    path = _raw_nifti(tmp_path / "codes.nii")
    block = bytearray(path.read_bytes())
    struct.pack_into("<h", block, 252, 0)  # qform_code
    struct.pack_into("<h", block, 254, 0)  # sform_code
    path.write_bytes(bytes(block))
    with pytest.raises(InputError, match="states no orientation or position") as error:
        read_image(path)
    assert str(path) in str(error.value)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    path = _raw_nifti(tmp_path / "two.nii", sform=flipped)
    block = bytearray(path.read_bytes())
    struct.pack_into("<h", block, 252, 1)  # a qform (identity) beside the flipped sform
    path.write_bytes(bytes(block))
    with pytest.raises(InputError, match="qform and the sform state different"):
        read_image(path)


def test_a_dicom_series_with_missing_slices_is_refused(tmp_path, phantom_case, write_dicom_series):
    folder = tmp_path / "gap"
    paths = write_dicom_series(read_image(phantom_case / f"{CASE}-t1n.nii.gz"), folder, description="T1 gap")
    for path in paths[30:33]:
        path.unlink()
    with pytest.raises(InputError, match="missing or unevenly spaced") as error:
        read_image(folder)
    assert str(folder) in str(error.value)


def test_a_complete_dicom_series_still_reads_onto_its_grid(tmp_path, phantom_case, write_dicom_series):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    folder = tmp_path / "complete"
    write_dicom_series(image, folder, description="T1 complete")
    assert read_image(folder).GetSpacing() == pytest.approx(image.GetSpacing(), abs=1e-4)


def _like(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


@pytest.mark.parametrize("kind", ["inverted", "square root", "shifted"])
def test_more_disguises_of_one_scan_are_refused(phantom_case, kind):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    brain = array > 0
    if kind == "inverted":
        copy = np.where(brain, array.max() + 1.0 - array, 0.0)
    elif kind == "square root":
        copy = np.sqrt(array)
    else:
        copy = np.roll(array, 1, axis=2)
    with pytest.raises(InputError, match="T2 input.*T1 input"):
        pipeline.synthesize({"t1n": image, "t2w": _like(image, copy.astype(np.float32))},
                            ModelBundle("tiny", _tiny_generator()), targets=["t1c"], device="cpu")


@pytest.mark.parametrize("kind, words", [("parcellation", "same whole number"), ("noisy mask", "almost constant")])
def test_label_maps_with_many_labels_and_noisy_masks_are_refused(phantom_case, kind, words):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    array = sitk.GetArrayFromImage(image)
    brain = array > 0
    rng = np.random.default_rng(3)
    if kind == "parcellation":
        z = np.indices(array.shape)[0]
        copy = np.where(brain, 2 * (1 + (z * 40) // array.shape[0]), 0).astype(np.int16)
    else:
        copy = np.where(brain, rng.uniform(0.99, 1.01, array.shape), 0).astype(np.float32)
    with pytest.raises(InputError, match=words):
        pipeline.synthesize({"t1n": _like(image, copy), "t2w": read_image(phantom_case / f"{CASE}-t2w.nii.gz")},
                            ModelBundle("tiny", _tiny_generator()), targets=["t1c"], device="cpu")


def test_an_input_that_covers_a_sliver_of_the_brain_is_refused(phantom_case):
    image = read_image(phantom_case / f"{CASE}-t1n.nii.gz")
    array = np.zeros(sitk.GetArrayFromImage(image).shape, dtype=np.float32)
    rng = np.random.default_rng(5)
    array.flat[rng.choice(array.size, 30, replace=False)] = np.arange(1, 31)
    with pytest.raises(InputError, match="cover only"):
        pipeline.synthesize({"t1n": _like(image, array), "t2w": read_image(phantom_case / f"{CASE}-t2w.nii.gz"),
                             "t2f": read_image(phantom_case / f"{CASE}-t2f.nii.gz")},
                            ModelBundle("tiny", _tiny_generator()), targets=["t1c"], device="cpu")


def test_a_text_encoded_nrrd_that_declares_more_values_than_it_holds_is_refused_without_memory(tmp_path):
    path = tmp_path / "ascii.nrrd"
    path.write_text(f"NRRD0004\ntype: double\ndimension: 3\nsizes: 512 512 500\nencoding: ascii\n{SPACE}\n1 2 3 4 5\n")
    first, rise_mb = _read_in_subprocess(path)
    assert first.startswith("refused:") and "truncated" in first and str(path) in first, first
    assert rise_mb < 200, f"reading raised peak memory by {rise_mb:.0f} MB"


def test_a_complex_valued_image_is_refused_by_name(tmp_path, phantom_case):
    array = nib.load(str(phantom_case / f"{CASE}-t1n.nii.gz")).get_fdata().astype(np.complex64)
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([2.5, 2.5, 2.5, 1.0])), str(path))
    with pytest.raises(InputError, match="complex voxels") as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_sighup_while_writing_leaves_nothing_behind(tmp_path, case_dir, bundle_dir):
    out = tmp_path / "out"
    out.mkdir()
    returncode, err = _synthesize_interrupted(case_dir, bundle_dir, out, signal.SIGHUP)
    assert returncode == 129, err
    assert list(out.iterdir()) == []
