"""The ``mrisynth`` command line: one module per command, the parser in :mod:`.main`."""
from __future__ import annotations


def main(argv=None) -> int:
    """Entry point of the ``mrisynth`` console script (see :func:`MRISynthesisLib.cli.main.main`)."""
    from .main import main as run

    return run(argv)
