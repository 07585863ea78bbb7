"""Shared helpers of the headless Slicer-side tests (``test_scene_*.py``), on the real MRML library.

Importing this module skips the importing test module when ``slicer-core`` (with the volumes
logic) is not installed. Volumes are loaded the way Slicer loads them (``vtkSlicerVolumesLogic``
reading real NIfTI and NRRD files); results are real
:class:`~MRISynthesisLib.core.pipeline.SynthesisResult` objects built from real images.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs slicer-core (the real MRML library)")
if not hasattr(slicer, "vtkSlicerVolumesLogic"):
    pytest.skip("the installed 'slicer' package has no vtkSlicerVolumesLogic", allow_module_level=True)

import vtk  # noqa: E402  (after the skip: slicer-core brings the matching VTK)
from vtk.util import numpy_support  # noqa: E402

from MRISynthesisLib.core.pipeline import SynthesisResult, TargetResult  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402

#: Oblique-ready geometry of the test volumes: uneven spacing, an origin off zero.
OBLIQUE_GEOMETRY = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.0, 7.25))


def scene_with_logics() -> SimpleNamespace:
    """A scene with the logics Slicer sets up for loading volumes (application, colours, volumes) and the
    three slice views' composite nodes; the test modules' ``mrml_scene`` fixture, cleared after each test."""
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    colours = slicer.vtkSlicerColorLogic()
    colours.SetMRMLApplicationLogic(application)
    colours.SetMRMLScene(scene)
    application.SetModuleLogic("Colors", colours)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(application)
    volumes.SetMRMLScene(scene)
    application.SetModuleLogic("Volumes", volumes)
    for layout in ("Red", "Yellow", "Green"):  # what the application's layout adds for its slice views
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(layout)
        scene.AddNode(composite)
    return SimpleNamespace(scene=scene, volumes=volumes, keep=(application, colours))


def load_volume(env, path: Path, name: str):
    """Load a file as Slicer does (volumes logic, archetype reader)."""
    node = env.volumes.AddArchetypeVolume(str(path), name, 0)
    assert node is not None, f"volumes logic could not load {path}"
    return node


def node_array(node) -> np.ndarray:
    scalars = node.GetImageData().GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars).reshape(tuple(reversed(node.GetImageData().GetDimensions())))


def node_matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def snapshot(node) -> tuple:
    """Everything about an input node that must not change: voxels (bytes), matrix, name, attributes."""
    attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}
    return node_array(node).tobytes(), node_matrix(node).tobytes(), node.GetName(), attributes


def assert_same_image(actual: sitk.Image, expected: sitk.Image) -> None:
    assert actual.GetSize() == expected.GetSize()
    assert actual.GetPixelID() == expected.GetPixelID()
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(actual), sitk.GetArrayViewFromImage(expected))


def brain_like(make_volume, seed: int, **geometry) -> sitk.Image:
    """A positive volume with a zero border (background), like a skull-stripped brain."""
    image = make_volume(size=(12, 11, 10), seed=seed, **geometry)
    array = sitk.GetArrayFromImage(image)
    array[:, :, :2] = 0
    array[:2] = 0
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def signed_map(reference: sitk.Image, seed: int) -> sitk.Image:
    array = np.random.default_rng(seed).normal(0.0, 20.0, sitk.GetArrayViewFromImage(reference).shape)
    array[sitk.GetArrayViewFromImage(reference) == 0] = 0.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(reference)
    return image


def like(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def make_result(reference: sitk.Image, targets=(Sequence.T1C,), inputs=(Sequence.T1N, Sequence.T2W, Sequence.T2F),
                with_error: bool = False) -> SynthesisResult:
    """A real SynthesisResult (the pipeline's own dataclasses) from real images on ``reference``'s grid."""
    out = {}
    for index, sequence in enumerate(targets):
        synthetic = sitk.Cast(reference, sitk.sitkFloat32) * (1.0 + 0.1 * index)
        refinement = signed_map(reference, seed=10 + index)
        refinement_array = sitk.GetArrayFromImage(refinement)
        mask_array = (np.abs(refinement_array) > 25.0).astype(np.uint8)
        tumour = like(reference, (np.abs(refinement_array) * mask_array).astype(np.float32))
        error = like(reference, np.abs(sitk.GetArrayFromImage(signed_map(reference, seed=20 + index))))
        out[sequence] = TargetResult(
            sequence=sequence, synthetic=synthetic, stage1=synthetic - refinement,
            refinement_map=refinement, tumour_map=tumour, tumour_mask=like(reference, mask_array),
            error_map=error if with_error else None,
            metrics={"ssim": 0.8 + 0.01 * index, "psnr": 25.0 + index, "nmse": 0.05} if with_error else {},
        )
    return SynthesisResult(targets=out, inputs=list(inputs), model_name="test-bundle", device="cpu",
                           timings={"total_s": 1.0}, messages=["a note"])


def write_case_files(tmp_path: Path, make_volume) -> dict:
    """Three BraTS-named NIfTI inputs (T1, T2, FLAIR) on one grid; T1c is the missing one."""
    paths = {}
    for seed, sequence in enumerate((Sequence.T1N, Sequence.T2W, Sequence.T2F)):
        path = tmp_path / f"BraTS-GLI-00001-000-{sequence.value}.nii.gz"
        sitk.WriteImage(brain_like(make_volume, seed + 1, **OBLIQUE_GEOMETRY), str(path))
        paths[sequence] = path
    return paths


def load_case(env: SimpleNamespace, case_on_disk: dict) -> SimpleNamespace:
    """The case files loaded through the volumes logic, placed in a patient folder like Slicer's data module does."""
    scene = env.scene
    hierarchy = scene.GetSubjectHierarchyNode()
    patient = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1")
    nodes = {}
    for sequence, path in case_on_disk.items():
        node = load_volume(env, path, path.name.replace(".nii.gz", ""))
        hierarchy.CreateItem(patient, node)
        nodes[sequence] = node
    return SimpleNamespace(env=env, scene=scene, nodes=nodes, patient=patient, paths=case_on_disk)


@pytest.fixture
def mrml_scene():
    """A scene with Slicer's volume-loading logics and three slice views (:func:`scene_with_logics`)."""
    env = scene_with_logics()
    yield env
    env.scene.Clear(1)
