"""config.example.yaml documents every key with its default, so it cannot drift."""

from __future__ import annotations

from pathlib import Path

import yaml
from morpheus_local.provider import LocalSettings

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
    for section, values in defaults.items():
        if section == "providers":
            continue
        assert set(data[section]) == set(values), section


def test_example_local_table_is_the_local_defaults() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert LocalSettings.model_validate(data["providers"]["local"]) == LocalSettings()
    assert set(data["providers"]["local"]) == set(LocalSettings.model_fields)
