"""The provider contract suite, run against the fake Hetzner API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakeapi import FakeHetzner
from morpheus_hetzner.provider import HetznerProvider

from morpheus.testing.contract import ProviderContract


class TestHetznerContract(ProviderContract):
    @pytest.fixture
    def provider(
        self, hetzner: HetznerProvider, fake_hetzner: FakeHetzner
    ) -> Iterator[HetznerProvider]:
        yield hetzner
        # Whatever a test made, its cleanup leaves nothing that bills.
        assert fake_hetzner.servers == {}
        assert fake_hetzner.primary_ips == {}
        assert fake_hetzner.firewalls == {}
        assert fake_hetzner.placement_groups == {}
