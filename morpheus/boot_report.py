"""What a node's bootstrap says when it fails, read back from the node's output.

The bootstrap (templates/bootstrap.sh.j2) prints each step's own messages as
``morpheus: <message>`` and, at the first failure, one line

    morpheus: FAILED while <step> (exit status N) at <UTC time>; this node does not serve

Providers that can see a node's console (libvirt's serial log) pass its text to
``failure_in_console``; the core then stops waiting for that node at once and shows the
failing step and the message before it, instead of waiting out the readiness deadline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FAILED = re.compile(
    r"morpheus: FAILED while (?P<step>.+?) \(exit status (?P<status>\d+)\)"
    r"(?: at (?P<at>[0-9T:-]+Z))?; this node does not serve"
)
_MESSAGE = re.compile(r"morpheus: (?P<message>.+)")
_PROGRESS = re.compile(r"^(?:downloading |setting up node |installed )|\bverified \(")
# Colour codes a console may carry.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class BootFailure:
    """The step a node's bootstrap failed at, and the message it printed just before."""

    step: str
    exit_status: int
    failed_at: str | None = None
    cause: str | None = None

    def describe(self) -> str:
        """One line: ``bootstrap failed while <step> (exit status 1) at …: <cause>``."""
        when = f" at {self.failed_at}" if self.failed_at else ""
        text = f"bootstrap failed while {self.step} (exit status {self.exit_status}){when}"
        return f"{text}: {self.cause}" if self.cause else text


def failure_in_console(text: str) -> BootFailure | None:
    """The first bootstrap failure in a node's console output, or ``None`` when there is none."""
    previous: str | None = None
    for raw in _ANSI.sub("", text).replace("\r", "\n").splitlines():
        failed = _FAILED.search(raw)
        if failed is not None:
            return BootFailure(
                step=failed["step"],
                exit_status=int(failed["status"]),
                failed_at=failed["at"],
                cause=previous,
            )
        message = _MESSAGE.search(raw)
        if message is not None:
            words = message["message"].strip()
            # Progress lines are not causes; the last other message before FAILED is.
            if not _PROGRESS.search(words):
                previous = words
    return None
