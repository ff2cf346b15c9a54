"""Checks for values read back from storage before they become paths or terminal text.

Standard library only: ``list`` and shell completion import it.
"""

from __future__ import annotations

import re

#: A forest, node, run or provider id: one plain path component, never ``..``, no spaces.
PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_plain_id(value: object) -> bool:
    return isinstance(value, str) and PLAIN_ID.fullmatch(value) is not None


def printable(text: str) -> str:
    """``text`` with every control or invisible formatting character shown as an escape.

    Escape sequences, carriage returns and bidirectional overrides read back from a file
    would otherwise move the cursor, recolour or reorder what the terminal shows.
    """
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )
