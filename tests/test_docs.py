"""The documentation: generated references cover the code, and the site builds with --strict."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer.core
import typer.main
from pydantic import BaseModel

from morpheus.cli.app import app
from morpheus.limits import MAX_FOREST_NODES
from morpheus.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_configuration_reference_has_every_key_with_its_variable(generator: ModuleType) -> None:
    page = generator.configuration_reference()
    keys = [key for key in leaf_keys(Settings) if key != "providers"]
    assert len(keys) >= 25
    for key in keys:
        assert f"| `{key}` |" in page, key
        variable = "MORPHEUS_" + key.replace(".", "__").upper()
        assert f"`{variable}`" in page, variable


def test_configuration_reference_has_the_local_provider(generator: ModuleType) -> None:
    from morpheus_local.provider import LocalSettings

    page = generator.configuration_reference()
    assert "### `providers.local`" in page
    for name in LocalSettings.model_fields:
        assert f"| `providers.local.{name}` |" in page, name
    assert "`MORPHEUS_PROVIDERS__LOCAL__HOST`" in page
    (host_row,) = [line for line in page.splitlines() if "| `providers.local.host` |" in line]
    assert "`127.0.0.1`" in host_row


def test_configuration_reference_shows_types_defaults_and_rules(generator: ModuleType) -> None:
    page = generator.configuration_reference()
    assert "| `providers.hetzner.locations` | list of string | `[fsn1, nbg1, hel1]` |" in page
    assert "| `growth.max_nodes` | integer | `10` |" in page
    assert f"at least 1; at most {MAX_FOREST_NODES}" in page
    assert "| `providers.hetzner.token` | secret string or null | `null` |" in page
    assert "`MORPHEUS_PROVIDERS__HETZNER__TOKEN`, `HCLOUD_TOKEN`, `HETZNER_API_TOKEN`" in page


def test_cli_reference_has_every_command_and_option(generator: ModuleType) -> None:
    page = generator.cli_reference()
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    context = root.make_context("morpheus", [], resilient_parsing=True)
    for name in root.list_commands(context):
        command = root.get_command(context, name)
        assert command is not None
        if command.hidden:
            continue
        assert f"## `morpheus {name}`" in page, name
        for param in command.params:
            for option in param.opts:
                if option.startswith("-") and option != "--help":
                    assert option in page, (name, option)
    assert "## Global options" in page
    assert "`-c, --config <file>`" in page


def test_reference_escapes_what_markdown_would_eat(generator: ModuleType) -> None:
    # "DIR/<node>.yaml" in help text must not become an HTML tag.
    page = generator.cli_reference()
    assert "DIR/&lt;node&gt;.yaml" in page
    assert "<node>" not in page


def test_docs_build_strict(tmp_path: Path) -> None:
    """The whole site, generated pages included, builds without a warning."""
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed: CI must build the docs (dev dependency group)")
        pytest.skip("mkdocs is not installed (it is in the dev dependency group)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    built = (tmp_path / "reference" / "configuration" / "index.html").read_text()
    assert "MORPHEUS_GROWTH__MAX_NODES" in built
    assert (tmp_path / "reference" / "cli" / "index.html").exists()
    # The plugin guide shows the example's real source, not the include markers.
    plugins = (tmp_path / "plugins" / "index.html").read_text()
    assert "include:" not in plugins
    assert "_write_private" in plugins


def test_every_grow_json_key_is_documented() -> None:
    # Issue 16 item 6: latency_ms, mem_bytes, cores and max_*_percent were undocumented.
    from morpheus.growth import GrowthDecision, NodeVerdict
    from morpheus.load import ForestLoad, NodeSample

    page = (DOCS / "growth.md").read_text()
    keys = [
        *(name for name in NodeSample.model_fields if name != "node_name"),
        *ForestLoad.model_fields,
        *GrowthDecision.model_fields,
        *(verdict.value for verdict in NodeVerdict),
        "verdict",
    ]
    missing = [key for key in keys if f"`{key}`" not in page]
    assert missing == []
