"""The voxel grids of phantom cases: the BraTS grid at 1 mm, a medium 1.5 mm and a small 2.5 mm grid
on the same centre, and where the anatomy template sits on them.

Grids are in SimpleITK terms (LPS, identity direction, as SimpleITK reads BraTS NIfTI files):
full size 240 x 240 x 155 at 1 mm with origin (0, -239, 0), the BraTS/SRI24 header; medium
160 x 160 x 104 at 1.5 mm (240 x 240 x 156 mm) and small 96 x 96 x 64 at 2.5 mm
(240 x 240 x 160 mm), both centred on the same point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

__all__ = [
    "PhantomGrid",
    "FULL_GRID",
    "SMALL_SIZE",
    "SMALL_SPACING",
    "MEDIUM_SIZE",
    "MEDIUM_SPACING",
    "GRID_NAMES",
    "grid_name",
    "phantom_grid",
    "GRID_TO_TEMPLATE_MM",
]


@dataclass(frozen=True)
class PhantomGrid:
    """Voxel grid of a phantom case in SimpleITK terms (x, y, z order, LPS)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x) of ``sitk.GetArrayFromImage`` on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix from continuous (x, y, z) index to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def centre(self) -> np.ndarray:
        """LPS position (mm) of the centre of the grid."""
        half = (np.asarray(self.size, dtype=float) - 1.0) / 2.0
        return (self.index_to_physical() @ np.append(half, 1.0))[:3]

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set this grid's spacing, origin and direction on ``image`` and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


#: The BraTS grid: what SimpleITK reports for a BraTS 2021/2023 NIfTI file.
FULL_GRID = PhantomGrid(size=(240, 240, 155), spacing=(1.0, 1.0, 1.0), origin=(0.0, -239.0, 0.0))
#: Voxels (x, y, z) of the small grid.
SMALL_SIZE = (96, 96, 64)
#: Voxel size (mm) of the small grid.
SMALL_SPACING = (2.5, 2.5, 2.5)


#: Voxels (x, y, z) of the medium grid: the BraTS field of view (240 x 240 x 156 mm) at 1.5 mm,
#: fine enough for 1 mm-scale anatomy to survive as partial volume, 3.4 times fewer voxels.
MEDIUM_SIZE = (160, 160, 104)
#: Voxel size (mm) of the medium grid.
MEDIUM_SPACING = (1.5, 1.5, 1.5)
#: Names of the phantom grids, finest first.
GRID_NAMES = ("full", "medium", "small")


def _centred_grid(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> PhantomGrid:
    """A grid of ``size`` voxels of ``spacing`` centred on the centre of the full BraTS grid."""
    centre = FULL_GRID.centre()
    half = (np.asarray(size, dtype=float) - 1.0) / 2.0 * np.asarray(spacing)
    origin = tuple(float(v) for v in centre - half)
    return PhantomGrid(size=size, spacing=spacing, origin=origin)


def grid_name(grid: Union[bool, str] = False) -> str:
    """The grid's name from a name or the older ``small`` flag (``True`` small, ``False`` full)."""
    if isinstance(grid, (bool, np.bool_)):
        return "small" if grid else "full"
    if grid not in GRID_NAMES:
        raise ValueError(f"phantom grid must be one of {', '.join(GRID_NAMES)}, got {grid!r}")
    return str(grid)


def phantom_grid(small: Union[bool, str] = False, grid: Optional[str] = None) -> PhantomGrid:
    """Grid of full-size (240 x 240 x 155, 1 mm), medium (160 x 160 x 104, 1.5 mm) or small
    (96 x 96 x 64, 2.5 mm) cases: ``grid`` names it; without it, ``small`` is the older flag
    (or, positionally, a name: ``phantom_grid("medium")``)."""
    name = grid_name(grid if grid is not None else small)
    if name == "small":
        return _centred_grid(SMALL_SIZE, SMALL_SPACING)
    if name == "medium":
        return _centred_grid(MEDIUM_SIZE, MEDIUM_SPACING)
    return FULL_GRID


#: Where the template sits on the BraTS grid: LPS translation from grid millimetres to
#: template millimetres. MNI (0, -17, 8), the middle of the brain, lands near grid voxel
#: (120, 125, 73); the top of the brain 7 mm below the last slice, the lowest 7 mm of the
#: brainstem cut off as in many BraTS cases.
GRID_TO_TEMPLATE_MM = np.array([-120.0, 131.0, -65.0])
