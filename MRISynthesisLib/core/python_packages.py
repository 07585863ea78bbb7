"""Which Python packages the engine still needs, read from a requirements file; standard library only.

The Slicer module asks this *before* the engine's own imports can work (on a fresh Slicer,
MONAI is not installed yet), so nothing here imports a third-party package; ``packaging``
is used for version comparison where Slicer has it, with a plain numeric comparison
otherwise (the requirements file uses only ``>=`` floors of release numbers).
"""
from __future__ import annotations

import dataclasses
import re
from importlib import metadata
from pathlib import Path
from typing import Iterable, List, Optional

__all__ = ["UnmetRequirement", "read_requirements", "unmet_requirements", "installed_version"]

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.+!-]*))?\s*$")


@dataclasses.dataclass(frozen=True)
class UnmetRequirement:
    """A requirement that is not met: ``installed`` is None when the package is absent, else too old."""

    requirement: str
    name: str
    floor: Optional[str]
    installed: Optional[str]

    def describe(self) -> str:
        """``monai>=1.3 (not installed)`` or ``monai>=1.3 (1.2.0 installed)``."""
        state = "not installed" if self.installed is None else f"{self.installed} installed"
        return f"{self.requirement} ({state})"


def read_requirements(path: Path) -> List[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped).

    Only ``name`` and ``name>=version`` lines are accepted: anything else is a ValueError naming
    the file and line, so a typo is found when the file is written, not on a user's machine.
    """
    path = Path(path)
    requirements = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not _REQUIREMENT.match(text):
            raise ValueError(f"{path}:{number}: expected 'name' or 'name>=version', got {text!r}")
        requirements.append(text)
    return requirements


def installed_version(name: str) -> Optional[str]:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple:
    """Leading release numbers of a version (``2.1.0rc1`` -> (2, 1, 0)), for a comparison without packaging."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.group() != part:
            break
    return tuple(numbers)


def _at_least(installed: str, floor: str) -> bool:
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # very old Slicer without packaging: compare release numbers
        return _release(installed) >= _release(floor)
    try:
        return Version(installed) >= Version(floor)
    except InvalidVersion:
        return _release(installed) >= _release(floor)


def unmet_requirements(requirements: Iterable[str]) -> List[UnmetRequirement]:
    """Requirements whose package is missing or older than its floor, in the given order."""
    unmet = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if not match:
            raise ValueError(f"expected 'name' or 'name>=version', got {requirement!r}")
        name, floor = match.group(1), match.group(2)
        installed = installed_version(name)
        if installed is None or (floor is not None and not _at_least(installed, floor)):
            unmet.append(UnmetRequirement(requirement, name, floor, installed))
    return unmet
