"""Each node's serial console log on the libvirt host: where it is, what a failed boot left in
it, and removing it with the node.  Read only when the libvirt host is this machine."""

from __future__ import annotations

import re
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

from morpheus.boot_report import failure_in_console
from morpheus_libvirt.settings import LibvirtSettings

#: How much of the end of a console log is read when looking for a failed boot.
_CONSOLE_TAIL_BYTES = 256 * 1024


class ConsoleLogs:
    """The console logs of the nodes of one libvirt host."""

    def __init__(self, settings: LibvirtSettings) -> None:
        self.directory = Path(settings.console_log_dir)
        self.here = urlsplit(settings.uri).hostname in (None, "", "localhost")

    def path(self, node_id: str) -> Path:
        """The file on the libvirt host that receives the node's serial console."""
        return self.directory / f"{node_id}-console.log"

    def boot_failure(self, node_id: str) -> str | None:
        """The bootstrap's failure line in the node's console log, when it can be read here."""
        if not self.here:
            return None
        try:
            with self.path(node_id).open("rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - _CONSOLE_TAIL_BYTES))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return None  # not written yet, or not readable by this user
        failure = failure_in_console(text)
        if failure is None:
            return None
        return f"{failure.describe()} (serial console: {self.path(node_id)})"

    def remove(self, node_id: str) -> None:
        """The node's console log, and the QEMU log libvirt keeps beside it (``<node>.log``)."""
        if self.here:
            for path in (self.path(node_id), self.path(node_id).with_name(f"{node_id}.log")):
                with suppress(OSError):
                    path.unlink(missing_ok=True)

    def remove_forest(self, forest_id: str, live: set[str]) -> None:
        """The logs of the forest's nodes that no longer exist (``live`` still do)."""
        if not self.here:
            return
        node_log = re.compile(rf"^({re.escape(forest_id)}-node-\d+)(?:-console)?\.log$")
        for log in self.directory.glob(f"{forest_id}-node-*.log"):
            found = node_log.match(log.name)
            if found is not None and found[1] not in live:
                with suppress(OSError):
                    log.unlink()
