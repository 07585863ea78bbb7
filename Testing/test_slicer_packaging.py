"""Slicer extension packaging: CMake lists, extension description, icons, the .ui file, import hygiene.

Nothing here needs the Slicer application: CMake files are read as text, the .ui file with
an XML parser, the module's Python file with ``ast``; import checks run in a fresh interpreter.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MRISynthesis"
MODULE_FILE = MODULE_DIR / "MRISynthesis.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MRISynthesis.ui"
LIBRARY_DIR = ROOT / "MRISynthesisLib"

#: Widgets the module's Python code uses, and the class each must have in the .ui file.
EXPECTED_WIDGETS = {
    "t1nSelector": "qMRMLNodeComboBox",
    "t1cSelector": "qMRMLNodeComboBox",
    "t2wSelector": "qMRMLNodeComboBox",
    "t2fSelector": "qMRMLNodeComboBox",
    "missingLabel": "QLabel",
    "modelComboBox": "QComboBox",
    "deviceComboBox": "QComboBox",
    "keepStage1CheckBox": "QCheckBox",
    "tumourMapsCheckBox": "QCheckBox",
    "synthesizeButton": "QPushButton",
    "validateButton": "QPushButton",
    "cancelButton": "QPushButton",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "logTextEdit": "QPlainTextEdit",
    "metricsCollapsibleButton": "ctkCollapsibleButton",
    "metricsTableView": "qMRMLTableView",
}

#: Parameter-node fields bound to widgets through ``SlicerParameterName``: field -> (widget, class).
EXPECTED_BINDINGS = {
    "t1n": ("t1nSelector", "qMRMLNodeComboBox"),
    "t1c": ("t1cSelector", "qMRMLNodeComboBox"),
    "t2w": ("t2wSelector", "qMRMLNodeComboBox"),
    "t2f": ("t2fSelector", "qMRMLNodeComboBox"),
    "device": ("deviceComboBox", "QComboBox"),
    "keepStage1": ("keepStage1CheckBox", "QCheckBox"),
    "tumourMaps": ("tumourMapsCheckBox", "QCheckBox"),
}

QT_CLASSES = {"QWidget", "QLabel", "QComboBox", "QCheckBox", "QPushButton", "QProgressBar", "QPlainTextEdit"}


# --------------------------------------------------------------------------- CMake


def cmake_text(path: Path) -> str:
    """CMake source without comments."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines())


def cmake_arguments(text: str, start: int) -> list[str]:
    """Arguments of the CMake command whose "(" is at ``start``: quoted strings and bare words."""
    arguments = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"|([^\s()"]+)|(\))', text[start + 1:]):
        if match.group(3):
            return arguments
        arguments.append(match.group(1) if match.group(1) is not None else match.group(2))
    raise AssertionError("unclosed CMake command")


def cmake_sets(path: Path) -> dict[str, list[str]]:
    """``set(NAME values...)`` commands as lists of unquoted values, ``${MODULE_NAME}`` expanded."""
    text = cmake_text(path)
    values: dict[str, list[str]] = {}
    for match in re.finditer(r"\bset\(", text):
        name, *items = cmake_arguments(text, match.end() - 1)
        module = values.get("MODULE_NAME", [""])[0]
        values[name] = [item.replace("${MODULE_NAME}", module) for item in items]
    return values


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_top_level_cmake_has_the_extension_metadata():
    values = cmake_sets(ROOT / "CMakeLists.txt")
    text = cmake_text(ROOT / "CMakeLists.txt")
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert values.get(f"EXTENSION_{key}", [""])[0].strip(), f"EXTENSION_{key} is empty"
    assert values["EXTENSION_DEPENDS"] == ["PyTorch"]
    assert values["EXTENSION_ICONURL"][0].endswith("Resources/MRISynthesis.png")
    assert re.search(r"\bproject\(\s*MRISynthesis\s*\)", text)
    assert re.search(r"find_package\(\s*Slicer\s+REQUIRED\s*\)", text)
    assert re.search(r"add_subdirectory\(\s*MRISynthesis\s*\)", text)
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


def test_module_cmake_lists_every_module_file_and_nothing_else():
    values = cmake_sets(MODULE_DIR / "CMakeLists.txt")
    listed = set(values["MODULE_PYTHON_SCRIPTS"]) | set(values["MODULE_PYTHON_RESOURCES"])
    present = files_under(MODULE_DIR) - {"CMakeLists.txt"}
    assert sorted(listed - present) == [], "listed in MRISynthesis/CMakeLists.txt but missing"
    assert sorted(present - listed) == [], "present in MRISynthesis/ but not listed in its CMakeLists.txt"


#: What Slicer runs: the ground modules, the networks, the engine, the scene bridge and the phantom
#: (sample data). The command line, training and research tools are not installed into Slicer.
SHIPPED = ("__init__.py", "sequences.py", "metrics/", "models/", "core/", "scene/", "phantom/", "data/models/demo/")
NOT_SHIPPED = ("cli/", "training/", "evaluation/")


def shipped_library_files() -> set:
    return {f"MRISynthesisLib/{name}" for name in files_under(LIBRARY_DIR)
            if name.startswith(SHIPPED) or name in SHIPPED}


def test_module_cmake_installs_what_slicer_runs_and_nothing_else():
    values = cmake_sets(MODULE_DIR / "CMakeLists.txt")
    scripts = set(values.get("LIBRARY_PYTHON_SCRIPTS", []))
    resources = set(values.get("LIBRARY_PYTHON_RESOURCES", []))
    expected = shipped_library_files()
    missing = sorted(expected - scripts - resources)
    assert missing == [], "add these lines to LIBRARY_PYTHON_SCRIPTS / _RESOURCES:\n  " + "\n  ".join(missing)
    extra = sorted((scripts | resources) - expected)
    assert extra == [], "listed but not part of what Slicer runs (or not in MRISynthesisLib/):\n  " + "\n  ".join(extra)
    assert not any(name.startswith(tuple(f"MRISynthesisLib/{p}" for p in NOT_SHIPPED)) for name in scripts | resources)
    assert all(name.endswith(".py") for name in scripts)
    assert not any(name.endswith(".py") for name in resources)


def test_what_slicer_runs_imports_nothing_that_is_not_installed():
    """The installed packages never import the command line, training or research tools."""
    offenders = []
    for name in sorted(shipped_library_files()):
        if not name.endswith(".py"):
            continue
        path = ROOT / name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                text = ("." * node.level) + module
                if any(f"{part.rstrip('/')}" in text.replace(".", "/").split("/") for part in NOT_SHIPPED):
                    offenders.append(f"{name}:{node.lineno} from {text}")
    assert offenders == []


def test_module_cmake_builds_the_module_installs_the_library_and_registers_the_self_test():
    text = cmake_text(MODULE_DIR / "CMakeLists.txt")
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, flags=re.S).group(1)
    assert re.search(r"NAME\s+\$\{MODULE_NAME\}", build)
    assert "${MODULE_PYTHON_SCRIPTS}" in build and "${MODULE_PYTHON_RESOURCES}" in build
    library = re.search(r"ctkMacroCompilePythonScript\((.*?)\n\s*\)", text, flags=re.S).group(1)
    assert "${LIBRARY_PYTHON_SCRIPTS}" in library and "${LIBRARY_PYTHON_RESOURCES}" in library
    assert re.search(r"SOURCE_DIR\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\.", library)
    assert re.search(r"DESTINATION_DIR\s+\$\{CMAKE_BINARY_DIR\}/\$\{Slicer_QTSCRIPTEDMODULES_LIB_DIR\}", library)
    assert re.search(r"INSTALL_DIR\s+\$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}", library)
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)


# --------------------------------------------------------------------------- extension description and icons


def s4ext_fields(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            fields[key] = value.strip()
    return fields


def test_extension_description_files_agree_with_cmake():
    cmake = {k: v[0] for k, v in cmake_sets(ROOT / "CMakeLists.txt").items() if v}
    s4ext = s4ext_fields(ROOT / "Resources" / "MRISynthesis.s4ext")
    assert s4ext["scm"] == "git" and s4ext["scmurl"].endswith(".git")
    for key in ("homepage", "category", "iconurl", "description", "screenshoturls", "contributors", "status"):
        assert s4ext[key] == cmake[f"EXTENSION_{key.upper()}"], key
    assert s4ext["depends"] == cmake["EXTENSION_DEPENDS"]
    catalog = json.loads((ROOT / "Resources" / "MRISynthesis.json").read_text(encoding="utf-8"))
    assert catalog["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    assert catalog["scm_url"] == s4ext["scmurl"] and catalog["category"] == cmake["EXTENSION_CATEGORY"]
    assert catalog["build_dependencies"] == [cmake["EXTENSION_DEPENDS"]]
    assert set(catalog) <= {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                            "build_subdirectory", "enabled", "tier"}


@pytest.mark.parametrize("path", [MODULE_DIR / "Resources" / "Icons" / "MRISynthesis.png",
                                  ROOT / "Resources" / "MRISynthesis.png"])
def test_icons_are_128_pixel_pngs_with_content(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        pixels = image.convert("RGBA").getextrema()
    assert all(high > low for low, high in pixels[:3]), "icon is a flat colour"


# --------------------------------------------------------------------------- the .ui file


@pytest.fixture(scope="module")
def ui_tree() -> ElementTree.Element:
    return ElementTree.parse(UI_FILE).getroot()


def ui_widgets(root: ElementTree.Element) -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in root.iter("widget")}


def widget_property(widget: ElementTree.Element, name: str):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop[0]
            if value.tag == "stringlist":
                return [s.text for s in value.findall("string")]
            return value.text
    return None


def module_ui_names() -> set[str]:
    """Every ``self.ui.<name>`` the module's code uses."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}


def test_ui_file_top_level_widget(ui_tree):
    assert ui_tree.tag == "ui" and ui_tree.findtext("class") == "MRISynthesis"
    top = ui_tree.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "MRISynthesis"


def test_every_widget_the_code_uses_exists_with_the_expected_class(ui_tree):
    widgets = ui_widgets(ui_tree)
    used = module_ui_names()
    assert used <= set(EXPECTED_WIDGETS), f"code uses widgets this test does not know: {used - set(EXPECTED_WIDGETS)}"
    for name, cls in EXPECTED_WIDGETS.items():
        assert name in widgets, f"{name} missing from the .ui file"
        assert widgets[name].get("class") == cls, f"{name} is {widgets[name].get('class')}, expected {cls}"


def parameter_node_fields() -> dict[str, str]:
    """Annotated fields of the parameter-node class (name -> annotation source)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "MRISynthesisParameterNode")
    decorators = [ast.unparse(d) for d in cls.decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    return {item.target.id: ast.unparse(item.annotation) for item in cls.body if isinstance(item, ast.AnnAssign)}


def test_parameter_bindings_match_the_parameter_node(ui_tree):
    fields = parameter_node_fields()
    bound = {widget_property(w, "SlicerParameterName"): (name, w.get("class"))
             for name, w in ui_widgets(ui_tree).items() if widget_property(w, "SlicerParameterName")}
    assert bound == EXPECTED_BINDINGS
    for field, (_, cls) in bound.items():
        annotation = fields[field]
        expected = {"qMRMLNodeComboBox": "vtkMRMLScalarVolumeNode", "QCheckBox": "bool", "QComboBox": "Device"}[cls]
        assert annotation == expected, f"{field}: {annotation} cannot be shown in a {cls}"


def test_volume_selectors_accept_scalar_volumes_but_not_label_maps_and_can_be_empty(ui_tree):
    widgets = ui_widgets(ui_tree)
    for name in ("t1nSelector", "t1cSelector", "t2wSelector", "t2fSelector"):
        widget = widgets[name]
        assert widget_property(widget, "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
        assert widget_property(widget, "showChildNodeTypes") == "false"
        assert widget_property(widget, "noneEnabled") == "true"
        assert widget_property(widget, "addEnabled") == "false"


def test_mrml_widgets_get_the_scene_and_custom_classes_are_declared(ui_tree):
    widgets = ui_widgets(ui_tree)
    receivers = {c.findtext("receiver") for c in ui_tree.iter("connection")
                 if c.findtext("sender") == "MRISynthesis" and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml_widgets = {name for name, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert receivers == mrml_widgets
    declared = {c.findtext("class") for c in ui_tree.iter("customwidget")}
    used = {w.get("class") for w in widgets.values()}
    assert used - QT_CLASSES - {"QTableView"} <= declared


# --------------------------------------------------------------------------- module code and imports


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def top_level_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_module_imports_nothing_heavy_at_slicer_start():
    imports = top_level_imports(module_tree())
    heavy = {"torch", "monai", "SimpleITK", "numpy", "scipy", "nibabel", "nilearn"}
    assert not {name.split(".")[0] for name in imports} & heavy
    assert {name for name in imports if name.startswith("MRISynthesisLib")} == {"MRISynthesisLib.sequences"}


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_what_the_module_imports_at_start_pulls_in_no_third_party_package():
    output = run_python("import sys, MRISynthesisLib.sequences; "
                        "print(sorted(m for m in ('torch','monai','SimpleITK','numpy','vtk') if m in sys.modules))")
    assert output.strip() == "[]"


def test_jobs_and_the_scene_bridge_import_without_qt_or_the_engine():
    output = run_python(
        "import sys, MRISynthesisLib.core.jobs, MRISynthesisLib.scene.flow, MRISynthesisLib.scene.validation_table, "
        "MRISynthesisLib.scene.assignment, MRISynthesisLib.scene.panel; "
        "print(sorted(m for m in ('qt','PythonQt','PyQt5','PySide2','PySide6','torch','monai','nibabel') "
        "if m in sys.modules))")
    assert output.strip() == "[]"


@pytest.mark.parametrize("path", [MODULE_FILE, ROOT / "Resources" / "make_icon.py"] + sorted(
    ROOT / name for name in shipped_library_files() if name.endswith(".py") and not name.endswith("__init__.py")),
    ids=lambda path: path.name)
def test_python_39_syntax_and_future_annotations(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    assert ast.get_docstring(tree)
    first = tree.body[1]
    assert isinstance(first, ast.ImportFrom) and first.module == "__future__"


def test_module_defines_slicer_classes_self_test_and_sample_data():
    tree = module_tree()
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["MRISynthesis"] == ["ScriptedLoadableModule"]
    assert bases["MRISynthesisWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["MRISynthesisLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["MRISynthesisTest"] == ["ScriptedLoadableModuleTest"]
    test_methods = {n.name for n in classes["MRISynthesisTest"].body if isinstance(n, ast.FunctionDef)}
    assert {"setUp", "runTest"} <= test_methods
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert 'SAMPLE_NAME = "MRISynthesis phantom"' in source
    assert "registerCustomSampleDataSource" in source and "customDownloader=loadPhantomSample" in source
    assert 'slicer.app.connect("startupCompleted()", registerSampleData)' in source
