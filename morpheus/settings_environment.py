"""Settings from ``MORPHEUS_SECTION__KEY`` environment variables, laid over the file's values.

pydantic-settings' environment source reads the variables (JSON for lists and sections). It is
imported only when such a variable is set: most runs (cron's ``grow --auto`` among them) have
none, and loading it costs more than the rest of reading the settings (issue 16).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from morpheus.errors import ConfigError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings


def environment_values(
    sections: Iterable[str], prefix: str, reader: Callable[[], type[BaseSettings]]
) -> dict[str, Any]:
    """The values this process's ``PREFIX<SECTION>[__KEY…]`` variables give, as ``reader()``
    (the settings model as pydantic-settings reads it) finds them; ``{}`` when none is set."""
    names = {(prefix + section).upper() for section in sections}
    if not any(name.upper().partition("__")[0] in names for name in os.environ):
        return {}
    from pydantic_settings import EnvSettingsSource, SettingsError

    try:
        return EnvSettingsSource(reader())()
    except SettingsError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"a {prefix}* environment variable cannot be read ({reason}); one for a list or "
            f"a section must hold JSON, e.g. {prefix}INFRASTRUCTURE__ADMIN_SOURCES='[\"::1\"]'"
        ) from None


def overlay(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s values on top, tables merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = (
            overlay(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
        )
    return merged
