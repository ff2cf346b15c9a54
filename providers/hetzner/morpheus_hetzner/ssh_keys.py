"""The SSH key nodes let root in with: read on this machine, found or uploaded by name."""

from __future__ import annotations

import threading
from pathlib import Path

from morpheus.errors import ConfigError
from morpheus.ssh_keys import find_public_key, fingerprint, public_key_candidates
from morpheus_hetzner.api import HetznerApi, HetznerError, HetznerPreflightError
from morpheus_hetzner.resources import ident


class ProjectKey:
    """The project's SSH key of the configured name: looked up, or uploaded from this machine."""

    def __init__(self, api: HetznerApi, *, name: str, key_path: Path | None) -> None:
        self._api = api
        self.name = name
        self._key_path = key_path
        self._lock = threading.Lock()
        self._id: int | None = None
        self._absent_by_name = False  # the pre-flight looked the name up and found nothing
        self._public_key: tuple[Path, str] | None = None

    def check(self) -> None:
        """Pre-flight: the key is in the project, or there is a local one to upload."""
        key = self._look_up()
        with self._lock:
            self._id = key
            self._absent_by_name = key is None
        if key is None:
            self.local()

    def words(self) -> str:
        """The plan line: in the project, or which file a plant uploads."""
        if self._id is not None:
            return f"{self.name} (in the project)"
        path, _ = self.local()
        return f"{self.name} (uploading {path})"

    def local(self) -> tuple[Path, str]:
        """The public key to upload when the project has none by the configured name."""
        if self._public_key is not None:
            return self._public_key
        try:
            found = find_public_key(self._key_path, Path.home())
        except ConfigError as exc:
            raise HetznerPreflightError(str(exc), code="ssh_key") from exc
        if found is None:
            candidates = public_key_candidates(self._key_path, Path.home())
            tried = ", ".join(str(c) for c in candidates)
            raise HetznerPreflightError(
                f"no SSH key named {self.name!r} in the Hetzner project and no public key "
                f"to upload ({tried}); create one with `ssh-keygen -t ed25519` or set "
                "infrastructure.ssh.key_path / providers.hetzner.ssh_key_name",
                code="ssh_key",
            )
        self._public_key = found
        return found

    def ensure(self) -> int:
        """The key's id, uploading the local public key when the project has none.

        Looked up first, by name (unless the pre-flight just did) and by the local key's
        fingerprint (the same key uploaded under another name), so a grow spends no refused
        upload; a ``uniqueness_error`` still means another run uploaded it meanwhile, and
        that one is used.
        """
        with self._lock:
            if self._id is not None:
                return self._id
            by_name = not self._absent_by_name
        found = self._look_up() if by_name else None
        if found is None:
            found = self._upload()
        with self._lock:
            self._id = found
        return found

    def _upload(self) -> int:
        """The local key's id: found by fingerprint (uploaded under another name) or
        uploaded now; after a ``uniqueness_error`` (another run uploaded it) the one there."""
        name = self.name
        _, public_key = self.local()

        def by_fingerprint() -> int | None:
            digest = fingerprint(public_key)
            if digest is None:
                return None
            key = self._api.call(
                "looking up SSH key by fingerprint",
                lambda c: c.ssh_keys.get_by_fingerprint(digest),
            )
            return None if key is None else ident(key.data_model.id)

        def find() -> int | None:
            found = self._look_up()
            return by_fingerprint() if found is None else found

        return by_fingerprint() or self._api.create_or_adopt(
            f"uploading SSH key {name}",
            lambda c: ident(
                c.ssh_keys.create(
                    name=name, public_key=public_key, labels={"managed-by": "morpheus"}
                ).data_model.id
            ),
            find,
        )

    def check_line(self) -> str:
        """Whether nodes will let this machine's key in; raises when they would not."""
        key = self._api.call(
            f"looking up SSH key {self.name}", lambda c: c.ssh_keys.get_by_name(self.name)
        )
        if key is None:
            path, _ = self.local()
            return f"{self.name} is not in the project yet; a plant uploads {path}"
        try:
            local = find_public_key(self._key_path, Path.home())
        except ConfigError:
            local = None
        if local is not None and fingerprint(local[1]) != key.data_model.fingerprint:
            raise HetznerError(
                f"the project's SSH key {self.name!r} is not {local[0]}: nodes will not let "
                "this machine in; set providers.hetzner.ssh_key_name to a key of yours",
                code="ssh_key",
            )
        return f"{self.name} is in the project" + (f" and matches {local[0]}" if local else "")

    def _look_up(self) -> int | None:
        key = self._api.call(
            f"looking up SSH key {self.name}", lambda c: c.ssh_keys.get_by_name(self.name)
        )
        return None if key is None else ident(key.data_model.id)
