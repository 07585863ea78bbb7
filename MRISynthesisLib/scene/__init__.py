"""The Slicer bridge: the only code that imports ``slicer``, ``vtk`` or MRML classes.

It turns volume nodes into SimpleITK images for the engine and results back into nodes;
it runs headless on ``slicer-core`` as well as inside the Slicer application.
"""
