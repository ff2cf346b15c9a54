"""hcloud clients: one per thread (each holds a ``requests.Session``, which is not
thread-safe), with hcloud's own retries switched off and a hook on every answer.

hcloud has no public knob for its retries, its per-request timeout or the answers' headers,
so three private attributes are used.  Checked, not guessed: an hcloud that moved them fails
here (and in the tests) instead of silently retrying every request twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import hcloud
import requests
from pydantic import SecretStr

from morpheus import __version__


class Clients:
    """This thread's hcloud client, made on first use; ``close`` closes them all."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        on_response: Callable[..., None],
    ) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._on_response = on_response
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[hcloud.Client] = []

    def get(self, token: SecretStr) -> hcloud.Client:
        client: hcloud.Client | None = getattr(self._local, "client", None)
        if client is not None:
            return client
        client = hcloud.Client(
            token=token.get_secret_value(),
            api_endpoint=self._endpoint,
            application_name="morpheus",
            application_version=__version__,
            timeout=self._timeout,
        )
        base, session = hcloud_internals(client)
        base._retry_max_retries = 0
        session.hooks["response"].append(self._on_response)
        self._local.client = client
        with self._lock:
            self._made.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for client in made:
            hcloud_internals(client)[1].close()


def set_timeout(client: hcloud.Client, seconds: float) -> None:
    """The timeout of this client's next requests (hcloud takes one per client only)."""
    hcloud_internals(client)[0]._timeout = seconds


def hcloud_internals(client: hcloud.Client) -> tuple[Any, requests.Session]:
    """The private parts of an hcloud client Morpheus needs: its retrying request layer and
    that layer's ``requests`` session."""
    base = getattr(client, "_client", None)
    session = getattr(base, "_session", None)
    known = all(hasattr(base, name) for name in ("_retry_max_retries", "_timeout"))
    if not known or not isinstance(session, requests.Session):
        raise RuntimeError(
            f"hcloud {hcloud.__version__} no longer has Client._client._retry_max_retries, "
            "._timeout and ._session: morpheus-hetzner needs updating for this hcloud version"
        )
    return base, session
