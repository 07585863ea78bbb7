"""Reading the Markdown tables the evaluation writes, for tests that check their cells."""
from __future__ import annotations


def table_lines(text: str, heading: str) -> list:
    """The table lines (``| ... |``) that follow ``heading`` in the Markdown ``text``."""
    after = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    lines = []
    for line in after[start:]:
        if not line.startswith("|"):
            break
        lines.append(line)
    return lines
