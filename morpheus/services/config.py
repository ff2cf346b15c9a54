"""`morpheus config check`: every setting with its value and where it came from.

The core's settings, then the table of every installed provider validated by that provider's
own model (a typo or a negative number there fails here, not at the first plant).
"""

from __future__ import annotations

from typing import Any

from morpheus.provider import installed_providers, load_provider_class
from morpheus.provider_config import DEPRECATED_KEYS, resolve_table, table_rows
from morpheus.registry_url import masked_url
from morpheus.settings import LoadedSettings

#: ``(key, value as JSON shows it, source)``; secrets are ``********``.
ConfigRow = tuple[str, Any, str]


def config_rows(loaded: LoadedSettings) -> list[ConfigRow]:
    """Every leaf setting, sorted by key; deprecated keys only when they are set."""
    values = _flatten(loaded.settings.model_dump(mode="json"))
    rows: list[ConfigRow] = []
    for key, value in values.items():
        if key == "providers" or key.startswith("providers."):
            continue
        if key in DEPRECATED_KEYS and value is None:
            continue
        if key.startswith("secrets.") and value is not None:
            value = "********"
        elif key == "registry.url" and value is not None:
            value = masked_url(value)
        rows.append((key, value, loaded.sources.get(key, "default")))
    installed = {info.name for info in installed_providers()}
    for name in sorted(installed):
        table = resolve_table(load_provider_class(name), loaded.settings, sources=loaded.sources)
        rows.extend(table_rows(table, loaded))
    for name, raw in loaded.settings.providers.items():
        if name not in installed:
            for key, value in _flatten(raw, f"providers.{name}.").items():
                rows.append((key, value, f"{loaded.sources.get(key, 'file')} (no such provider)"))
    return sorted(rows, key=lambda row: row[0])


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
