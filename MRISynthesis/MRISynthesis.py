"""MRISynthesis: 3D Slicer module that synthesises missing brain MRI sequences.

The widget is Qt wiring only; the logic delegates to the engine (``MRISynthesisLib``):
``MRISynthesisLib.scene`` converts nodes to images and results to nodes, and
``MRISynthesisLib.worker`` runs the synthesis in a separate worker process (Slicer's own
``PythonSlicer``) supervised by a background thread, so a crash or an out-of-memory kill of
the worker cannot take Slicer and the unsaved scene down, and Cancel ends it at once.
Nothing heavy (torch, MONAI, SimpleITK) is imported when Slicer starts: the engine is
imported on first use, after its Python packages were checked (``Resources/requirements.txt``).
"""
from __future__ import annotations

import enum
import importlib.util
import inspect
import logging
import os
import shutil
import sys
import time
from typing import Any, Optional, Union

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer before 5.4 has no translation helpers
    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text


def _add_library_path() -> None:
    """Make ``MRISynthesisLib`` importable: installed beside this file, or one level up in a source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "MRISynthesisLib", "__init__.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return


_add_library_path()

from MRISynthesisLib.sequences import SEQUENCES, Sequence  # noqa: E402  (light: no third-party imports)

#: PyTorch, installed through the PyTorch extension (PyTorchUtils) when it is there.
TORCH_REQUIREMENT = "torch>=2.0"
#: Every other Python package the engine and the phantom sample need, with version floors.
REQUIREMENTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
#: Item data of the model list entry that opens a file dialog.
LOAD_MODEL_ITEM = "<load model from file>"
SETTINGS_GROUP = "MRISynthesis"
#: How often (ms) the widget polls a running job.
POLL_INTERVAL_MS = 100
#: Uncertainty samples by default: the largest N >= 4 whose cost stays within 2x the synthesis on the demo
#: case, else 0 (off). Measured (python benchmarks/uncertainty.py --samples 3 4 6, CPU, one thread, idle 2-core
#: machine): 3 members cost 1.54x, 4 members 1.88x, 6 members 2.92x the synthesis, so 4.
DEFAULT_UNCERTAINTY_SAMPLES = 4


def _sample_count(value: Any) -> int:
    """A remembered number of uncertainty samples: 0 or 2-32 (anything else: the default)."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        return DEFAULT_UNCERTAINTY_SAMPLES
    return count if count == 0 or 2 <= count <= 32 else DEFAULT_UNCERTAINTY_SAMPLES


SAMPLE_NAME = "MRISynthesis phantom"


class Device(enum.Enum):
    """Where the networks run; the value is what the engine expects."""

    AUTO = "auto"
    GPU = "cuda"
    APPLE_GPU = "mps"
    CPU = "cpu"

    def label(self) -> str:
        """Text shown in the device list (used by the parameter node's combo-box connector)."""
        return {"auto": _("Auto"), "cuda": _("GPU (CUDA)"), "mps": _("Apple GPU (MPS)"), "cpu": _("CPU")}[self.value]


class BrainExtraction(enum.Enum):
    """How *Prepare inputs* finds the brain; the value is the engine's backend or the extension's key."""

    MASK = "mask"
    HD_BET = "hd-bet"
    HD_BRAIN_EXTRACTION = "hd-brain-extraction"
    SWISS_SKULL_STRIPPER = "swiss-skull-stripper"

    def label(self) -> str:
        """Text shown in the brain-extraction list (used by the parameter node's combo-box connector)."""
        return {"mask": _("The brain mask below"), "hd-bet": _("HD-BET (in the worker; Python package)"),
                "hd-brain-extraction": _("HD Brain Extraction extension"),
                "swiss-skull-stripper": _("Swiss Skull Stripper extension")}[self.value]


class MetricsProtocol(enum.Enum):
    """How Validate scores a synthetic sequence; the value is the engine's protocol name (``metrics.protocols``)."""

    BRAIN = "brain"
    BRASYN = "brasyn"

    def label(self) -> str:
        """Text shown in the scoring list (used by the parameter node's combo-box connector)."""
        return {"brain": _("Over the brain (stricter)"),
                "brasyn": _("BraSyn challenge (whole volume; compare with the paper)")}[self.value]


#
# Module
#


class MRISynthesis(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Synthesis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["MRISynthesis contributors"]
        self.parent.helpText = _(
            "Synthesise missing brain MRI sequences (T1, T1 contrast-enhanced, T2, T2-FLAIR) from the ones "
            "a patient has, with the two-stage method that won BraSyn 2024 (2D HF-GAN, then a 3D Refiner). "
            "Outputs are new volumes named '(synthetic)' with maps that show where the refiner changed the "
            "image. <b>Synthetic images are not acquired images: never use them for diagnosis.</b>")
        self.parent.acknowledgementText = _(
            "Method: two-stage synthesis with intensity encoding and a 3D Refiner (BraSyn 2024 winning "
            "solution). Built on PyTorch, MONAI and SimpleITK.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Add the generated phantom case to the Sample Data module."""
    import SampleData

    iconPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "MRISynthesis.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MRISynthesis", sampleName=SAMPLE_NAME, uris=[], fileNames=[], nodeNames=[],
        thumbnailFileName=iconPath, customDownloader=loadPhantomSample)


def loadPhantomSample(source: Any = None) -> Optional[dict]:
    """Sample Data button: generate the phantom case locally and load it (nothing is downloaded)."""
    logic = MRISynthesisLogic()
    if not logic.ensurePackages(_("the phantom sample data")):
        return None
    with slicer.util.tryWithErrorDisplay(_("Could not generate the phantom case."), waitCursor=True):
        return logic.loadPhantom()
    return None


#
# Parameter node
#


@parameterNodeWrapper
class MRISynthesisParameterNode:
    """The module's state, saved with the scene: the four inputs and the options."""

    t1n: vtkMRMLScalarVolumeNode
    t1c: vtkMRMLScalarVolumeNode
    t2w: vtkMRMLScalarVolumeNode
    t2f: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Device = Device.AUTO
    keepStage1: bool = False
    tumourMaps: bool = True
    #: Samples of the uncertainty map (0: off); the default is measured (benchmarks/uncertainty.py).
    uncertaintySamples: int = DEFAULT_UNCERTAINTY_SAMPLES
    prepareInputs: bool = False
    brainExtraction: BrainExtraction = BrainExtraction.MASK
    metricsProtocol: MetricsProtocol = MetricsProtocol.BRAIN
    brainMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]


#
# Widget
#


class MRISynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: Qt wiring only; every decision and computation is in the logic / library."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[MRISynthesisLogic] = None
        self._parameterNode: Optional[MRISynthesisParameterNode] = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobKind = ""
        self._selectedInputs = None
        self._discardResult = False
        self._previousModelIndex = 0
        self._catalogueNames: set = set()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onPollJob)

    # ---------------------------------------------------------------- set-up

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRISynthesisLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)

        self.ui.synthesizeButton.connect("clicked(bool)", self.onSynthesize)
        self.ui.validateButton.connect("clicked(bool)", self.onValidate)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.enabled = False
        self.ui.metricsCollapsibleButton.collapsed = True
        self.populateModels()
        self.initializeParameterNode()

    def onReload(self) -> None:
        """*Reload* and *Reload and Test*: also forget the engine's modules, so edits to ``MRISynthesisLib``
        take effect without restarting Slicer (the worker process imports them afresh anyway)."""
        for name in [n for n in sys.modules if n == "MRISynthesisLib" or n.startswith("MRISynthesisLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        """Module widget destroyed (application exit, module reload): stop a running job (ends its process)."""
        if self._job is not None:
            self._discardResult = True
            self._job.cancel()
        self._timer.stop()
        self.removeObservers()
        supervisor = sys.modules.get("MRISynthesisLib.worker.supervisor")
        if supervisor is not None:
            supervisor.discard_standby()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self._job is None and not self.logic.missingPackages():  # a worker waits for the next job, loaded
            from MRISynthesisLib.worker.supervisor import prestart_worker

            prestart_worker(self.logic.pythonExecutable(), self.logic.workerCpuThreads(), self.currentModel())

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    # ---------------------------------------------------------------- scene and parameter node

    def onSceneStartClose(self, caller, event) -> None:
        """Closing the scene cancels a running job; its result is never added."""
        if self._job is not None:
            self._discardResult = True
            self._job.cancel()
            self.appendLog(_("Scene closed: synthesis cancelled."))
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        """New volumes may fill empty slots; wait until the loader has named the node."""
        if node is not None and node.IsA("vtkMRMLScalarVolumeNode"):
            qt.QTimer.singleShot(0, self.autoAssign)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node) -> None:
        """An input of the running job left the scene: say so now (its results will not reference it)."""
        if self._job is None or self._selectedInputs is None or node is None:
            return
        from MRISynthesisLib.scene.nodes import node_label

        for sequence, inputNode in self._selectedInputs.nodes.items():
            if inputNode is node:
                self.appendLog(_("{name} ({sequence} input) was removed from the scene; the job goes on with its "
                                 "copy and the results will not reference it.").format(
                    name=node_label(node), sequence=sequence.display_name))

    def initializeParameterNode(self) -> None:
        parameterNode = self.logic.getParameterNode()
        if not parameterNode.model:
            self.restoreSettings(parameterNode)
        self.setParameterNode(parameterNode)
        self.autoAssign()

    def setParameterNode(self, parameterNode: Optional[MRISynthesisParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.selectModel(self._parameterNode.model)
            self.updateGUI()

    def selectedNodes(self) -> dict:
        """``{Sequence: node or None}`` from the four selectors (through the parameter node)."""
        if not self._parameterNode:
            return dict.fromkeys(SEQUENCES)
        return {sequence: getattr(self._parameterNode, sequence.value) for sequence in SEQUENCES}

    def autoAssign(self) -> None:
        """Fill empty input slots from node names; the user's choices are kept."""
        if not self._parameterNode or self._job is not None:
            return
        filled = self.logic.autoAssign(self.selectedNodes())
        for sequence, node in filled.items():
            if getattr(self._parameterNode, sequence.value) is not node:
                setattr(self._parameterNode, sequence.value, node)
        self.updateGUI()

    # ---------------------------------------------------------------- settings

    def restoreSettings(self, parameterNode: MRISynthesisParameterNode) -> None:
        """Options of the last session (``qt.QSettings``) for a new parameter node."""
        settings = qt.QSettings()
        settings.beginGroup(SETTINGS_GROUP)
        parameterNode.model = str(settings.value("Model", "") or "")
        device = str(settings.value("Device", Device.AUTO.value) or Device.AUTO.value)
        parameterNode.device = Device(device) if device in {d.value for d in Device} else Device.AUTO
        parameterNode.keepStage1 = slicer.util.toBool(settings.value("KeepStage1", False))
        parameterNode.tumourMaps = slicer.util.toBool(settings.value("TumourMaps", True))
        parameterNode.uncertaintySamples = _sample_count(settings.value("UncertaintySamples",
                                                                        DEFAULT_UNCERTAINTY_SAMPLES))
        extraction = str(settings.value("BrainExtraction", BrainExtraction.MASK.value) or BrainExtraction.MASK.value)
        parameterNode.brainExtraction = (BrainExtraction(extraction) if extraction in {b.value for b in BrainExtraction}
                                         else BrainExtraction.MASK)
        settings.endGroup()

    def saveSettings(self) -> None:
        if not self._parameterNode:
            return
        settings = qt.QSettings()
        settings.beginGroup(SETTINGS_GROUP)
        settings.setValue("Model", self._parameterNode.model)
        settings.setValue("Device", self._parameterNode.device.value)
        settings.setValue("KeepStage1", self._parameterNode.keepStage1)
        settings.setValue("TumourMaps", self._parameterNode.tumourMaps)
        settings.setValue("UncertaintySamples", self._parameterNode.uncertaintySamples)
        settings.setValue("BrainExtraction", self._parameterNode.brainExtraction.value)
        settings.setValue("ModelFiles", self.userModelFiles())
        settings.endGroup()

    def userModelFiles(self) -> list:
        """Model files and folders the user loaded (remembered between sessions)."""
        combo = self.ui.modelComboBox
        items = [combo.itemData(index) for index in range(combo.count)]
        return [data for data in items if data and data != LOAD_MODEL_ITEM and data not in self._catalogueNames]

    # ---------------------------------------------------------------- model list

    def populateModels(self) -> None:
        """Catalogue bundles, model files loaded before, and "Load model from file..."."""
        combo = self.ui.modelComboBox
        combo.clear()
        catalogue = self.logic.availableModels()
        self._catalogueNames = {info.name for info in catalogue}
        for info in catalogue:
            combo.addItem(info.name, info.name)
            combo.setItemData(combo.count - 1, info.description or info.name, qt.Qt.ToolTipRole)
        remembered = qt.QSettings().value(f"{SETTINGS_GROUP}/ModelFiles", []) or []
        if isinstance(remembered, str):  # QSettings gives a single string for a one-item list
            remembered = [remembered]
        for path in remembered:
            if os.path.exists(str(path)):
                self.addModelFile(str(path))
        combo.addItem(_("Load model from file..."), LOAD_MODEL_ITEM)

    def addModelFile(self, path: str) -> int:
        """Add a model file or folder to the list (before "Load model from file..."); returns its index."""
        combo = self.ui.modelComboBox
        index = combo.findData(path)
        if index >= 0:
            return index
        loadIndex = combo.findData(LOAD_MODEL_ITEM)
        position = loadIndex if loadIndex >= 0 else combo.count
        combo.insertItem(position, os.path.basename(path.rstrip("/\\")), path)
        combo.setItemData(position, path, qt.Qt.ToolTipRole)
        return position

    def selectModel(self, model: str) -> None:
        combo = self.ui.modelComboBox
        index = combo.findData(model) if model else -1
        if index < 0 and model and os.path.exists(model):
            index = self.addModelFile(model)
        if index < 0:
            index = 0 if combo.itemData(0) != LOAD_MODEL_ITEM else -1
        combo.currentIndex = index
        self._previousModelIndex = max(index, 0)
        if self._parameterNode and index >= 0 and combo.itemData(index) != LOAD_MODEL_ITEM:
            if self._parameterNode.model != combo.itemData(index):
                self._parameterNode.model = combo.itemData(index)

    def onModelActivated(self, index: int) -> None:
        combo = self.ui.modelComboBox
        if combo.itemData(index) == LOAD_MODEL_ITEM:
            path = qt.QFileDialog.getOpenFileName(
                slicer.util.mainWindow(), _("Load MRISynthesis model"), "",
                _("Model bundle or checkpoint (bundle.json *.pt *.pth);;All files (*)"))
            if not path:
                combo.currentIndex = self._previousModelIndex
                return
            if os.path.basename(path) == "bundle.json":
                path = os.path.dirname(path)
            index = self.addModelFile(path)
            combo.currentIndex = index
        self._previousModelIndex = index
        if self._parameterNode:
            self._parameterNode.model = combo.itemData(index)
        self.saveSettings()

    def currentModel(self) -> Optional[str]:
        combo = self.ui.modelComboBox
        data = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else None
        return None if not data or data == LOAD_MODEL_ITEM else str(data)

    # ---------------------------------------------------------------- GUI state

    def updateGUI(self, caller=None, event=None) -> None:
        """Missing line, button texts, enabled states and their reasons, worded here (translatable) from the
        engine's structured state (present/missing sequences, reason codes, assignment notes)."""
        if not self._parameterNode:
            return
        selected = self.selectedNodes()
        state = self.logic.selectionState(selected, hasModel=self.currentModel() is not None,
                                          busy=self._job is not None)
        notes = [self.assignmentNoteText(note) for note in self.logic.assignmentNotes(selected)]
        self.ui.missingLabel.text = " ".join([self.missingText(state)] + notes)
        self.ui.synthesizeButton.text = self.synthesizeText(state)
        self.ui.synthesizeButton.enabled = state.synthesize_enabled
        self.ui.synthesizeButton.toolTip = self.synthesizeToolTip(state)
        self.ui.validateButton.enabled = state.validate_enabled
        self.ui.validateButton.toolTip = self.validateToolTip(state)
        self.ui.cancelButton.enabled = self._job is not None and not self._job.cancel_requested
        self.saveSettings()

    @staticmethod
    def reasonText(reason) -> str:
        """Why a button does not run, for an engine ``PanelReason`` (keyed by member name)."""
        texts = {
            "BUSY": _("A synthesis is running; wait for it or cancel it."),
            "NO_INPUT": _("Select at least one input volume (T1, T1c, T2 or FLAIR)."),
            "NOTHING_MISSING": _("Nothing is missing: all four sequences are selected. Use Validate on this case."),
            "NO_MODEL": _("No model: install a model bundle or use 'Load model from file...'."),
            "NEEDS_ALL_FOUR": _("Validation needs all four sequences (each is synthesised from the other three)."),
        }
        return texts[reason.name]

    @staticmethod
    def missingText(state) -> str:
        if not state.present:
            return _("No input volume selected.")
        if not state.missing:
            return _("All four sequences are present.")
        return _("Missing: {names}").format(names=", ".join(s.display_name for s in state.missing))

    @staticmethod
    def synthesizeText(state) -> str:
        if state.present and state.missing:
            return _("Synthesize {names}").format(names=" + ".join(s.short_name for s in state.missing))
        return _("Synthesize missing")

    def synthesizeToolTip(self, state) -> str:
        if not state.synthesize_enabled:
            return self.reasonText(state.synthesize_reason)
        return _("Synthesize {missing} from {present}.").format(
            missing=", ".join(s.display_name for s in state.missing),
            present=", ".join(s.display_name for s in state.present))

    def validateToolTip(self, state) -> str:
        if not state.validate_enabled:
            return self.reasonText(state.validate_reason)
        return _("Leave-one-out: synthesise each sequence from the other three and compare with the acquired one.")

    @staticmethod
    def assignmentNoteText(note) -> str:
        """An engine ``AssignmentNote``: several volumes look like one sequence, so its slot stayed empty."""
        return _("{count} volumes look like {sequence} ({names}): choose one").format(
            count=len(note.candidates), sequence=note.sequence.short_name, names=", ".join(note.candidates))

    @staticmethod
    def distributionNoteText(note) -> str:
        """An engine ``DistributionNote`` (out-of-distribution check), keyed by its reason's member name."""
        v = note.values
        name = note.sequence.display_name if note.sequence is not None else ""
        if note.reason.name == "NOT_CHECKED":
            return _("The model carries no statistics of its training data: whether these inputs resemble it was "
                     "not checked.")
        if note.reason.name == "STATISTICS_UNREADABLE":
            return _("The model's statistics of its training data could not be read (a newer or damaged model "
                     "bundle): whether these inputs resemble it was not checked.")
        if note.reason.name == "NOT_SKULL_STRIPPED":
            return _("{name} is not skull-stripped ({percent:.0f} % of its non-zero voxels lie outside the brain; "
                     "training data: at most {trained:.0f} %).").format(name=name, percent=v["percent"],
                                                                       trained=v["trained_percent"])
        if note.reason.name == "BRAIN_VOLUME":
            return _("{name}: brain volume {ml:.0f} ml, the training data {low:.0f}-{high:.0f} ml.").format(
                name=name, ml=v["ml"], low=v["trained_min"], high=v["trained_max"])
        if note.reason.name == "VOXEL_SIZE":
            return _("{name}: voxel size {spacing} mm, the model was trained at {trained} mm.").format(
                name=name, spacing=v["spacing"], trained=v["trained"])
        if note.reason.name == "INTENSITY":
            statistic = _("median") if v["level"] == 50 else _("{level}th percentile").format(level=v["level"])
            return _("{name}: intensities unlike the training data ({statistic} {value:.2f}, trained "
                     "{low:.2f}-{high:.2f}).").format(name=name, statistic=statistic, value=v["value"],
                                                      low=v["trained_min"], high=v["trained_max"])
        return _("{name}: intensities relate to {other} unlike in the training data (rank correlation {value:.2f}, "
                 "trained {low:.2f} to {high:.2f}).").format(name=name, other=v["other"].display_name,
                                                             value=v["value"], low=v["trained_min"],
                                                             high=v["trained_max"])

    def appendLog(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')}  {text}"
        self.ui.logTextEdit.appendPlainText(line)
        logging.info(f"MRISynthesis: {text}")

    # ---------------------------------------------------------------- running

    def options(self) -> dict:
        """The job's options from the parameter node (HD-BET: the selected mask, if any, is left out)."""
        node = self._parameterNode
        mask = None if node.brainExtraction is BrainExtraction.HD_BET else node.brainMask
        return dict(device=node.device.value, tumourMaps=node.tumourMaps, prepare=node.prepareInputs,
                    brainMask=mask, keepStage1=node.keepStage1, uncertaintySamples=node.uncertaintySamples)

    def resolveBrainExtraction(self) -> bool:
        """Before a prepared job: the brain mask node the chosen brain extraction gives (False: do not start).

        A Slicer extension runs now, on the reference volume (the first selected one, as the preparation's
        reference), blocking like its own panel, after asking when it may download something. Its mask node
        is then selected below and the choice switches to *The brain mask below*, so that the user can check
        (or correct) that mask and the next click reuses it. HD-BET runs in the worker (no node needed).
        """
        from MRISynthesisLib.scene.brain_extraction_modules import EXTENSION_BACKENDS, needs_consent

        node = self._parameterNode
        extraction = node.brainExtraction
        if not node.prepareInputs or extraction is BrainExtraction.HD_BET:
            return True
        if extraction is BrainExtraction.MASK:
            if node.brainMask is None:
                slicer.util.errorDisplay(_("Prepare inputs needs a brain mask: select a label map or segmentation "
                                           "of the brain, or choose another brain extraction."),
                                         windowTitle=_("MRISynthesis"))
                return False
            return True
        title = EXTENSION_BACKENDS[extraction.value].title
        if needs_consent(extraction.value) and not slicer.util.confirmOkCancelDisplay(
                _("{tool} fetches HD-BET (from GitHub) and its weights (from Zenodo) and installs Python packages "
                  "on first use. Continue?").format(tool=title), windowTitle=_("MRISynthesis")):
            return False
        reference = next((n for n in self.selectedNodes().values() if n is not None), None)
        self.appendLog(_("Brain extraction with {tool} on {volume} (this can take minutes)...").format(
            tool=title, volume=reference.GetName() if reference else "?"))
        self.ui.statusLabel.text = _("Extracting the brain with {tool}...").format(tool=title)
        slicer.app.processEvents()
        try:
            with slicer.util.WaitCursor():
                mask = self.logic.extensionBrainMask(extraction.value, reference, node.device.value)
        except ValueError:
            self.ui.statusLabel.text = _("Brain extraction failed: nothing was synthesised.")
            raise
        node.brainMask = mask
        node.brainExtraction = BrainExtraction.MASK
        self.appendLog(_("Brain mask: {name}, now selected as the brain mask (check it before trusting the "
                         "result).").format(name=mask.GetName()))
        return True

    def onSynthesize(self) -> None:
        self.startJob("synthesis")

    def onValidate(self) -> None:
        self.startJob("validation")

    def startJob(self, kind: str) -> None:
        """Check packages, copy the inputs (main thread), then run the job in a worker process."""
        if self._job is not None or not self.logic.ensurePackages(_("synthesis")):
            return
        start = self.logic.startSynthesis if kind == "synthesis" else self.logic.startValidation
        try:
            selectedInputs = self.logic.copySelectedInputs(self.selectedNodes())  # inputs checked first
            if not self.resolveBrainExtraction():
                return
            options = self.options()
            if kind == "validation":
                options["metricsProtocol"] = self._parameterNode.metricsProtocol.value
            job = start(selectedInputs, self.currentModel(), **options)
        except ValueError as error:  # bad inputs: one line that names the node and the problem
            slicer.util.errorDisplay(str(error), windowTitle=_("MRISynthesis"))
            return
        for line in selectedInputs.messages:
            self.appendLog(line)
        self._job = job
        self._jobKind, self._selectedInputs, self._discardResult = kind, selectedInputs, False
        self.appendLog(_("Started {kind} with model {model} on {device}.").format(
            kind=kind, model=self.currentModel(), device=self._parameterNode.device.label()))
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Starting...")
        self._timer.start()
        self.updateGUI()

    def onCancel(self) -> None:
        """Cancel wins: a job that finished but whose result was not added yet drops it too."""
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            self.updateGUI()

    def onPollJob(self) -> None:
        """Timer tick on the main thread: show progress and log lines, then handle the finished job."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for event in job.poll():
            if event.kind == "log":
                self.appendLog(event.message)
        if not job.cancel_requested:
            self.ui.progressBar.setValue(int(round(job.fraction * 1000)))
            self.ui.statusLabel.text = job.message
        if job.done:
            self._timer.stop()
            self._job = None
            self.finishJob(job)
            self.updateGUI()

    def finishJob(self, job) -> None:
        """Add the result of a finished job, once, unless it was cancelled; show a failure otherwise.

        The result is claimed with ``job.take_result()``: a Cancel that came after the worker
        finished has already turned the job into CANCELLED, and then nothing is added.
        """
        if self._discardResult:
            job.cancel()  # scene closed or module cleaned up: the result must not be claimed
        result = job.take_result()
        if result is not None:
            with slicer.util.tryWithErrorDisplay(_("Could not add the results to the scene."), waitCursor=True):
                self.showResult(result)
        elif job.state.value == "failed" and job.error.code == "not-ready":
            self.offerPreparation(job.error.problems)
        elif job.state.value == "failed":
            self.ui.statusLabel.text = _("Failed: {reason}").format(reason=job.error.reason)
            self.appendLog(job.error.details)
            slicer.util.errorDisplay(job.error.reason, windowTitle=_("MRISynthesis failed"),
                                     detailedText=job.error.details)
        else:
            self.ui.statusLabel.text = _("Cancelled: nothing was added to the scene.")
            self.ui.progressBar.setValue(0)
        self._selectedInputs = None

    def offerPreparation(self, problems) -> None:
        """The inputs are not what the model expects: say why, nothing was synthesised; offer *Prepare inputs*."""
        self.ui.statusLabel.text = _("Not synthesised: the inputs need preparing.")
        for problem in problems:
            self.appendLog(_("Not ready: {problem}").format(problem=problem))
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setIcon(qt.QMessageBox.Warning)
        box.setWindowTitle(_("MRISynthesis: inputs not prepared"))
        box.setText(_("The model expects prepared brains (aligned, skull-stripped, about 1 mm). Nothing was "
                      "synthesised from these inputs:") + "\n\n- " + "\n- ".join(problems))
        box.setInformativeText(_("Prepare inputs aligns every series to the first one, keeps only the brain (a brain "
                                 "mask you select, or one made by HD-BET or a skull-stripping extension) and "
                                 "resamples for the model."))
        prepareButton = box.addButton(_("Prepare inputs"), qt.QMessageBox.AcceptRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.exec_()
        if box.clickedButton() == prepareButton and self._parameterNode:
            self._parameterNode.prepareInputs = True
            if self._parameterNode.brainExtraction is BrainExtraction.MASK and self._parameterNode.brainMask is None:
                self.appendLog(_("Select the brain mask (or another brain extraction) under the options, then "
                                 "click Synthesize again."))
            else:
                qt.QTimer.singleShot(0, lambda: self.startJob(self._jobKind or "synthesis"))

    def showResult(self, result) -> None:
        if self._jobKind == "validation":
            nodes = self.logic.addValidationResults(result, self._selectedInputs)
            self.ui.metricsTableView.setMRMLTableNode(nodes.table)
            self.ui.metricsCollapsibleButton.collapsed = False
            messages = [line for item in result for line in item.messages]
        else:
            nodes = self.logic.addSynthesisResult(result, self._selectedInputs,
                                                  keepStage1=self._parameterNode.keepStage1)
            messages = list(result.messages)
        for line in messages:
            self.appendLog(line)
        for line in nodes.messages:  # e.g. an input removed from the scene while the job ran
            self.appendLog(_("Note: {message}").format(message=line))
        for note in self.logic.distributionNotes(result):
            self.appendLog(_("Warning: {reason}").format(reason=self.distributionNoteText(note)))
        names = ", ".join(target.synthetic.GetName() for target in nodes.targets.values())
        self.appendLog(_("Added: {names}").format(names=names))
        self.ui.progressBar.setValue(1000)
        self.ui.statusLabel.text = _("Done: {names}").format(names=names)


#
# Logic
#


class MRISynthesisLogic(ScriptedLoadableModuleLogic):
    """Batch-usable logic; every step delegates to ``MRISynthesisLib`` (the ``scene`` modules, ``core.jobs``)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self) -> MRISynthesisParameterNode:
        return MRISynthesisParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------- packages

    @staticmethod
    def missingPackages() -> list:
        """``core.python_packages.UnmetRequirement`` for torch and each line of ``Resources/requirements.txt``
        that is missing or older than its floor."""
        from MRISynthesisLib.core.python_packages import read_requirements, unmet_requirements

        return unmet_requirements([TORCH_REQUIREMENT] + read_requirements(REQUIREMENTS_FILE))

    @staticmethod
    def packageManager():
        """Slicer's package helper with ``pip_ensure`` (``slicer.pydeps``, Slicer 5.11+; also looked for as
        ``slicer.packaging``), or None on older Slicer versions."""
        for name in ("slicer.pydeps", "slicer.packaging"):
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            if hasattr(module, "pip_ensure") and hasattr(module, "load_requirements"):
                return module
        return None

    def ensurePackages(self, purpose: str) -> bool:
        """Offer to install what is missing, with one confirmation; True when everything is there.

        PyTorch comes from the PyTorch extension (the build that fits the GPU driver); from PyPI only
        after a second, explicit confirmation. The rest is installed with ``pip_ensure`` where Slicer
        has it (progress, restart prompt), else with ``pip_install``. Nothing is installed while
        Slicer runs tests: the caller then skips, saying what is missing.
        """
        unmet = self.missingPackages()
        if not unmet:
            return True
        listing = "\n".join(item.describe() for item in unmet)
        if slicer.app.testingEnabled():
            logging.warning(f"MRISynthesis: not installing Python packages while testing; missing:\n{listing}")
            return False
        if not slicer.util.confirmOkCancelDisplay(
                _("MRISynthesis needs Python packages for {purpose} that are not installed yet (or are too old):"
                  "\n\n{packages}\n\nInstall them now? This downloads several hundred MB and can take a few "
                  "minutes.").format(purpose=purpose, packages=listing),
                windowTitle=_("MRISynthesis: install packages")):
            return False
        with slicer.util.tryWithErrorDisplay(_("Installing Python packages failed."), waitCursor=True):
            if any(item.name == "torch" for item in unmet) and not self.installTorch():
                return False
            if any(item.name != "torch" for item in unmet):
                self.installRequirements([item.requirement for item in unmet if item.name != "torch"])
        return not self.missingPackages()

    def installRequirements(self, requirements: list) -> None:
        """Install ``requirements`` (already confirmed) the way this Slicer version offers."""
        manager = self.packageManager()
        if manager is None:
            slicer.util.pip_install(" ".join(requirements))
            return
        options = {"requester": "MRISynthesis"}
        if "prompt_install" in inspect.signature(manager.pip_ensure).parameters:
            options["prompt_install"] = False  # the user has just confirmed
        manager.pip_ensure(manager.load_requirements(REQUIREMENTS_FILE), **options)

    @staticmethod
    def installTorch() -> bool:
        """Install PyTorch with the PyTorch extension's utilities (they pick the build that fits the GPU
        driver); without that extension, from PyPI only if the user explicitly agrees."""
        try:
            import PyTorchUtils
        except ImportError:
            if not slicer.util.confirmOkCancelDisplay(
                    _("The PyTorch extension is not installed. It installs the PyTorch build that matches this "
                      "computer's GPU driver and is the recommended way.\n\nInstall the default PyTorch build "
                      "from PyPI instead? On a computer with an NVIDIA GPU this may not use the GPU."),
                    windowTitle=_("MRISynthesis: install PyTorch from PyPI?")):
                return False
            slicer.util.pip_install(TORCH_REQUIREMENT)
            return importlib.util.find_spec("torch") is not None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
        return torch is not None

    # ---------------------------------------------------------------- inputs

    def autoAssign(self, current: dict) -> dict:
        from MRISynthesisLib.scene.assignment import fill_empty_slots

        return fill_empty_slots(current, slicer.mrmlScene, self.dicomRecogniser())

    def assignmentNotes(self, current: dict) -> list:
        """Why some empty slots were not filled: ``scene.assignment.AssignmentNote`` (sequence, candidate names)."""
        from MRISynthesisLib.scene.assignment import assignment_notes

        return assignment_notes(current, slicer.mrmlScene, self.dicomRecogniser())

    def dicomRecogniser(self):
        """Tells a volume loaded from the DICOM browser by its DICOM tags (``scene.dicom_nodes``); None without
        an open DICOM database. Kept, with its answers, for the life of the logic."""
        database = getattr(slicer, "dicomDatabase", None)
        if database is None or not database.isOpen:
            return None
        if getattr(self, "_dicomRecogniser", None) is None:
            from MRISynthesisLib.scene.dicom_nodes import dicom_recogniser

            self._dicomRecogniser = dicom_recogniser(database.fileForInstance)
        return self._dicomRecogniser

    def selectionState(self, selected: dict, hasModel: bool = True, busy: bool = False):
        """``scene.panel.SelectionState``: present/missing sequences and a ``PanelReason`` per button."""
        from MRISynthesisLib.scene.panel import selection_state

        return selection_state(selected, has_model=hasModel, busy=busy)

    def distributionNotes(self, result) -> list:
        """``scene.panel.DistributionNote``s of a synthesis result or a validation's results (out-of-distribution
        check); the widget words them."""
        from MRISynthesisLib.scene.panel import distribution_notes

        return distribution_notes(result)

    def availableModels(self) -> list:
        """Catalogue bundles (``bundles.list_bundles``); empty when the catalogue cannot be read."""
        try:
            from MRISynthesisLib.core import bundles

            return bundles.list_bundles()
        except Exception as error:  # the widget must open even with a broken install
            logging.warning(f"MRISynthesis: cannot list model bundles: {error}")
            return []

    def copySelectedInputs(self, selected: dict):
        """Copies of the selected volumes for a job (``scene.inputs.SelectedInputs``); refuses bad inputs by name."""
        from MRISynthesisLib.scene.inputs import copy_selected_inputs

        return copy_selected_inputs(selected, slicer.mrmlScene)

    # ---------------------------------------------------------------- running

    @staticmethod
    def pythonExecutable() -> str:
        """The interpreter for the worker process: Slicer's ``PythonSlicer`` launcher (it sets up Slicer's
        Python environment), found on the PATH or beside the application; this interpreter outside Slicer."""
        found = shutil.which("PythonSlicer")
        if not found:
            candidate = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
            found = candidate if os.path.isfile(candidate) else None
        return found or sys.executable

    @staticmethod
    def workerCpuThreads() -> int:
        """CPU threads for the worker: every available core but one, which stays with Slicer's GUI and rendering."""
        from MRISynthesisLib.core.devices import leave_one_core

        return leave_one_core()

    def startJob(self, kind: str, selectedInputs, model: Optional[str], device: str = "auto",
                 tumourMaps: bool = True, inProcess: bool = False, prepare: bool = False, brainMask=None,
                 keepStage1: bool = True, metricsProtocol: str = "brain", uncertaintySamples: int = 0):
        """Start a synthesis or validation job; returns it running (``metricsProtocol``: a validation's scoring;
        ``uncertaintySamples``: samples of the uncertainty map, 0 for none).

        By default it runs in a worker process (``worker.supervisor.ProcessJob``); ``inProcess`` runs it in
        a thread of Slicer's own process instead (``core.jobs.Job``; scripts and debugging).
        """
        if inProcess:
            from MRISynthesisLib.core import jobs

            if prepare:
                raise ValueError(_("Prepare inputs runs in the worker process only."))
            if kind == "synthesis":
                task = jobs.synthesis_task(selectedInputs.images, model, device=device, tumour_maps=tumourMaps,
                                           uncertainty=uncertaintySamples)
            else:
                task = jobs.validation_task(selectedInputs.images, model, device=device, tumour_maps=tumourMaps,
                                            metrics_protocol=metricsProtocol, uncertainty=uncertaintySamples)
            return jobs.Job(task, name=kind).start()  # no precondition check here: scripts and debugging only
        from MRISynthesisLib.worker.supervisor import ProcessJob

        mask = None
        if prepare and brainMask is not None:
            from MRISynthesisLib.scene.brain_mask_nodes import brain_mask_from_node

            mask = brain_mask_from_node(brainMask)
        return ProcessJob(selectedInputs.native, model, kind=kind, device=device, tumour_maps=tumourMaps,
                          python=self.pythonExecutable(), cpu_threads=self.workerCpuThreads(), use_standby=True,
                          prepare=prepare, brain_mask=mask, keep_stage1=keepStage1,
                          brain_extraction="mask" if mask is not None else "hd-bet",
                          metrics_protocol=metricsProtocol, uncertainty_samples=uncertaintySamples).start()

    def startSynthesis(self, selectedInputs, model: Optional[str], device: str = "auto", tumourMaps: bool = True,
                       inProcess: bool = False, prepare: bool = False, brainMask=None, keepStage1: bool = True,
                       uncertaintySamples: int = 0):
        """Start a background job that synthesises the missing sequences; returns the running job."""
        return self.startJob("synthesis", selectedInputs, model, device, tumourMaps, inProcess, prepare, brainMask,
                             keepStage1, uncertaintySamples=uncertaintySamples)

    def startValidation(self, selectedInputs, model: Optional[str], device: str = "auto", tumourMaps: bool = True,
                        inProcess: bool = False, prepare: bool = False, brainMask=None, keepStage1: bool = True,
                        metricsProtocol: str = "brain", uncertaintySamples: int = 0):
        """Start a leave-one-out validation job on a complete case, scored by ``metricsProtocol`` (brain or brasyn)."""
        return self.startJob("validation", selectedInputs, model, device, tumourMaps, inProcess, prepare, brainMask,
                             keepStage1, metricsProtocol, uncertaintySamples)

    @staticmethod
    def extensionBrainMask(key: str, reference, device: str = "auto"):
        """The brain mask node a skull-stripping extension (HD Brain Extraction, Swiss Skull Stripper) makes for
        ``reference``; a one-line ``ValueError`` when it is not installed or fails."""
        from MRISynthesisLib.scene.brain_extraction_modules import extension_brain_mask

        return extension_brain_mask(key, reference, modules=slicer.modules, cli=slicer.cli, device=device)

    def addSynthesisResult(self, result, selectedInputs, keepStage1: bool = False):
        from MRISynthesisLib.scene.display import show_result
        from MRISynthesisLib.scene.results import add_result_nodes

        nodes = add_result_nodes(slicer.mrmlScene, result, selectedInputs, keep_stage1=keepStage1)
        show_result(slicer.mrmlScene, nodes)
        return nodes

    def addValidationResults(self, results, selectedInputs):
        from MRISynthesisLib.scene.display import show_result
        from MRISynthesisLib.scene.validation_table import add_validation_nodes

        nodes = add_validation_nodes(slicer.mrmlScene, results, selectedInputs)
        show_result(slicer.mrmlScene, nodes)
        return nodes

    def process(self, selected: dict, model: Optional[str] = None, device: str = "auto",
                keepStage1: bool = False, tumourMaps: bool = True, inProcess: bool = False, prepare: bool = False,
                brainMask=None):
        """Synthesise the missing sequences and add the result nodes, blocking (scripts and tests); in a worker
        process unless ``inProcess``. A failed worker raises ``scene.flow.SynthesisFailed`` (one-line reason)."""
        from MRISynthesisLib.scene.flow import synthesize_in_scene

        if inProcess:
            return synthesize_in_scene(slicer.mrmlScene, selected, model, device=device, keep_stage1=keepStage1,
                                       tumour_maps=tumourMaps, log=logging.info)
        return synthesize_in_scene(slicer.mrmlScene, selected, model, device=device, keep_stage1=keepStage1,
                                   tumour_maps=tumourMaps, log=logging.info, backend="process",
                                   python=self.pythonExecutable(), cpu_threads=self.workerCpuThreads(),
                                   prepare=prepare, brain_mask=brainMask,
                                   brain_extraction="mask" if brainMask is not None else "hd-bet")

    def loadPhantom(self, seed: int = 0, small: bool = False) -> dict:
        """Generate a phantom case and load its four volumes and label map."""
        from MRISynthesisLib.scene.flow import add_phantom_case

        nodes = add_phantom_case(slicer.mrmlScene, seed=seed, small=small)
        slicer.util.setSliceViewerLayers(background=nodes[Sequence.T1N], fit=True)
        return nodes


#
# Test
#


class MRISynthesisTest(ScriptedLoadableModuleTest):
    """Self-test: phantom case, remove T1c, synthesise it with the demo model in a worker process, check the result."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_synthesize_missing_t1c()

    def test_synthesize_missing_t1c(self) -> None:
        import numpy as np

        from MRISynthesisLib.core import bundles
        from MRISynthesisLib.scene.geometry import image_from_volume_node

        logic = MRISynthesisLogic()
        self.delayDisplay("Checking Python packages")
        if not logic.ensurePackages("the self-test"):  # never installs while testing
            missing = ", ".join(item.describe() for item in logic.missingPackages())
            self.delayDisplay(f"Skipped: Python packages are missing ({missing}); install them from the module "
                              "panel (Synthesize asks) and run the test again")
            return
        catalogue = bundles.list_bundles()
        self.assertTrue(catalogue, "no model bundle is installed")
        demo = next((info.name for info in catalogue if info.name == bundles.DEFAULT_BUNDLE_NAME), catalogue[0].name)

        self.delayDisplay("Generating the phantom case")
        case = logic.loadPhantom(seed=0, small=True)
        slicer.mrmlScene.RemoveNode(case.pop(Sequence.T1C))
        inputs = {s: case[s] for s in (Sequence.T1N, Sequence.T2W, Sequence.T2F)}
        before = {s: (slicer.util.arrayFromVolume(n).copy(), self._matrix(n)) for s, n in inputs.items()}

        selected = logic.autoAssign(dict.fromkeys(SEQUENCES))
        self.assertEqual({s: selected[s] for s in inputs}, inputs)
        self.assertIsNone(selected[Sequence.T1C])

        self.delayDisplay(f"Synthesising T1c with model {demo} in a worker process")
        nodes = logic.process(selected, demo, device="auto")  # the worker-process path, as the panel runs it

        target = nodes.targets[Sequence.T1C]
        caseId = case["label"].GetName()[: -len("-seg")]
        self.assertEqual(target.synthetic.GetName(), f"{caseId} T1c (synthetic)")
        self.assertIn("SYNTHETIC", target.synthetic.GetDescription())
        self.assertEqual(target.synthetic.GetAttribute("MRISynthesis.Model"), demo)
        reference = image_from_volume_node(inputs[Sequence.T1N])
        synthetic = image_from_volume_node(target.synthetic)
        self.assertEqual(synthetic.GetSize(), reference.GetSize())
        np.testing.assert_allclose(synthetic.GetSpacing(), reference.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(synthetic.GetOrigin(), reference.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(synthetic.GetDirection(), reference.GetDirection(), atol=1e-6)
        self.assertTrue(np.isfinite(slicer.util.arrayFromVolume(target.synthetic)).all())
        for sequence, node in inputs.items():
            voxels, matrix = before[sequence]
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), voxels)
            np.testing.assert_array_equal(self._matrix(node), matrix)
        self.delayDisplay("Test passed")

    @staticmethod
    def _matrix(node):
        import numpy as np

        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
