"""Orchestration: one module per command (plant, teardown, status), no printing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from morpheus.registry import Registry, utcnow
from morpheus.secret_codec import KeySource, SecretCodec

if TYPE_CHECKING:
    from morpheus.provider import Provider
    from morpheus.settings import Settings

#: ``progress(node_id, words)``: a node's state changed; the CLI shows it live.
Progress = Callable[[str, str], None]


def no_progress(node_id: str, words: str) -> None:
    """A ``Progress`` that shows nothing (scripts, ``--quiet``)."""


def no_notice(words: str) -> None:
    """A ``notice`` that shows nothing."""


def registry_secrets(settings: Settings) -> SecretCodec:
    """The codec of the registry's secrets, with the key the operator configured (if any)."""
    return SecretCodec(KeySource.find(settings.registry.key_file))


@dataclass
class Context:
    """What every service needs: settings, where state lives, the registry and the clock."""

    settings: Settings
    state_dir: Path
    registry: Registry
    clock: Callable[[], datetime] = field(default=utcnow)
    #: A sentence the operator should see while a command works (e.g. waiting for a lock).
    notice: Callable[[str], None] = field(default=no_notice)

    @classmethod
    def open(
        cls, settings: Settings, state_dir: Path, notice: Callable[[str], None] = no_notice
    ) -> Context:
        """The context of one command: the registry ``registry.url`` names, opened (and made)."""
        return cls(
            settings=settings,
            state_dir=state_dir,
            registry=Registry.open(
                settings.registry.url, state_dir, secrets=registry_secrets(settings)
            ),
            notice=notice,
        )

    def provider(self, name: str) -> Provider:
        """The named provider, loaded through its entry point and configured."""
        # Imported here: commands that only read the registry and poll nodes (`grow` that
        # only looks, `status`) start without the plugin contract and entry-point discovery.
        from morpheus.provider import load_provider_class

        return load_provider_class(name).from_settings(self.settings, self.state_dir)
