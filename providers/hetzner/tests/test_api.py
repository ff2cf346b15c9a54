"""The API boundary: what it relies on inside hcloud, and that it speaks through the SDK."""

from __future__ import annotations

import time
from typing import Any

import hcloud._client
import pytest
from fakeapi import FakeHetzner
from hcloud.primary_ips import PrimaryIPsClient
from hetzner_support import public_key_line
from morpheus_hetzner.api import HetznerApi, HetznerError
from morpheus_hetzner.provider import HetznerProvider
from morpheus_hetzner.settings import HetznerSettings
from pydantic import SecretStr

from morpheus.settings import Settings
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
    forest = ContractForest(hetzner, Settings())
    try:
        forest.plant(2)
    finally:
        forest.cleanup()
    assert calls.count("create") == 2
    assert "get_all" in calls
    assert fake_hetzner.primary_ips == {}
    raw = [r for r in fake_hetzner.requests if r.route and r.route.startswith("/v1/primary_ips")]
    assert len(raw) == len(calls), "every primary IP request went through PrimaryIPsClient"


def api_with_recorded_sleeps(
    fake: FakeHetzner, *, really: bool = False, **knobs: Any
) -> tuple[HetznerApi, list[float]]:
    """An API whose sleeps are recorded (and, ``really``, slept: the fake's bucket refills
    with real time)."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if really:
            time.sleep(seconds)

    config = HetznerSettings(retry_base_delay=1.0, retry_max_delay=4.0, **knobs)
    return HetznerApi(SecretStr(fake.token), fake.endpoint, config, sleep=sleep), sleeps


def test_transient_errors_back_off_exponentially_with_jitter(fake_hetzner: FakeHetzner) -> None:
    fake_hetzner.inject(path_prefix="/locations", status=503, code="unavailable", times=4)
    api, sleeps = api_with_recorded_sleeps(fake_hetzner, max_retries=5)
    try:
        api.call("listing locations", lambda c: c.locations.get_all())
    finally:
        api.close()
    assert len(sleeps) == 4
    for retry, slept in enumerate(sleeps):
        assert 0.5 <= slept <= min(4.0, 2.0**retry)


def test_retries_stop_at_max_retries_with_the_api_error(fake_hetzner: FakeHetzner) -> None:
    fake_hetzner.inject(path_prefix="/locations", status=502, code="bad_gateway", times=None)
    api, sleeps = api_with_recorded_sleeps(fake_hetzner, max_retries=2)
    try:
        with pytest.raises(HetznerError, match="listing locations failed") as caught:
            api.call("listing locations", lambda c: c.locations.get_all())
    finally:
        api.close()
    assert caught.value.code == "bad_gateway"
    assert len(sleeps) == 2
    assert fake_hetzner.request_count("GET", "/locations") == 3


def test_a_429_waits_for_one_token_not_for_the_reset(fake_hetzner: FakeHetzner) -> None:
    # RateLimit-Reset is when the bucket is full again (an hour away once it is empty);
    # at 3600 requests per hour one token comes back every second.
    fake_hetzner.inject_rate_limited(path_prefix="/locations", reset_after=3600.0)
    api, sleeps = api_with_recorded_sleeps(fake_hetzner)
    try:
        api.call("listing locations", lambda c: c.locations.get_all())
    finally:
        api.close()
    (slept,) = sleeps
    assert 0.9 <= slept <= 1.1


def test_requests_are_paced_by_the_budget_the_api_reports(fake_hetzner: FakeHetzner) -> None:
    fake_hetzner.set_rate_limit(36_000)  # 10 tokens a second
    api, sleeps = api_with_recorded_sleeps(fake_hetzner, really=True)
    try:
        api.call("listing locations", lambda c: c.locations.get_all())  # learns the budget
        fake_hetzner.exhaust_rate_limit()
        api.call("listing locations", lambda c: c.locations.get_all())  # 429, then paced
        for _ in range(3):
            api.call("listing locations", lambda c: c.locations.get_all())
    finally:
        api.close()
    assert fake_hetzner.request_count("GET", "/locations", status=429) == 1
    assert fake_hetzner.request_count("GET", "/locations", status=200) == 5
    assert all(0 < slept <= 0.2 for slept in sleeps) and len(sleeps) == 4


def test_a_budget_too_far_off_fails_at_once_saying_why(fake_hetzner: FakeHetzner) -> None:
    fake_hetzner.exhaust_rate_limit()
    api, sleeps = api_with_recorded_sleeps(fake_hetzner, max_rate_limit_wait=0.5)
    try:
        with pytest.raises(HetznerError) as caught:
            api.call("listing locations", lambda c: c.locations.get_all())
    finally:
        api.close()
    assert caught.value.code == "rate_limit_exceeded"
    assert "3600 requests per hour" in str(caught.value)
    assert "max_rate_limit_wait" in str(caught.value)
    assert sleeps == []
    assert fake_hetzner.request_count("GET", "/locations") == 1


def test_a_lost_post_asks_before_sending_again(fake_hetzner: FakeHetzner) -> None:
    fake_hetzner.inject_lost_response(method="POST", path_prefix="/ssh_keys", perform=True)
    api, sleeps = api_with_recorded_sleeps(fake_hetzner)
    found: list[str] = []

    def find() -> str | None:
        key = api.call("finding", lambda c: c.ssh_keys.get_by_name("k"))
        found.append("asked")
        return None if key is None else "adopted"

    try:
        result = api.create_or_adopt(
            "uploading k",
            lambda c: c.ssh_keys.create(name="k", public_key=public_key_line()) and "created",
            find,
        )
    finally:
        api.close()
    assert result == "adopted"
    assert found == ["asked"] and sleeps == []
    assert fake_hetzner.request_count("POST", "/ssh_keys") == 1
