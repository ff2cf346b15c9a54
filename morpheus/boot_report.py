"""What a node's bootstrap says when it fails, read back from the node's output.

The bootstrap (templates/bootstrap.sh.j2) prints each step's own messages as
``morpheus: <message>`` and, at the first failure, one line

    morpheus: FAILED while <step> (exit status N) at <UTC time>; this node does not serve

Providers that can see a node's console (libvirt's serial log) pass its text to
``failure_in_console``; the core then stops waiting for that node at once and shows the
failing step and the message before it, instead of waiting out the readiness deadline.

Where no console can be read (Hetzner), the node says it itself: after a failure the
bootstrap serves, on the monitoring port and until NATS runs, HTTP 503 with

    {"morpheus_bootstrap_failed": {"failed_step": …, "exit_status": …, "failed_at": …,
                                   "messages": ["morpheus: …", …]}}

which the monitor hands to ``failure_in_reply`` when ``/varz`` answers with anything but 200.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from morpheus.safe_text import printable

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


class _Reported(BaseModel):
    """The failure responder's ``morpheus_bootstrap_failed`` object (extra keys ignored)."""

    model_config = ConfigDict(extra="ignore")

    failed_step: str = Field(min_length=1, max_length=200)
    exit_status: int = Field(ge=0, le=255)
    failed_at: str | None = Field(default=None, max_length=40)
    messages: list[str] = Field(default_factory=list, max_length=50)


def failure_in_reply(body: bytes) -> BootFailure | None:
    """The failure a node's monitoring port reported in ``body``; ``None`` for anything else.

    Anything that is not the responder's JSON (an HTML page, NATS's own error, garbage) is
    not a reported failure: the wait goes on as for a node that does not answer yet.  Text
    from the node is shown with its control characters escaped.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    try:
        reported = _Reported.model_validate(document.get("morpheus_bootstrap_failed"))
    except ValidationError:
        return None
    # The messages end with the bootstrap's own FAILED line: read them as a console is read.
    from_messages = failure_in_console("\n".join(reported.messages))
    cause = from_messages.cause if from_messages is not None else None
    return BootFailure(
        step=printable(reported.failed_step),
        exit_status=reported.exit_status,
        failed_at=printable(reported.failed_at) if reported.failed_at else None,
        cause=printable(cause[:500]) if cause else None,
    )
