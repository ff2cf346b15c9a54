"""API fault matrix: every fault the Hetzner API produces, during plant and during teardown.

Each case must end in a complete forest (every node running, no name twice) or a clean
failure (nothing left billing), within a bounded number of requests; the counts go into
docs/reliability.md when ``MORPHEUS_CAMPAIGN_REPORT`` is set (bench/reliability.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from fakeapi import FakeHetzner
from hetzner_support import ProviderFactory

from morpheus.errors import MorpheusError
from morpheus.settings import Settings
from morpheus.testing.contract import ContractForest

REPORT = os.environ.get("MORPHEUS_CAMPAIGN_REPORT")
#: No case may take more requests than this (3 nodes need about 17 without faults).
REQUEST_BOUND = 80

Fault = Callable[[FakeHetzner], Any]

PLANT_FAULTS: dict[str, Fault] = {
    "429 with reset": lambda f: f.inject_rate_limited(path_prefix="/servers", reset_after=0.2),
    "500 on create": lambda f: f.inject(
        method="POST", path_prefix="/servers", status=500, code="server_error", times=2
    ),
    "503 on action polls": lambda f: f.inject(
        method="GET", path_prefix="/actions", status=503, code="unavailable", times=3
    ),
    "connection reset": lambda f: f.inject_lost_response(
        method="POST", path_prefix="/servers", perform=False
    ),
    "slow past the client timeout": lambda f: f.inject_slow_response(
        2.0, method="POST", path_prefix="/servers"
    ),
    "resource_unavailable in fsn1": lambda f: f.set_location_unavailable("fsn1"),
    "locked": lambda f: f.inject_locked(method="POST", path_prefix="/servers", times=2),
    "uniqueness_error after a lost answer": lambda f: f.inject_lost_response(
        method="POST", path_prefix="/servers", perform=True
    ),
    "primary_ip_assigned after a lost answer (IPs checked first)": lambda f: (
        setattr(f, "names_checked_first", False),
        f.inject_lost_response(method="POST", path_prefix="/servers", perform=True),
    ),
    "500 after the create was done": lambda f: f.inject(
        method="POST", path_prefix="/servers", status=500, code="server_error", committed=True
    ),
    "429, bucket empty for an hour": lambda f: f.inject_rate_limited(
        path_prefix="/servers", reset_after=3600.0, times=3
    ),
    "503 forever on create": lambda f: f.inject(
        method="POST", path_prefix="/servers", status=503, code="unavailable", times=None
    ),
}

TEARDOWN_FAULTS: dict[str, Fault] = {
    "429 with reset": lambda f: f.inject_rate_limited(method="DELETE", reset_after=0.2),
    "429, bucket empty for an hour": lambda f: f.inject_rate_limited(
        method="DELETE", reset_after=3600.0, times=3
    ),
    "500 on delete": lambda f: f.inject(method="DELETE", status=500, code="server_error", times=2),
    "connection reset": lambda f: f.inject_lost_response(
        method="DELETE", path_prefix="/servers", perform=False
    ),
    "slow past the client timeout": lambda f: f.inject_slow_response(
        2.0, method="DELETE", path_prefix="/servers"
    ),
    "locked": lambda f: f.inject_locked(method="DELETE", path_prefix="/servers", times=3),
    "lost answer after the delete": lambda f: f.inject_lost_response(
        method="DELETE", path_prefix="/servers", perform=True
    ),
}


def report(operation: str, fault: str, outcome: str, requests: int) -> None:
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(
                json.dumps(
                    {"matrix": operation, "fault": fault, "outcome": outcome, "requests": requests}
                )
                + "\n"
            )


def billing(fake: FakeHetzner) -> int:
    return (
        len(fake.servers) + len(fake.primary_ips) + len(fake.firewalls) + len(fake.placement_groups)
    )


@pytest.fixture
def provider_for_faults(hetzner_factory: ProviderFactory) -> Any:
    # A short request timeout so "slow past the client timeout" is past it.
    return hetzner_factory(request_timeout=1.0, max_retries=3)


@pytest.mark.parametrize("fault", list(PLANT_FAULTS))
def test_plant_under_fault(fake_hetzner: FakeHetzner, provider_for_faults: Any, fault: str) -> None:
    forest = ContractForest(provider_for_faults, Settings())
    PLANT_FAULTS[fault](fake_hetzner)
    start = len(fake_hetzner.requests)
    try:
        handles = forest.plant(3)
        deadline = time.monotonic() + 30
        running = [forest.provider.wait_running(h, deadline) for h in handles]
        outcome = "complete forest"
        assert [h.state for h in running] == ["running"] * 3
        names = [s.name for s in fake_hetzner.servers.values()]
        assert sorted(names) == sorted(set(names)) and len(names) == 3
    except MorpheusError:
        outcome = "clean failure"
    finally:
        fake_hetzner.clear_faults()
        fake_hetzner.set_location_unavailable("fsn1", unavailable=False)
        requests = len(fake_hetzner.requests) - start
        forest.cleanup()
    report("plant", fault, outcome, requests)
    assert billing(fake_hetzner) == 0
    assert requests <= REQUEST_BOUND
    if fault != "503 forever on create":
        assert outcome == "complete forest"


@pytest.mark.parametrize("fault", list(TEARDOWN_FAULTS))
def test_teardown_under_fault(
    fake_hetzner: FakeHetzner, provider_for_faults: Any, fault: str
) -> None:
    forest = ContractForest(provider_for_faults, Settings())
    handles = forest.plant(3)
    deadline = time.monotonic() + 30
    for handle in handles:
        forest.provider.wait_running(handle, deadline)
    TEARDOWN_FAULTS[fault](fake_hetzner)
    start = len(fake_hetzner.requests)
    forest.cleanup()
    requests = len(fake_hetzner.requests) - start
    fake_hetzner.clear_faults()
    report("teardown", fault, "clean teardown" if billing(fake_hetzner) == 0 else "left", requests)
    assert billing(fake_hetzner) == 0
    assert requests <= REQUEST_BOUND


def test_status_listing_with_the_api_hung(
    fake_hetzner: FakeHetzner, hetzner_factory: ProviderFactory
) -> None:
    """A read-only look gives up within read_timeout (2 s here), whatever the retries."""
    provider = hetzner_factory(read_timeout=2.0)
    hang = fake_hetzner.inject_slow_response(60.0, method="GET", path_prefix="/servers", times=None)
    started = time.monotonic()
    with pytest.raises(MorpheusError, match="within 2 s"):
        provider.list_nodes("forest-1")
    elapsed = time.monotonic() - started
    fake_hetzner.clear_faults()
    report("status", "API hangs", f"gave up after {elapsed:.1f} s, said why", hang.hits)
    assert elapsed < 5
    assert hang.hits == 1  # one request, cut at the bound: no retry after the time is up
