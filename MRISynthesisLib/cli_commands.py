"""Subcommands beyond ``phantom``: each module registers its own parser here."""
from __future__ import annotations

import argparse
from typing import Callable

from . import cli_evaluation, cli_synthesis, cli_training

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [cli_synthesis.register, cli_evaluation.register,
                                                                    cli_training.register]
