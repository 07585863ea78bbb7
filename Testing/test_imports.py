"""Start-up cost: the light modules must not import torch or MONAI (3D Slicer imports them at start-up).

Each check runs in a fresh interpreter, because in this test process torch is already loaded.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "monai")

#: Modules imported when Slicer starts or the ``mrisynth`` command parses its arguments.
LIGHT_MODULES = [
    "MRISynthesisLib",
    "MRISynthesisLib.sequences",
    "MRISynthesisLib.core.io",
    "MRISynthesisLib.core.preprocessing",
    "MRISynthesisLib.core.devices",
    "MRISynthesisLib.core.inference",
    "MRISynthesisLib.core.progress",
    "MRISynthesisLib.core.pipeline",
    "MRISynthesisLib.core.bundles",
    "MRISynthesisLib.core.checkpoints",
    "MRISynthesisLib.core.model_grid_inputs",
    "MRISynthesisLib.core.stages",
    "MRISynthesisLib.cli",
    "MRISynthesisLib.scene.flow",
    "MRISynthesisLib.scene.validation_table",
    "MRISynthesisLib.scene.assignment",
    "MRISynthesisLib.scene.panel",
]


def heavy_modules_after_import(module: str) -> list:
    """Which of :data:`HEAVY` are in ``sys.modules`` after importing ``module`` in a new interpreter."""
    code = (f"import json, sys; import {module}; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"import {module} failed: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_do_not_import_torch_or_monai(module):
    if module.startswith("MRISynthesisLib.scene.") and importlib.util.find_spec("slicer") is None:
        pytest.skip("slicer-core is not installed")
    assert heavy_modules_after_import(module) == []


def test_the_package_itself_does_not_import_simpleitk():
    code = "import sys, MRISynthesisLib; print('SimpleITK' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_the_check_sees_heavy_imports():
    """The subprocess check itself works: a module that needs torch is reported."""
    assert "torch" in heavy_modules_after_import("MRISynthesisLib.models.hfgan")
