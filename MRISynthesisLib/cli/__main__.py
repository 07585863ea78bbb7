"""``python -m MRISynthesisLib.cli``: the ``mrisynth`` command."""
import sys

from .main import main

sys.exit(main())
