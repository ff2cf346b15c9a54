"""One spread placement group per forest, so its first ten servers land on distinct hosts."""

from __future__ import annotations

import threading
from functools import partial

import hcloud
from hcloud.placement_groups import PlacementGroup

from morpheus.blueprint import labels_for
from morpheus_hetzner.api import HetznerApi, HetznerError
from morpheus_hetzner.resources import forest_selector, ident, owned


class PlacementGroups:
    """Creates (or adopts) and deletes the forests' placement groups."""

    def __init__(self, api: HetznerApi) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}

    def id_of(self, forest_id: str) -> int | None:
        """The forest's group when this process made or adopted it."""
        with self._lock:
            return self._ids.get(forest_id)

    def ensure(self, forest_id: str, run_id: str, *, look_up: bool = True) -> None:
        """The forest's group: looked up first (unless the forest is new), else created; a
        create answered ``uniqueness_error`` (another run made it meanwhile) adopts it."""
        if self.id_of(forest_id) is not None:
            return
        name = f"morpheus-{forest_id}"
        forest_labels = labels_for(forest_id, None, run_id)

        def find() -> int | None:
            group = self._api.call(
                f"looking up placement group {name}",
                lambda c: c.placement_groups.get_by_name(name),
            )
            if group is None or not owned(group.data_model.labels or {}, forest_labels, "run"):
                return None
            return ident(group.data_model.id)

        group_id = (find() if look_up else None) or self._api.create_or_adopt(
            f"creating placement group {name}",
            lambda c: ident(
                c.placement_groups.create(
                    name=name, type="spread", labels=forest_labels
                ).placement_group.data_model.id
            ),
            find,
        )
        with self._lock:
            self._ids[forest_id] = group_id

    def delete_all(self, forest_id: str) -> list[str]:
        """Delete the forest's groups; returns what could not be deleted."""
        failed = []
        groups = self._api.call(
            f"listing the placement groups of {forest_id}",
            lambda c: c.placement_groups.get_all(label_selector=forest_selector(forest_id)),
        )
        for group in groups:
            group_id = ident(group.data_model.id)
            try:
                self._api.call(
                    f"deleting placement group {group.data_model.name}",
                    partial(_delete_group, group_id=group_id),
                    retry_codes={"resource_in_use", "locked"},
                )
            except HetznerError as exc:
                if exc.code != "not_found":
                    failed.append(f"placement group {group.data_model.name}: {exc}")
        with self._lock:
            self._ids.pop(forest_id, None)
        return failed


def _delete_group(client: hcloud.Client, *, group_id: int) -> bool:
    return client.placement_groups.delete(PlacementGroup(id=group_id))
