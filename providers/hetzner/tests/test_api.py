"""The API boundary: what it relies on inside hcloud, and that it speaks through the SDK."""

from __future__ import annotations

from typing import Any

import hcloud._client
import pytest
from fakeapi import FakeHetzner
from hcloud.primary_ips import PrimaryIPsClient
from morpheus_hetzner.api import HetznerApi
from morpheus_hetzner.provider import HetznerProvider
from morpheus_hetzner.settings import HetznerSettings
from pydantic import SecretStr

from morpheus.testing.contract import ContractForest


def test_hcloud_retries_are_switched_off_and_rate_limits_watched(
    fake_hetzner: FakeHetzner,
) -> None:
    api = HetznerApi(SecretStr(fake_hetzner.token), fake_hetzner.endpoint, HetznerSettings())
    try:
        client = api.client()
        # Private hcloud attributes: an upgrade that moves them must fail here.
        assert client._client._retry_max_retries == 0
        assert api._remember_rate_limit in client._client._session.hooks["response"]
    finally:
        api.close()


def test_an_hcloud_without_those_internals_is_refused(
    fake_hetzner: FakeHetzner, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = hcloud._client.ClientBase.__init__

    def without_retry_knob(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self._retry_max_retries

    monkeypatch.setattr(hcloud._client.ClientBase, "__init__", without_retry_knob)
    api = HetznerApi(SecretStr(fake_hetzner.token), fake_hetzner.endpoint, HetznerSettings())
    with pytest.raises(RuntimeError, match="needs updating for this hcloud version"):
        api.client()


def test_primary_ips_go_through_the_sdk(
    fake_hetzner: FakeHetzner, hetzner: HetznerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    for name in ("create", "get_all", "delete"):
        method = getattr(PrimaryIPsClient, name)

        def spy(self: Any, *args: Any, _m: Any = method, _n: str = name, **kw: Any) -> Any:
            calls.append(_n)
            return _m(self, *args, **kw)

        monkeypatch.setattr(PrimaryIPsClient, name, spy)
    forest = ContractForest(hetzner, hetzner.settings)
    try:
        forest.plant(2)
    finally:
        forest.cleanup()
    assert calls.count("create") == 2
    assert "get_all" in calls
    assert fake_hetzner.primary_ips == {}
    raw = [r for r in fake_hetzner.requests if r.route and r.route.startswith("/v1/primary_ips")]
    assert len(raw) == len(calls), "every primary IP request went through PrimaryIPsClient"
