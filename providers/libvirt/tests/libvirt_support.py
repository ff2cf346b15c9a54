"""What the libvirt tests share: the test driver's names, volume contents, the seed reader."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

TEST_URI = "test:///default"
TEST_POOL = "default-pool"
BASE_IMAGE = "/default-pool/noble-server-cloudimg-amd64.img"


def add_base_image(connection: Any) -> Any:
    """Put a (contentless) cloud image volume at ``BASE_IMAGE`` in the test driver's pool."""
    pool = connection.storagePoolLookupByName(TEST_POOL)
    return pool.createXML(
        f"<volume><name>{BASE_IMAGE.rsplit('/', 1)[1]}</name><capacity unit='G'>3</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )


class VolumeContents:
    """Keeps what the provider uploads into volumes, which the test driver cannot store."""

    def __init__(self) -> None:
        self.by_path: dict[str, bytes] = {}

    def __call__(self, connection: Any, volume: Any, chunks: Iterable[bytes], length: int) -> None:
        data = b"".join(chunks)
        assert len(data) == length
        self.by_path[volume.path()] = data


SEED_NAMES = ("user-data", "meta-data", "network-config")


def read_seed(image: bytes) -> tuple[str, dict[str, str], dict[str, str]]:
    """The volume label, and the files by Rock Ridge name and by Joliet name."""
    import pycdlib  # here: conftest imports this module even where the plugin is missing

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        label = iso.pvd.volume_identifier.decode("ascii").strip()
        by_rock_ridge, by_joliet = {}, {}
        for name in SEED_NAMES:
            for kind, found in (("rr_path", by_rock_ridge), ("joliet_path", by_joliet)):
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, **{kind: f"/{name}"})
                found[name] = out.getvalue().decode("utf-8")
        rock_ridge_names = sorted(
            child.rock_ridge.name().decode()
            for child in iso.list_children(rr_path="/")
            if not (child.is_dot() or child.is_dotdot())
        )
        assert rock_ridge_names == sorted(SEED_NAMES)  # nothing else on the seed
    finally:
        iso.close()
    return label, by_rock_ridge, by_joliet
