"""The package layout by audience: imports run only downwards, only the Slicer bridge knows Slicer,
modules stay small. Every module of ``MRISynthesisLib`` is parsed (no import needed)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "MRISynthesisLib"

#: Packages from the ground up; a module may import its own layer and the layers below it only.
LAYERS = (
    ("sequences", "metrics"),  # the ground: used by everyone, imports nothing of the project
    ("models",),
    ("core",),
    ("clinical",),  # clinical studies: preconditions, preparation, DICOM in and out; runs core
    ("worker",),  # synthesis in a separate process: runs core, used by the Slicer bridge
    ("phantom",),
    ("scene",),
    ("evaluation",),
    ("training",),
    ("cli",),
)
#: Top-level module names that only the Slicer bridge may import.
SLICER_MODULES = ("slicer", "vtk", "qt", "ctk", "PythonQt", "mrml", "vtkSlicer", "MRMLCorePython")
#: Longest module allowed, in lines.
MAX_MODULE_LINES = 500
#: Modules allowed directly in MRISynthesisLib/ besides __init__.py.
MAX_TOP_LEVEL_MODULES = 3


def library_modules() -> list:
    return sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)


def package_of(path: Path) -> str:
    """The top-level package (or ground module) a file belongs to: 'core', 'sequences', ..."""
    parts = path.relative_to(LIBRARY).with_suffix("").parts
    return parts[0]


def layer_of(package: str) -> int:
    for index, names in enumerate(LAYERS):
        if package in names:
            return index
    raise AssertionError(f"{package}: not in any layer; add it to LAYERS")


def project_imports(path: Path) -> list:
    """(line, imported top-level package of the project) for every import in the file, lazy ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = path.relative_to(LIBRARY).with_suffix("").parts
    package_parts = own[:-1] if own[-1] != "__init__" else own[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # "from .. import x": x names a package or module at the top
                    target = [alias.name for alias in node.names]
                    found.extend((node.lineno, name) for name in target if name != "__version__")
                    continue
                found.append((node.lineno, target[0]))
            elif node.module and node.module.startswith("MRISynthesisLib."):
                found.append((node.lineno, node.module.split(".")[1]))
            elif node.module == "MRISynthesisLib":
                found.extend((node.lineno, alias.name) for alias in node.names if alias.name != "__version__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("MRISynthesisLib."):
                    found.append((node.lineno, alias.name.split(".")[1]))
    return found


def external_imports(path: Path) -> list:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.append((node.lineno, node.module.split(".")[0]))
    return names


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_imports_run_only_downwards(path):
    if path.parent == LIBRARY and path.name == "__init__.py":
        return
    own = layer_of(package_of(path))
    upward = [(line, name) for line, name in project_imports(path) if layer_of(name) > own]
    assert upward == [], f"{path.relative_to(LIBRARY)} imports upwards (line, package): {upward}"


def test_the_ground_imports_nothing_of_the_project():
    for path in library_modules():
        if package_of(path) in LAYERS[0]:
            outside = [(line, name) for line, name in project_imports(path) if name not in LAYERS[0]]
            assert outside == [], f"{path.relative_to(LIBRARY)}: {outside}"


def test_only_the_slicer_bridge_imports_slicer_vtk_qt_or_mrml():
    offenders = []
    for path in library_modules():
        if package_of(path) == "scene":
            continue
        for line, name in external_imports(path):
            if name in SLICER_MODULES or name.startswith("vtkMRML") or name.startswith("qSlicer"):
                offenders.append(f"{path.relative_to(LIBRARY)}:{line} imports {name}")
    assert offenders == []


def test_the_check_sees_upward_and_slicer_imports(tmp_path):
    """The parser above finds relative, absolute and lazy imports (a check that cannot fail is no check)."""
    sample = LIBRARY / "core" / "jobs.py"
    packages = {name for _, name in project_imports(sample)}
    assert "sequences" in packages and "core" in packages
    scene = {name for _, name in external_imports(LIBRARY / "scene" / "__init__.py")} | {
        name for path in (LIBRARY / "scene").glob("*.py") for _, name in external_imports(path)}
    assert "slicer" in scene or "vtk" in scene


def test_modules_are_short_and_few_sit_at_the_top():
    long = {str(p.relative_to(LIBRARY)): n for p in library_modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: {long}"
    top = sorted(p.name for p in LIBRARY.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
