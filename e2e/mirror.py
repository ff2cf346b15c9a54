"""Serve one directory over HTTP on the morpheus bridge: the guests' only download source.

Usage: python3 e2e/mirror.py ADDRESS PORT DIRECTORY

The bridge's IPv6 address stays "tentative" (duplicate address detection) until a VM
plugs into the bridge, and a tentative address cannot be bound; IP_FREEBIND lets the
server listen on it from the start.  Read-only, GET/HEAD only, one line per request on
stderr.
"""

from __future__ import annotations

import functools
import http.server
import socket
import sys

# From <linux/in.h>; socket.IP_FREEBIND exists only on newer Pythons.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


class FreebindServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        super().server_bind()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    address, port, directory = argv
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    with FreebindServer((address, int(port)), handler) as server:
        print(f"mirror: serving {directory} on [{address}]:{port}", file=sys.stderr, flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
