"""How a refused value reads: the one wording of validation errors, and one-line text.

Every model read from outside (config, provider tables, the older tool's registry, the
values a template receives) reports its first problem the same way:
``key.path: what is wrong (and N more problems)``; callers put where it came from in front.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from morpheus.errors import ConfigError

# One line, always: keys, paths and messages from files or an API may hold anything.
from morpheus.safe_text import printable

__all__ = [
    "UNKNOWN_KEY",
    "describe_validation_error",
    "printable",
    "problem_key",
    "validate_token",
]

UNKNOWN_KEY = "unknown key; see config.example.yaml for the valid keys"


def problem_key(exc: ValidationError, prefix: Sequence[str] = ()) -> str:
    """The dotted key of the first problem, below ``prefix``."""
    return ".".join([*prefix, *(str(part) for part in exc.errors()[0]["loc"])])


def describe_validation_error(
    exc: ValidationError,
    *,
    prefix: Sequence[str] = (),
    unknown_key: str | None = None,
    drop_value_error: bool = False,
) -> str:
    """``key: message (and N more problems)`` for the first problem of ``exc``.

    ``unknown_key`` replaces pydantic's words for a key the model forbids;
    ``drop_value_error`` drops pydantic's ``Value error, `` in front of our validators' words.
    """
    errors = exc.errors()
    error = errors[0]
    message = error["msg"]
    if unknown_key is not None and error["type"] == "extra_forbidden":
        message = unknown_key
    if drop_value_error:
        message = message.removeprefix("Value error, ")
    key = problem_key(exc, prefix)
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return printable(f"{key}: {message}{suffix}" if key else f"{message}{suffix}")


def validate_token(value: str, variable: str) -> str:
    """A token trimmed of surrounding whitespace, refusing characters no token has."""
    token = value.strip()
    for position, char in enumerate(token, start=1):
        if ord(char) < 32 or ord(char) == 127:
            raise ConfigError(
                f"{variable} contains a control character at position {position}; "
                "copy the token again without it"
            )
        if not char.isascii():
            raise ConfigError(
                f"{variable} contains a non-ASCII character at position {position}; "
                "copy the token again without it"
            )
    if not token:
        raise ConfigError(f"{variable} is empty; set it to your API token or unset it")
    return token
