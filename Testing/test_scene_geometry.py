"""Node <-> image geometry and voxels (``MRISynthesisLib.scene.geometry``), headless on the real MRML library:
volumes loaded as Slicer loads them are compared with SimpleITK's own reading of the same files."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scene_support import OBLIQUE_GEOMETRY, assert_same_image, load_volume, mrml_scene, slicer  # noqa: F401

import vtk  # noqa: E402  (after the skip in scene_support: slicer-core brings the matching VTK)

from MRISynthesisLib.scene.geometry import image_from_volume_node, volume_node_from_image  # noqa: E402
from MRISynthesisLib.scene.nodes import MRMLInputError  # noqa: E402


@pytest.mark.parametrize(
    "filename, dtype, degrees",
    [("axial.nii.gz", np.float32, 0.0), ("oblique.nrrd", np.int16, 25.0), ("oblique.nii.gz", np.int16, -15.0)],
)
def test_slicer_loaded_volume_matches_simpleitk_reading(mrml_scene, tmp_path, make_volume, rotation,
                                                       filename, dtype, degrees):
    image = make_volume(dtype=dtype, direction=rotation(degrees, "y"), **OBLIQUE_GEOMETRY)
    path = tmp_path / filename
    sitk.WriteImage(image, str(path))
    node = load_volume(mrml_scene, path, "input")

    converted = image_from_volume_node(node)

    assert_same_image(converted, sitk.ReadImage(str(path)))


def test_image_to_node_and_back_keeps_geometry_and_voxels(mrml_scene, tmp_path, make_volume, rotation):
    image = make_volume(direction=rotation(30, "z"), **OBLIQUE_GEOMETRY)
    node = volume_node_from_image(mrml_scene.scene, image, "from image")

    assert_same_image(image_from_volume_node(node), image)
    # Independent check: Slicer's own writer saves the node, SimpleITK reads the file.
    storage = node.CreateDefaultStorageNode()
    path = tmp_path / "saved.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    assert_same_image(sitk.ReadImage(str(path)), image)


def test_linear_parent_transform_is_part_of_the_geometry(mrml_scene, tmp_path, make_volume, rotation):
    path = tmp_path / "moved.nrrd"
    sitk.WriteImage(make_volume(direction=rotation(10, "x"), **OBLIQUE_GEOMETRY), str(path))
    node = load_volume(mrml_scene, path, "moved")
    transform = mrml_scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)
    matrix.SetElement(2, 3, -4.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())

    with_transform = image_from_volume_node(node)
    assert slicer.vtkSlicerTransformLogic.hardenTransform(node)  # Slicer applies the transform itself
    hardened = image_from_volume_node(node)

    assert_same_image(with_transform, hardened)
    np.testing.assert_allclose(np.subtract(with_transform.GetOrigin(), sitk.ReadImage(str(path)).GetOrigin()),
                               (-10.0, 0.0, -4.0), atol=1e-6)  # RAS +10 mm right is LPS -10 mm


def test_non_linear_parent_transform_is_refused(mrml_scene, make_volume):
    node = volume_node_from_image(mrml_scene.scene, make_volume(), "warped")
    transform = mrml_scene.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(MRMLInputError, match="warped: is under a non-linear transform"):
        image_from_volume_node(node)


def test_node_without_voxels_is_refused_with_its_name(mrml_scene):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty one")
    with pytest.raises(MRMLInputError, match="^empty one: volume node holds no voxels$"):
        image_from_volume_node(node)
