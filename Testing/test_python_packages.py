"""What the Slicer module checks before it offers to install packages: requirement lines and installed versions,
read from this environment's real package metadata."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from MRISynthesisLib.core.python_packages import read_requirements, unmet_requirements

MODULE_REQUIREMENTS = Path(__file__).resolve().parents[1] / "MRISynthesis" / "Resources" / "requirements.txt"


def test_the_module_requirements_are_read_and_met_here():
    requirements = read_requirements(MODULE_REQUIREMENTS)
    assert "monai>=1.3" in requirements and all(not line.startswith("#") for line in requirements)
    assert unmet_requirements(requirements) == []


def test_missing_and_too_old_packages_are_reported_with_what_is_installed():
    numpy_version = metadata.version("numpy")
    unmet = unmet_requirements(["numpy>=1.0", "numpy>=999.0", "no-such-package-mrisynth>=1.0", "scipy"])
    assert [(u.name, u.installed) for u in unmet] == [("numpy", numpy_version), ("no-such-package-mrisynth", None)]
    assert unmet[0].describe() == f"numpy>=999.0 ({numpy_version} installed)"
    assert unmet[1].describe() == "no-such-package-mrisynth>=1.0 (not installed)"


def test_a_requirement_line_the_module_cannot_check_is_refused_by_file_and_line(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# engine\nmonai>=1.3\ntorch==2.0 ; sys_platform == 'linux'\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"requirements\.txt:3: expected 'name' or 'name>=version'"):
        read_requirements(path)
