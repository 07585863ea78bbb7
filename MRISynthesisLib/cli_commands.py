"""Subcommands beyond ``phantom``: each module registers its own parser here."""
from __future__ import annotations

import argparse
from typing import Callable

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = []
