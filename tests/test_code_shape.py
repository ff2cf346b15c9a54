"""Code shape (issue 19): no module outside the tests grows past 400 lines."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 400


def test_no_module_outside_tests_is_over_400_lines() -> None:
    packages = [ROOT / "morpheus", *sorted((ROOT / "providers").glob("*/morpheus_*"))]
    assert len(packages) >= 4, packages
    too_long = {
        str(path.relative_to(ROOT)): lines
        for package in packages
        for path in package.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > LIMIT
    }
    assert too_long == {}
