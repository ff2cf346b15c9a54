"""MkDocs hooks (registered in mkdocs.yml): generated reference pages and included sources.

- ``reference/configuration.md`` and ``reference/cli.md`` are generated from the code on
  every build by ``docs/gen_reference.py``; they exist only in the built site.
- ``<!-- include: PATH -->`` on a line of its own in a page is replaced by the file at
  ``docs/PATH`` as a code block, so the plugin guide shows the example's real source.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from mkdocs.structure.files import File, Files

DOCS = Path(__file__).parent
_INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$", re.MULTILINE)
_LANGUAGES = {".py": "python", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config: Any) -> Files:
    for uri, content in _generator().pages().items():
        stale = files.get_file_from_path(uri)
        if stale is not None:  # a copy written to disk by hand must not shadow fresh output
            files.remove(stale)
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    def include(match: re.Match[str]) -> str:
        path = DOCS / match.group("path")
        language = _LANGUAGES.get(path.suffix, "text")
        source = path.read_text(encoding="utf-8").rstrip("\n")
        return f"```{language}\n{source}\n```"

    return _INCLUDE.sub(include, markdown)
