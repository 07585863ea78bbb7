"""MRISynthesis engine: synthesise missing brain MRI sequences (two-stage HF-GAN + 3D Refiner).

Importing this package is cheap: torch, MONAI and SimpleITK are imported by the modules
that need them, never here, so that 3D Slicer starts as fast as before.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
