"""Limits the whole product shares; no imports, so the CLI can read them as it starts."""

RESERVED_FILES = 64
"""File descriptors a process keeps for everything but the sockets it polls nodes with (state
files, logs, the event loop): what sizing a poll from the open-file limit leaves aside."""

MAX_FOREST_NODES = 230
"""The most nodes a forest may have (``plant --nodes``, ``growth.max_nodes``).

A cloud node's user-data must fit 32 KiB and grows with the forest: each peer adds a route to
``nats.conf`` and, where the provider admits routes by address, an element to the firewall,
about 49 bytes per node once compressed when addresses look random (real ones share
prefixes and take less).  Around 19 KiB come first (scripts, units, route TLS files, the
node's SSH host key and the reconfiguration helper), so the bound is about 250 nodes; 230
leaves ~1 KiB for long URLs and admin sources.  ``tests/test_cloudinit.py`` proves the
largest forest fits.
"""
