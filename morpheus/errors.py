"""The one error tree of Morpheus.

Core code raises these and never prints; the CLI's ``main()`` turns them into one red line
on stderr and the exit code each class carries.  Foreign exceptions (sqlite3, httpx, the
cloud SDKs) are translated into these once, at the boundary, with ``raise ... from exc``.

    MorpheusError                 exit 1
    ├── ConfigError               invalid or unreadable configuration
    ├── UsageError                exit 2: a flag or argument that cannot be acted on
    ├── ForestNotFoundError       exit 1: no such forest in the registry
    ├── ForestStateError          the registry's record is not enough to act on
    ├── RegistryError             the state database cannot be used
    │   └── DamagedRegistryError  damaged, or lost beside live forests: `registry rebuild`
    ├── RegistryKeyError          exit 3: the registry key is missing, unreadable or wrong
    ├── OtherHostForestError      exit 4: a local forest of another host (shown, not changed)
    ├── ProviderNotFoundError     no installed provider with that name
    ├── ProviderError             a provider failed (API, process, platform); ``.code``
    │   └── PreflightError        a check before creating anything failed
    ├── ReadinessError            nodes did not become ready in time
    ├── PlantFailedError          planting failed; ``.removal`` says what the rollback did
    ├── WorkInterruptedError      exit 130: Ctrl-C; says what was left and what finishes it
    ├── GrowFailedError           growing failed; the new nodes were removed
    ├── JetStreamMigrationError   streams could not be carried into a new cluster
    ├── NatsReleaseError          no nats-server build with a known SHA-256 could be found
    ├── LegacyRegistryError       the older tool's registry.json cannot be imported
    └── TemplateInputError        a value would be unsafe to render
        └── UserDataError         rendered user-data a cloud would refuse (size, first line)

Provider plugins raise ``ProviderError`` / ``PreflightError`` (or their own subclasses of
them) with the platform's error ``code`` when it has one, so callers branch on the code and
never on message text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from morpheus.models import Removal


class MorpheusError(Exception):
    """Base of every error a user can cause or fix; ``str()`` is the one-line message."""

    exit_code: int = 1


class ConfigError(MorpheusError):
    """The configuration is invalid or cannot be read."""


class UsageError(MorpheusError):
    """A command-line value that cannot be acted upon."""

    exit_code = 2


class ForestNotFoundError(MorpheusError):
    """The forest id is not in the registry."""


class RegistryError(MorpheusError):
    """The state database cannot be opened, read or written."""


class DamagedRegistryError(RegistryError):
    """The registry is damaged, or missing or empty while forests remain: rebuild it."""


class OtherHostForestError(MorpheusError):
    """A forest whose nodes run on another host (a local forest in a shared registry):
    this host may list and show it, never change it."""

    exit_code = 4


class RegistryKeyError(MorpheusError):
    """The registry key that seals its secrets is missing, unreadable or not the right one.

    Only commands that read or write a secret (plant, grow, rotate, reconcile) meet it;
    ``list`` and ``status`` work without the key.
    """

    exit_code = 3


class ProviderNotFoundError(MorpheusError):
    """No installed provider plugin has the requested name."""


class ForestStateError(MorpheusError):
    """The registry's record of a forest lacks what the command needs (refresh it first)."""


class ProviderError(MorpheusError):
    """A provider could not do what was asked; ``code`` is the platform's error code, if any."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class PreflightError(ProviderError):
    """A check before creating anything failed; nothing was created."""


class ReadinessError(MorpheusError):
    """Nodes were created but did not become ready before the deadline."""


class PlantFailedError(MorpheusError):
    """Planting failed; ``removal`` says what the rollback deleted and what it could not.

    An interrupted plant exits 130, like any command stopped with Ctrl-C.
    """

    def __init__(self, message: str, removal: Removal | None, *, interrupted: bool = False) -> None:
        super().__init__(message)
        self.removal = removal
        if interrupted:
            self.exit_code = 130


class WorkInterruptedError(MorpheusError):
    """Ctrl-C stopped a command midway; the message says what it left and what finishes it."""

    exit_code = 130


class GrowFailedError(MorpheusError):
    """Growing failed; the nodes it had added were removed (or the message names those left)."""


class JetStreamMigrationError(MorpheusError):
    """Streams of a standalone node could not be carried into its new cluster."""


class TemplateInputError(MorpheusError):
    """A value that would reach a template is not safe to render."""


class UserDataError(TemplateInputError):
    """Rendered cloud-init user-data is not something a cloud accepts or cloud-init reads."""


class NatsReleaseError(MorpheusError):
    """No nats-server build with a known SHA-256 was found for the configured version."""


class LegacyRegistryError(MorpheusError):
    """The older Go tool's ``registry.json`` cannot be read or is not what it wrote."""
