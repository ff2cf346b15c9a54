"""Writing benchmark results into docs/performance.md, one section per benchmark."""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
HEADER = (
    "# Performance\n\nMeasured by the benchmarks in `bench/`; each section says how to rerun it.\n"
)


def write_section(heading: str, text: str, page: Path = PAGE) -> None:
    """Replace the section that starts with ``heading`` where it stands (a new one goes at
    the end); other sections are kept as they are."""
    old = page.read_text() if page.exists() else HEADER
    parts = old.split("\n## ")
    sections = [parts[0].rstrip("\n")] + ["## " + part.rstrip("\n") for part in parts[1:]]
    new = text.rstrip("\n")
    replaced = [new if section.startswith(heading) else section for section in sections]
    if replaced == sections:
        replaced.append(new)
    page.write_text("\n\n".join(replaced) + "\n")
