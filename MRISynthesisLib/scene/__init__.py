"""The Slicer bridge: the only code that imports ``slicer``, ``vtk`` or MRML classes.

It turns volume nodes into SimpleITK images for the engine and results back into nodes;
it runs headless on ``slicer-core`` as well as inside the Slicer application, and never imports Qt.

Modules, one concern each:

- :mod:`.nodes`: a node's one-line label, scene membership, this tool's attribute prefix, ``MRMLInputError``;
- :mod:`.geometry`: IJK-to-RAS <-> SimpleITK geometry, node <-> image copies;
- :mod:`.node_checks`: which nodes may be acquired MR inputs, and why not;
- :mod:`.assignment`: candidate volumes and filling the input slots from node names;
- :mod:`.panel`: what the module panel shows for a selection, as data (present/missing sequences, reason codes; the widget words them);
- :mod:`.inputs`: the selected nodes copied into images on one grid (``copy_selected_inputs``);
- :mod:`.results`: result nodes with names, provenance and a subject-hierarchy folder;
- :mod:`.display`: window/level, colour tables, showing a result in the slice views;
- :mod:`.validation_table`: the metrics table and the validation's nodes;
- :mod:`.brain_mask_nodes`: a brain mask from a label-map or segmentation node;
- :mod:`.brain_extraction_modules`: a brain mask made by a skull-stripping extension (HD Brain Extraction, Swiss Skull Stripper);
- :mod:`.dicom_nodes`: recognising volumes loaded from the DICOM browser by their tags;
- :mod:`.flow`: case volumes, the phantom case and the whole flow run blocking (in a thread or a worker process).
"""
from __future__ import annotations
