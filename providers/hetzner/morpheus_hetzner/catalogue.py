"""What Hetzner sells: the configured server type, where it can be ordered, and the image."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from difflib import get_close_matches

from morpheus_hetzner.api import HetznerApi, HetznerPreflightError
from morpheus_hetzner.resources import ServerTypeInfo, ident, server_type_info

#: How long a server type's availability, read in the pre-flight, is trusted when reserving.
CATALOGUE_TTL = 60.0


class Catalogue:
    """The configured server type (re-read when old), its usable locations and image id."""

    def __init__(
        self,
        api: HetznerApi,
        *,
        server_type: str,
        locations: Sequence[str],
        image: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.server_type_name = server_type
        self.locations = tuple(locations)
        self.image_name = image
        self._clock = clock
        self._lock = threading.Lock()
        self._server_type: ServerTypeInfo | None = None
        self._server_type_at = 0.0
        self._image_id: int | None = None

    def server_type(self) -> ServerTypeInfo:
        """The configured server type, re-read when the pre-flight's copy is old."""
        with self._lock:
            cached, read_at = self._server_type, self._server_type_at
        if cached is not None and self._clock() - read_at < CATALOGUE_TTL:
            return cached
        return self.load_server_type()

    def load_server_type(self) -> ServerTypeInfo:
        """Read the configured server type now; a name that does not exist raises with the
        closest names Hetzner has."""
        wanted = self.server_type_name
        bound = self._api.call(
            f"looking up server type {wanted}", lambda c: c.server_types.get_by_name(wanted)
        )
        if bound is None:
            names = self._api.call(
                "listing server types",
                lambda c: [str(t.data_model.name) for t in c.server_types.get_all()],
            )
            close = get_close_matches(wanted, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise HetznerPreflightError(
                f"server type {wanted!r} does not exist{hint}; set providers.hetzner.server_type "
                "to one `hcloud server-type list` shows",
                code="not_found",
            )
        info = server_type_info(bound.data_model)
        with self._lock:
            self._server_type, self._server_type_at = info, self._clock()
        return info

    def usable_locations(self, server_type: ServerTypeInfo) -> list[str]:
        """Configured locations where the type can be ordered now, in configured order;
        none raises, saying why for each location."""
        usable, reasons = [], []
        for location in self.locations:
            offer = server_type.offers.get(location)
            if offer is None:
                reasons.append(f"not offered in {location}")
            elif offer.deprecated:
                after = offer.unavailable_after
                until = f", orderable until {after:%Y-%m-%d}" if after else ""
                reasons.append(f"deprecated in {location}{until}")
            elif not offer.available:
                reasons.append(f"out of capacity in {location}")
            else:
                usable.append(location)
        if not usable:
            offered = sorted(
                loc for loc, o in server_type.offers.items() if o.available and not o.deprecated
            )
            elsewhere = f"; available in: {', '.join(offered)}" if offered else ""
            raise HetznerPreflightError(
                f"server type {server_type.name} cannot be ordered: {'; '.join(reasons)}"
                f"{elsewhere}; change providers.hetzner.server_type or providers.hetzner.locations",
                code="resource_unavailable",
            )
        return usable

    def fallback_locations(self, server_type: ServerTypeInfo, tried: Sequence[str]) -> list[str]:
        """Configured locations not yet tried that offer the type at all.

        Availability read earlier may be stale either way, so a location that looked full
        is tried too when the ones before it turn out to be full.
        """
        return [
            loc
            for loc in self.locations
            if loc not in tried
            and (offer := server_type.offers.get(loc)) is not None
            and not offer.deprecated
        ]

    def image_id(self, server_type: ServerTypeInfo) -> int:
        """The configured image for the type's architecture; a missing one raises."""
        with self._lock:
            if self._image_id is not None:
                return self._image_id
        name, arch = self.image_name, server_type.architecture
        image = self._api.call(
            f"looking up image {name}",
            lambda c: c.images.get_by_name_and_architecture(name, arch),
        )
        if image is None:
            raise HetznerPreflightError(
                f"image {name!r} does not exist for {arch} servers like {server_type.name}; "
                "set providers.hetzner.image to one `hcloud image list --type system` shows",
                code="not_found",
            )
        with self._lock:
            self._image_id = ident(image.data_model.id)
            return self._image_id
