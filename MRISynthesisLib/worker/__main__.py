"""``python -m MRISynthesisLib.worker REQUEST.json``: run one synthesis request in this process."""
from __future__ import annotations

import sys

from .run import main

sys.exit(main())
