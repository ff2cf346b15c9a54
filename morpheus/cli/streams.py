"""The standard streams a command is given, whatever they are.

A closed stream (``>&-``), a full disk (``> /dev/full``), a pipe closed early (``| head``) or
a terminal whose encoding cannot show every character must end in one line and an exit code,
never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys

#: ``| head`` closed the pipe: nothing more is said, exit 1 (as rich does for its output).
EXIT_BROKEN_PIPE = 1
_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT, errno.EFBIG}


def prepare() -> None:
    """Closed streams become the null device; output never fails on an unencodable character."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def is_output_error(exc: OSError) -> bool:
    """Whether ``exc`` is a failed write to stdout/stderr (not a file Morpheus opened)."""
    return exc.errno in _OUTPUT_ERRNOS and exc.filename is None


def silence_stdout() -> None:
    """Point stdout at the null device so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
