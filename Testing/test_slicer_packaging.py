"""Slicer extension packaging: CMake lists, extension description, icons, the .ui file, import hygiene,
and what the Extensions Index needs: catalogue entry, licence, screenshot, requirements.txt.

Nothing here needs the Slicer application: CMake files are read as text, the .ui file with
an XML parser, the module's Python file with ``ast``; import checks run in a fresh interpreter.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
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
    "prepareCheckBox": "QCheckBox",
    "brainExtractionComboBox": "QComboBox",
    "brainMaskSelector": "qMRMLNodeComboBox",
    "metricsProtocolComboBox": "QComboBox",
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
    "metricsProtocol": ("metricsProtocolComboBox", "QComboBox"),
    "keepStage1": ("keepStage1CheckBox", "QCheckBox"),
    "tumourMaps": ("tumourMapsCheckBox", "QCheckBox"),
    "prepareInputs": ("prepareCheckBox", "QCheckBox"),
    "brainExtraction": ("brainExtractionComboBox", "QComboBox"),
    "brainMask": ("brainMaskSelector", "qMRMLNodeComboBox"),
    "uncertaintySamples": ("uncertaintySamplesSpinBox", "QSpinBox"),
}

QT_CLASSES = {"QWidget", "QLabel", "QComboBox", "QCheckBox", "QPushButton", "QProgressBar", "QPlainTextEdit",
              "QSpinBox"}


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
SHIPPED = ("__init__.py", "sequences.py", "metrics/", "models/", "core/", "clinical/", "worker/", "scene/",
           "phantom/", "data/models/demo/")
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

#: The Extensions Index category of this extension (root CMakeLists.txt and the catalogue entry).
CATEGORY = "Image Synthesis"
CATALOG_FILE = ROOT / "Resources" / "MRISynthesis.json"
CATALOG_SCHEMA_URL = ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                      "slicer-extension-catalog-entry-schema-v1.0.1.json#")

#: What the Extensions Index schema v1.0.1 (Slicer/Slicer, Schemas/) asks of a catalogue entry,
#: restated in JSON-schema form: three required keys, no others than those below, these types and values.
CATALOG_RULES: dict = {
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "enum": [1, 3, 5]},
    },
}

JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}


def rule_violations(value: object, rules: dict, where: str = "catalogue entry") -> list[str]:
    """Where ``value`` breaks ``rules`` (the subset of JSON schema :data:`CATALOG_RULES` uses)."""
    kind = rules["type"]
    if not isinstance(value, JSON_TYPES[kind]) or (kind == "integer" and isinstance(value, bool)):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    errors = []
    if "enum" in rules and value not in rules["enum"]:
        errors.append(f"{where}: {value!r} is not one of {rules['enum']}")
    if kind == "object":
        errors += [f"{where}: {key!r} is required" for key in rules.get("required", []) if key not in value]
        known = rules.get("properties", {})
        if rules.get("additionalProperties", True) is False:
            errors += [f"{where}: {key!r} is not allowed" for key in value if key not in known]
        for key, item in value.items():
            if key in known:
                errors += rule_violations(item, known[key], f"{where}.{key}")
    if kind == "array" and "items" in rules:
        for index, item in enumerate(value):
            errors += rule_violations(item, rules["items"], f"{where}[{index}]")
    return errors


def catalog_entry() -> dict:
    return json.loads(CATALOG_FILE.read_text(encoding="utf-8"))


def cmake_list(values: list[str]) -> list[str]:
    """A CMake list value (separate arguments and/or ``;``-joined), "NA" meaning none."""
    return [item for value in values for item in value.split(";") if item and item != "NA"]


def test_category_is_image_synthesis_in_cmake_and_the_catalogue() -> None:
    """Both places that name the Extensions Manager category agree on "Image Synthesis"."""
    assert cmake_sets(ROOT / "CMakeLists.txt")["EXTENSION_CATEGORY"] == [CATEGORY], "CMakeLists.txt EXTENSION_CATEGORY"
    assert catalog_entry()["category"] == CATEGORY, "MRISynthesis.json category"


def test_extension_description_files_agree_with_cmake() -> None:
    """The catalogue entry (the only description file kept; the build writes the .s4ext) matches CMake."""
    cmake = cmake_sets(ROOT / "CMakeLists.txt")
    project = re.search(r"\bproject\(\s*(\w+)", cmake_text(ROOT / "CMakeLists.txt")).group(1)
    assert CATALOG_FILE.name == f"{project}.json", "catalogue file is named after the CMake project"
    assert not (ROOT / "Resources" / f"{project}.s4ext").exists(), "Resources/*.s4ext: the Slicer build generates it"
    catalog = catalog_entry()
    assert catalog["$schema"] == CATALOG_SCHEMA_URL, "MRISynthesis.json $schema"
    assert catalog["scm_url"] == cmake["EXTENSION_HOMEPAGE"][0].rstrip("/") + ".git", "MRISynthesis.json scm_url"
    assert catalog["scm_revision"] == "main", "MRISynthesis.json scm_revision"
    assert catalog["category"] == cmake["EXTENSION_CATEGORY"][0], "MRISynthesis.json category"
    assert catalog["build_dependencies"] == cmake_list(cmake["EXTENSION_DEPENDS"]), \
        "MRISynthesis.json build_dependencies vs EXTENSION_DEPENDS"


def test_catalogue_entry_follows_the_extensions_index_schema() -> None:
    """MRISynthesis.json keeps to the v1.0.1 catalogue-entry rules (checked without any schema library)."""
    assert rule_violations(catalog_entry(), CATALOG_RULES) == [], "MRISynthesis.json"


def test_catalogue_entry_validates_with_jsonschema() -> None:
    """The same rules through a real JSON-schema validator, where jsonschema is installed."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(CATALOG_RULES)
    errors = [error.message for error in jsonschema.Draft7Validator(CATALOG_RULES).iter_errors(catalog_entry())]
    assert errors == [], "MRISynthesis.json"


@pytest.mark.parametrize("change", [
    {"tier": 2}, {"tier": True}, {"enabled": 1}, {"scm_type": "svn"}, {"build_dependencies": "PyTorch"},
    {"build_dependencies": [1]}, {"keywords": "MRI"}, {"category": None}, {"scm_url": None},
])
def test_catalogue_rules_reject_broken_entries(change: dict) -> None:
    """The hand-written checks catch what the schema forbids (None deletes a required key)."""
    entry = {key: value for key, value in {**catalog_entry(), **change}.items() if value is not None}
    assert rule_violations(entry, CATALOG_RULES) != [], f"accepted {change}"


#: Addresses of files in a GitHub repository at a branch: raw.githubusercontent.com/<org>/<repo>/<branch>/<path>
#: and github.com/<org>/<repo>/(blob|raw)/<branch>/<path>.
REPOSITORY_FILE_URL = re.compile(
    r"https://(?:raw\.githubusercontent\.com/(?P<org1>[\w.-]+)/(?P<repo1>[\w.-]+)/(?:refs/heads/)?(?P<branch1>[\w.-]+)"
    r"|github\.com/(?P<org2>[\w.-]+)/(?P<repo2>[\w.-]+)/(?:blob|raw)/(?P<branch2>[\w.-]+))/(?P<path>[^\s\"'#?)]+)")


def description_urls() -> list[str]:
    """Every URL in the root CMakeLists.txt values and the catalogue entry's string values."""
    values = [item for items in cmake_sets(ROOT / "CMakeLists.txt").values() for item in items]
    values += [value for value in catalog_entry().values() if isinstance(value, str)]
    values += [item for value in catalog_entry().values() if isinstance(value, list) for item in value]
    return [url for value in values for url in re.findall(r"https?://\S+", value)]


def git_tracked_files() -> set[str]:
    """``git ls-files`` of this checkout (skips the test outside a git checkout)."""
    try:
        done = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, timeout=60)
    except OSError:
        pytest.skip("git is not installed")
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return set(done.stdout.decode("utf-8").split("\0")) - {""}


def test_urls_into_this_repository_name_files_tracked_by_git() -> None:
    """Icon, screenshot and any other address into this repository name a committed file on main."""
    homepage = cmake_sets(ROOT / "CMakeLists.txt")["EXTENSION_HOMEPAGE"][0].rstrip("/")
    org, repo = homepage.split("/")[-2:]
    tracked = git_tracked_files()
    found = {}
    for url in description_urls():
        match = REPOSITORY_FILE_URL.match(url)
        if match and (match["org1"] or match["org2"]).lower() == org.lower() \
                and (match["repo1"] or match["repo2"]).lower() == repo.lower():
            found[url] = match["path"]
            assert (match["branch1"] or match["branch2"]) == "main", f"{url}: not on branch main"
    cmake = cmake_sets(ROOT / "CMakeLists.txt")
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in " ".join(cmake[key]).split():
            assert url in found, f"{key} {url} does not point into {homepage}"
    untracked = sorted(f"{url} -> {path}" for url, path in found.items() if path not in tracked)
    assert untracked == [], "not tracked by git (git add them):\n  " + "\n  ".join(untracked)


@pytest.mark.parametrize("path", [MODULE_DIR / "Resources" / "Icons" / "MRISynthesis.png",
                                  ROOT / "Resources" / "MRISynthesis.png"])
def test_icons_are_128_pixel_pngs_with_content(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        pixels = image.convert("RGBA").getextrema()
    assert all(high > low for low, high in pixels[:3]), "icon is a flat colour"


SCREENSHOT = ROOT / "Resources" / "Screenshots" / "MRISynthesis.png"


def test_screenshot_is_a_small_png_with_content() -> None:
    """The Extensions Manager's screenshot (scripts/render_screenshot.py) is a real, modest PNG."""
    urls = " ".join(cmake_sets(ROOT / "CMakeLists.txt")["EXTENSION_SCREENSHOTURLS"]).split()
    assert any(url.endswith("/" + SCREENSHOT.relative_to(ROOT).as_posix()) for url in urls), \
        "EXTENSION_SCREENSHOTURLS does not name Resources/Screenshots/MRISynthesis.png"
    assert SCREENSHOT.stat().st_size < 300_000, "Resources/Screenshots/MRISynthesis.png is over 300 kB"
    with Image.open(SCREENSHOT) as image:
        assert image.format == "PNG", "Resources/Screenshots/MRISynthesis.png is not a PNG"
        width, height = image.size
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert width >= 600 and height >= 300, f"screenshot is only {width} x {height} pixels"
    assert grey.std() > 20, "screenshot is (nearly) blank"


def test_licence_is_the_apache_2_text() -> None:
    """LICENSE holds the complete Apache License 2.0 (terms and appendix); pyproject says so too."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.strip().splitlines()]
    assert lines[:2] == ["Apache License", "Version 2.0, January 2004"], "LICENSE heading"
    sections = ["Definitions", "Grant of Copyright License", "Grant of Patent License", "Redistribution",
                "Submission of Contributions", "Trademarks", "Disclaimer of Warranty", "Limitation of Liability",
                "Accepting Warranty or Additional Liability"]
    for number, name in enumerate(sections, start=1):
        assert f"{number}. {name}." in text, f"LICENSE section {number} ({name}) missing"
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License to your work." in text
    assert lines[-1] == "limitations under the License.", "LICENSE does not end with the appendix"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license\s*=\s*\{\s*text\s*=\s*"Apache-2.0"\s*\}', pyproject, flags=re.M), "pyproject license"


# --------------------------------------------------------------------------- requirements.txt

REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
#: Import names Slicer provides (its own modules and the packages it bundles), and those of the PyTorch
#: extension (PyTorchUtils, and torch, which it installs): none belongs in requirements.txt.
PROVIDED_BY_SLICER = {"slicer", "qt", "ctk", "vtk", "SampleData", "numpy", "SimpleITK", "PIL", "requests",
                      "PyTorchUtils", "torch", "pydicom"}  # pydicom: Slicer's DICOM module is built on it
#: Imported by what Slicer runs but not needed there, with the reason.
NOT_NEEDED_IN_SLICER = {"tqdm": "progress bar of the command line on a terminal (core/progress.py)",
                        "torchvision": "only tried when torchmetrics fails to import, to name the cause "
                                       "(metrics/brasyn.py)"}


def requirements() -> list[Requirement]:
    """The requirements of MRISynthesis/Resources/requirements.txt, one per non-comment line."""
    lines = [line.split("#", 1)[0].strip() for line in REQUIREMENTS_FILE.read_text(encoding="utf-8").splitlines()]
    return [Requirement(line) for line in lines if line]


def test_requirements_have_version_floors() -> None:
    """Each line is a plain requirement with a ">=" floor (no URLs, markers or extras)."""
    for requirement in requirements():
        assert any(spec.operator == ">=" for spec in requirement.specifier), f"requirements.txt {requirement}: no floor"
        assert not (requirement.url or requirement.marker or requirement.extras), f"requirements.txt {requirement}"


def test_requirements_name_the_engine_packages_and_not_what_slicer_ships() -> None:
    names = {canonicalize_name(r.name) for r in requirements()}
    assert {"monai", "scipy", "nibabel"} <= names, "requirements.txt misses an engine package"
    assert not names & {"torch", "simpleitk", "numpy", "vtk"}, "requirements.txt lists what Slicer or PyTorch provide"
    assert len(names) == len(requirements()), "requirements.txt names a package twice"


def test_requirements_are_met_here_so_the_floors_are_real() -> None:
    """The environment the tests run in satisfies every floor (prerelease versions count)."""
    for requirement in requirements():
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), \
            f"requirements.txt {requirement}: installed {installed}"


def optional_imports(tree: ast.AST) -> set[int]:
    """ids of import statements inside ``try`` blocks that catch ImportError: the code works without them."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                "ImportError" in ast.dump(handler.type or ast.Name("")) for handler in node.handlers):
            optional.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return optional


def third_party_imports(paths: list[Path]) -> dict[str, str]:
    """Top-level names of absolute imports outside the standard library -> first file importing them
    (imports guarded by ``except ImportError`` are optional and left out)."""
    found: dict[str, str] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        optional = optional_imports(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("MRISynthesisLib", "__future__"):
                    found.setdefault(top, path.relative_to(ROOT).as_posix())
    return found


def test_requirements_cover_what_slicer_runs() -> None:
    """Every third-party package the module and the installed library import is provided or listed."""
    paths = [MODULE_FILE] + [ROOT / name for name in sorted(shipped_library_files()) if name.endswith(".py")]
    distributions = importlib.metadata.packages_distributions()
    listed = {canonicalize_name(r.name) for r in requirements()}
    missing = []
    for module, where in sorted(third_party_imports(paths).items()):
        if module in PROVIDED_BY_SLICER or module in NOT_NEEDED_IN_SLICER:
            continue
        if not {canonicalize_name(d) for d in distributions.get(module, [module])} & listed:
            missing.append(f"{module} (imported by {where})")
    assert missing == [], "add to MRISynthesis/Resources/requirements.txt:\n  " + "\n  ".join(missing)


def test_module_asks_for_the_same_floors_as_requirements_txt() -> None:
    """Requirement strings in MRISynthesis.py (what it pip-installs on demand) match requirements.txt."""
    in_file = {canonicalize_name(r.name): str(r.specifier) for r in requirements()}
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"[A-Za-z0-9_.-]+\s*(>=|==|~=).+", node.value):
            requirement = Requirement(node.value)
            name = canonicalize_name(requirement.name)
            if name != "torch":
                assert in_file.get(name) == str(requirement.specifier), \
                    f"MRISynthesis.py asks for {node.value!r}, requirements.txt has {in_file.get(name)!r}"


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
        if cls == "qMRMLNodeComboBox":  # a node class, or a Union of node classes
            assert re.fullmatch(r"vtkMRML\w+Node|Union\[vtkMRML\w+Node(, vtkMRML\w+Node)+\]", annotation), \
                f"{field}: {annotation} cannot be shown in a {cls}"
            continue
        if cls == "QComboBox":  # an enum of the module with a label() for the list's texts
            assert annotation in module_enums_with_labels(), f"{field}: {annotation} cannot be shown in a {cls}"
            continue
        if cls == "QSpinBox":  # a whole number
            assert annotation == "int", f"{field}: {annotation} cannot be shown in a {cls}"
            continue
        assert annotation == "bool", f"{field}: {annotation} cannot be shown in a {cls}"


def module_enums_with_labels() -> set:
    """Names of the module's ``enum.Enum`` classes that define ``label()`` (what a combo-box connector shows)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)
            and any(ast.unparse(base) == "enum.Enum" for base in node.bases)
            and any(isinstance(item, ast.FunctionDef) and item.name == "label" for item in node.body)}


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
    """Slicer's own process runs the worker's supervisor and the scene bridge: torch and MONAI stay out of it
    (they load in the worker process only)."""
    output = run_python(
        "import sys, MRISynthesisLib.core.jobs, MRISynthesisLib.scene.flow, MRISynthesisLib.scene.validation_table, "
        "MRISynthesisLib.scene.assignment, MRISynthesisLib.scene.panel, MRISynthesisLib.worker.supervisor, "
        "MRISynthesisLib.core.python_packages; "
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
