"""Shared pytest fixtures: small real images, DICOM series and BraTS case folders on disk.

Fixtures that build things return factory functions, so each test states the geometry
and content it needs. Everything is written with SimpleITK to real files.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from MRISynthesisLib.sequences import SEQUENCES, Sequence

#: Voxel grid (x, y, z) small enough for fast tests, uneven so axis mix-ups show.
SMALL_SIZE = (8, 9, 10)


def rotation_direction(degrees: float, axis: str = "x") -> tuple[float, ...]:
    """A SimpleITK direction (row-major 3x3) rotated ``degrees`` about ``axis``."""
    return tuple(Rotation.from_euler(axis, degrees, degrees=True).as_matrix().ravel())


def _new_uid() -> str:
    """A DICOM UID derived from a random UUID (the standard ``2.25.`` form)."""
    return f"2.25.{uuid.uuid4().int}"


def _ds(values: Iterable[float]) -> str:
    """DICOM decimal-string list (each value fits the 16-character limit)."""
    return "\\".join(f"{v:.10g}" for v in values)


@pytest.fixture
def rotation() -> Callable[..., tuple[float, ...]]:
    """Factory for oblique direction matrices: ``rotation(20)`` is 20 degrees about x."""
    return rotation_direction


@pytest.fixture
def make_volume() -> Callable[..., sitk.Image]:
    """Factory for a 3D scalar image with random positive voxels and the given geometry."""

    def make(
        size: tuple[int, int, int] = SMALL_SIZE,
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
        dtype: type = np.float32,
        seed: int = 0,
    ) -> sitk.Image:
        rng = np.random.default_rng(seed)
        array = rng.integers(1, 1000, size=tuple(reversed(size))).astype(dtype)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        return image

    return make


@pytest.fixture
def write_dicom_series() -> Callable[..., list[Path]]:
    """Factory that writes a 3D image as a DICOM MR series, one file per axial slice.

    The tags a reader needs to rebuild the volume are set per slice: study and series
    UIDs, Image Position (0020|0032), Image Orientation (0020|0037), slice thickness and
    instance number. Voxels are stored as 16-bit integers.
    """

    def write(
        image: sitk.Image, folder: Path, description: str = "T1 test", prefix: str = "slice"
    ) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        volume = sitk.Cast(image, sitk.sitkInt16)
        direction = volume.GetDirection()
        # Orientation = the first two columns of the direction matrix (row and column cosines).
        orientation = (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
        study_uid, series_uid = _new_uid(), _new_uid()
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        paths = []
        for index in range(volume.GetDepth()):
            slice_image = volume[:, :, index]
            tags = {
                "0008|0060": "MR",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
                "0008|0018": f"{series_uid}.{index + 1}",
                "0008|103e": description,
                "0010|0010": "Test^Phantom",
                "0010|0020": "TEST0001",
                "0020|000d": study_uid,
                "0020|000e": series_uid,
                "0020|0013": str(index + 1),
                "0020|0032": _ds(volume.TransformIndexToPhysicalPoint((0, 0, index))),
                "0020|0037": _ds(orientation),
                "0018|0050": f"{volume.GetSpacing()[2]:.10g}",
                "0018|0088": f"{volume.GetSpacing()[2]:.10g}",
            }
            for key, value in tags.items():
                slice_image.SetMetaData(key, value)
            path = folder / f"{prefix}{index:03d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(slice_image)
            paths.append(path)
        return paths

    return write


#: BraTS file suffixes per naming scheme.
BRATS_SUFFIXES: dict[str, dict[Sequence, str]] = {
    "2023": {seq: seq.suffix for seq in SEQUENCES},
    "2021": {seq: seq.brats2021_suffix for seq in SEQUENCES},
}


@pytest.fixture
def write_brats_case(make_volume) -> Callable[..., Path]:
    """Factory for a BraTS case folder of small random volumes on one grid.

    ``naming="2023"`` gives ``BraTS-GLI-00000-000-t1n.nii.gz`` ... ``-seg.nii.gz``;
    ``naming="2021"`` gives ``BraTS2021_00000_t1.nii.gz`` ... ``_seg.nii.gz``.
    """

    def write(
        root: Path,
        naming: str = "2023",
        sequences: Iterable[Sequence] = SEQUENCES,
        label: bool = True,
        **geometry,
    ) -> Path:
        case_id = "BraTS-GLI-00000-000" if naming == "2023" else "BraTS2021_00000"
        separator = "-" if naming == "2023" else "_"
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        for seed, sequence in enumerate(sequences):
            image = make_volume(seed=seed + 1, **geometry)
            name = f"{case_id}{separator}{BRATS_SUFFIXES[naming][sequence]}.nii.gz"
            sitk.WriteImage(image, str(folder / name))
        if label:
            seg = sitk.Cast(make_volume(seed=99, **geometry) > 800, sitk.sitkUInt8)
            sitk.WriteImage(seg, str(folder / f"{case_id}{separator}seg.nii.gz"))
        return folder

    return write


@pytest.fixture
def offline(monkeypatch):
    """No network for the programs a test starts (HD-BET would fetch its weights): every proxy is a closed
    local port, so a download attempt fails at once, also on a machine with a network."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module, restored afterwards: small networks gain nothing from threads,
    and on a shared 2-core machine threads waiting for each other make them many times slower. Modules
    that train or run networks use it for every test (``pytestmark = pytest.mark.usefixtures(...)``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="session")
def bundle_without_statistics(tmp_path_factory) -> Path:
    """A copy of the bundled demo model without its training statistics (a bundle made before they existed,
    or by a training that did not add them): the out-of-distribution check cannot run with it."""
    import json
    import shutil

    from MRISynthesisLib.core.bundles import CATALOGUE_DIR
    from MRISynthesisLib.core.ood_statistics import METADATA_KEY

    folder = tmp_path_factory.mktemp("bundle-without-statistics") / "demo-without-statistics"
    shutil.copytree(CATALOGUE_DIR / "demo", folder)
    manifest_path = folder / "bundle.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest["metadata"][METADATA_KEY]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def save_tiny_bundle() -> Callable[[Path, str], Path]:
    """``save(folder, name)``: a bundle folder of a tiny real HF-GAN (seeded, 96 x 96 slices) and a tiny real
    Refiner whose zero-initialised head is given weights, so that refinement changes the volume."""
    def save(folder: Path, name: str) -> Path:
        import torch

        from MRISynthesisLib.core.bundles import save_bundle
        from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator
        from MRISynthesisLib.models.refiner import Refiner, RefinerConfig

        torch.manual_seed(0)
        generator = HFGANGenerator(HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=96))
        refiner = Refiner(RefinerConfig(channels=4))
        with torch.no_grad():
            refiner.head.weight.normal_(0.0, 0.5)
        return save_bundle(folder, name, generator, refiner)

    return save
