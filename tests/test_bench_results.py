"""The benchmarks' results page: a rerun replaces its own section where it stands."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def results_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_rerun_replaces_its_section_in_place_and_a_new_one_goes_last(tmp_path: Path) -> None:
    results = results_module()
    page = tmp_path / "performance.md"
    page.write_text("# Performance\n\nintro\n\n## A\n\nold a\n\n## B\n\nold b\n")
    results.write_section("## A", "## A\n\nnew a\n", page)
    assert page.read_text() == "# Performance\n\nintro\n\n## A\n\nnew a\n\n## B\n\nold b\n"
    results.write_section("## C", "## C\n\nc\n", page)
    assert page.read_text().endswith("## B\n\nold b\n\n## C\n\nc\n")
