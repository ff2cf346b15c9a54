"""The libvirt binding: imported only when a libvirt node is touched, its errors translated here.

``libvirt-python`` is compiled against the system's libvirt headers, so it is the one part of
Morpheus that can be missing or broken on a machine; importing it lazily keeps every other
command (``morpheus providers``, the local provider) working without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from types import ModuleType
from typing import Any, TypeVar

from morpheus.errors import ProviderError

INSTALL_HINT = (
    "install the libvirt development files with `apt-get install libvirt-dev pkg-config` "
    "(Fedora: `dnf install libvirt-devel pkgconf-pkg-config`), then reinstall the binding "
    "so it is compiled against them: `pip install --force-reinstall --no-cache-dir "
    "libvirt-python` (in a uv project: `uv sync --reinstall-package libvirt-python`)"
)

T = TypeVar("T")

# virErrorNumber values this provider branches on (stable parts of the libvirt ABI).
NO_DOMAIN = 42
NO_NETWORK = 43
NO_STORAGE_POOL = 49
NO_STORAGE_VOL = 50
OPERATION_INVALID = 55


@cache
def load_libvirt() -> ModuleType:
    """The ``libvirt`` module, or a ``ProviderError`` saying exactly what to install."""
    try:
        import libvirt
    except ImportError as exc:
        raise ProviderError(
            f"the libvirt Python binding cannot be imported ({exc}); {INSTALL_HINT}"
        ) from exc
    # By default libvirt also prints every error to stderr; ours reach the user once, translated.
    libvirt.registerErrorHandler(_ignore_error, None)
    module: ModuleType = libvirt
    return module


def _ignore_error(_context: object, _error: object) -> None:
    return None


def error_code(exc: BaseException) -> int | None:
    """The ``virErrorNumber`` of a ``libvirt.libvirtError``; ``None`` for anything else."""
    get = getattr(exc, "get_error_code", None)
    code = get() if callable(get) else None
    return code if isinstance(code, int) else None


@cache
def _code_names() -> dict[int, str]:
    libvirt = load_libvirt()
    names: dict[int, str] = {}
    # The error levels (virErrorLevel) share the prefix and the numbers 0-2 with error codes.
    levels = {"VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR"}
    for name, value in vars(libvirt).items():
        if name.startswith("VIR_ERR_") and name not in levels and isinstance(value, int):
            names.setdefault(value, name)
    return names


def code_name(exc: BaseException) -> str | None:
    """libvirt's name for the error's code (``VIR_ERR_NO_DOMAIN``): ``ProviderError.code``."""
    code = error_code(exc)
    return None if code is None else _code_names().get(code, f"VIR_ERR_{code}")


def one_line(text: str) -> str:
    """A multi-line message (QEMU's output inside a libvirt error) as one readable line.

    libvirt passes some lines on with a literal backslash-n between them; both kinds of
    line break become ``"; "``.
    """
    lines = [line.strip() for line in text.replace("\\n", "\n").splitlines()]
    joined = ""
    for line in filter(None, lines):
        joined += line if not joined else (" " if joined.endswith(":") else "; ") + line
    return joined


def describe_error(exc: BaseException) -> str:
    """libvirt's own message with its error code, e.g. ``... (VIR_ERR_NO_DOMAIN, code 42)``."""
    get_message = getattr(exc, "get_error_message", None)
    message = get_message() if callable(get_message) else None
    code = error_code(exc)
    text = one_line(str(message or exc))
    if code is None:
        return text
    return f"{text} ({_code_names().get(code, 'VIR_ERR_?')}, code {code})"


@contextmanager
def libvirt_errors(action: str) -> Iterator[None]:
    """Translate ``libvirt.libvirtError`` raised inside into ``ProviderError`` naming ``action``."""
    libvirt = load_libvirt()
    try:
        yield
    except libvirt.libvirtError as exc:
        raise ProviderError(
            f"libvirt could not {action}: {describe_error(exc)}", code=code_name(exc)
        ) from exc


def is_libvirt_error(exc: BaseException, *codes: int) -> bool:
    """Whether ``exc`` is a libvirt error with one of ``codes`` (e.g. ``NO_DOMAIN``)."""
    libvirt = load_libvirt()
    return isinstance(exc, libvirt.libvirtError) and error_code(exc) in codes


def find(lookup: Callable[..., T], *args: object, missing: int) -> T | None:
    """``lookup(*args)``, or ``None`` when libvirt answers with the ``missing`` error code."""
    try:
        return lookup(*args)
    except Exception as exc:
        if is_libvirt_error(exc, missing):
            return None
        raise


@contextmanager
def ignoring(*codes: int) -> Iterator[None]:
    """Swallow libvirt errors with these codes: the thing is already gone or already stopped."""
    try:
        yield
    except Exception as exc:
        if not is_libvirt_error(exc, *codes):
            raise


def open_connection(uri: str) -> Any:
    """A read-write connection to ``uri``, or a ``ProviderError`` that says what to check."""
    libvirt = load_libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ProviderError(
            f"cannot connect to libvirt at {uri}: {describe_error(exc)}; check that libvirtd "
            "(or virtqemud) runs and that you may use it (`virsh -c "
            f"{uri} list` must work: join the libvirt group, or set providers.libvirt.uri)",
            code=code_name(exc),
        ) from exc


def upload_volume(connection: Any, volume: Any, chunks: Iterable[bytes], length: int) -> None:
    """Write ``length`` bytes into a storage volume through a libvirt stream.

    Streams work for any pool and for remote hosts, and need no write access to the pool's
    directory on this machine.
    """
    stream = connection.newStream(0)
    try:
        volume.upload(stream, 0, length, 0)
        for chunk in chunks:
            data = bytes(chunk)
            while data:
                sent = stream.send(data)
                if sent < 0:
                    raise ProviderError("libvirt stream refused data while uploading a volume")
                data = data[sent:]
        stream.finish()
    except BaseException:
        with suppress(Exception):
            stream.abort()
        raise
