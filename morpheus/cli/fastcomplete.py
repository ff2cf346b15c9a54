"""Forest-id completion answered before Typer is imported.

Shells run the program on every Tab press; loading Typer and the app costs more than the
answer itself.  For the common case (bash or zsh completing the forest argument of a
command that takes one) this module answers from the registry with the standard library,
in the formats Typer's own completion scripts expect; anything else falls through to Typer.
"""

from __future__ import annotations

import os
import shlex
import sys

FOREST_COMMANDS = frozenset({"status", "teardown", "grow", "user-data"})


def _words() -> tuple[str, list[str], str] | None:
    """(shell, completed words after the program, word being completed), if ours to answer."""
    mode = os.environ.get("_MORPHEUS_COMPLETE", "")
    try:
        if mode == "complete_bash":
            words = shlex.split(os.environ["COMP_WORDS"])
            cword = int(os.environ["COMP_CWORD"])
            incomplete = words[cword] if cword < len(words) else ""
            return "bash", words[1:cword], incomplete
        if mode == "complete_zsh":
            line = os.environ.get("_TYPER_COMPLETE_ARGS", "")
            words = shlex.split(line)[1:]
            if words and not line.endswith(" "):
                return "zsh", words[:-1], words[-1]
            return "zsh", words, ""
    except (KeyError, ValueError):
        return None
    return None


def complete_forest_ids() -> bool:
    """Print forest-id completions and return True when this call is one we answer."""
    found = _words()
    if found is None:
        return False
    shell, words, incomplete = found
    if len(words) != 1 or words[0] not in FOREST_COMMANDS or incomplete.startswith("-"):
        return False
    from morpheus.listing import forest_ids
    from morpheus.paths import state_dir
    from morpheus.registry_url import configured_url

    url = configured_url()
    if url is True:
        return False  # the settings name the registry: Typer's completion loads them
    ids = forest_ids(state_dir(), incomplete, url or None)
    if shell == "bash":
        sys.stdout.write("\n".join(ids))
    elif ids:
        quoted = "\n".join(f'"{forest_id}"' for forest_id in ids)
        sys.stdout.write(f"_arguments '*: :(({quoted}))'")
    else:
        sys.stdout.write("_files")
    return True
