"""config.example.yaml documents every key with its default, so it cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from morpheus.provider import load_provider_class
from morpheus.provider_config import DEPRECATED_KEYS
from morpheus.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.yaml"


def test_example_loads_to_exactly_the_defaults() -> None:
    loaded = load_settings(EXAMPLE)
    defaults = Settings().model_dump(mode="json")
    loaded_values = loaded.settings.model_dump(mode="json")
    loaded_values["providers"] = {}
    assert loaded_values == defaults


def test_example_names_every_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    defaults = Settings().model_dump(mode="json")
    deprecated = set(DEPRECATED_KEYS)
    for section, values in defaults.items():
        if section == "providers":
            continue
        current = {key for key in values if f"{section}.{key}" not in deprecated}
        assert set(data.get(section) or {}) == current, section


@pytest.mark.parametrize("name", ["local", "hetzner", "libvirt"])
def test_example_provider_tables_are_their_defaults(name: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())["providers"][name]
    model = load_provider_class(name).settings_model
    assert model.model_validate(data) == model()
    assert set(data) == set(model.model_fields)
