"""Secrets at rest: the codec, where the registry key is found, and the key file it lives in.

Real ``cryptography`` Fernet keys and real files; nothing is mocked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from morpheus.errors import RegistryKeyError
from morpheus.secret_codec import (
    ESCAPED_PLAIN,
    KEY_ENV,
    SEALED,
    KeyOrigin,
    KeySource,
    SecretCodec,
    default_key_file,
    new_key,
    write_key_file,
)

SECRET = "route-password-6f1c2b"


def codec_with(*keys: str, plaintext_allowed: bool = True) -> SecretCodec:
    source = KeySource.find(None, {KEY_ENV: ",".join(keys)})
    return SecretCodec(source, plaintext_allowed=plaintext_allowed)


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_sealed_secret_carries_its_marker_hides_the_secret_and_opens_again() -> None:
    codec = codec_with(new_key())
    stored = codec.seal(SECRET)
    assert stored.startswith(SEALED)
    assert SECRET not in stored
    assert codec.seal(SECRET) != stored  # a fresh IV each time
    assert codec.open(stored, "the route password of forest-1") == SECRET


def test_without_a_key_secrets_stay_plain_and_read_back_as_they_were() -> None:
    codec = SecretCodec.without_key()
    assert codec.seal(SECRET) == SECRET  # byte for byte what registries always held
    assert codec.open(SECRET, "x") == SECRET
    # Plain text that looks like a marker is escaped, so it is never taken for one.
    looks_sealed = SEALED + "not-a-token"
    assert codec.seal(looks_sealed) == ESCAPED_PLAIN + looks_sealed
    assert codec.open(codec.seal(looks_sealed), "x") == looks_sealed
    # With a key, legacy plain rows still read.
    assert codec_with(new_key()).open(SECRET, "x") == SECRET


def test_a_shared_registry_refuses_plain_secrets_without_a_key() -> None:
    codec = SecretCodec(KeySource.find(None, {}), plaintext_allowed=False)
    with pytest.raises(RegistryKeyError, match=f"encrypted.*{KEY_ENV}.*registry.key_file"):
        codec.seal(SECRET)


def test_a_wrong_key_a_changed_byte_and_a_missing_key_are_one_line_without_secrets() -> None:
    right, wrong = new_key(), new_key()
    stored = codec_with(right).seal(SECRET)
    flipped = stored[:-5] + ("A" if stored[-5] != "A" else "B") + stored[-4:]
    failures = []
    for codec, value in [
        (codec_with(wrong), stored),
        (codec_with(right), flipped),
        (SecretCodec.without_key(), stored),
    ]:
        with pytest.raises(RegistryKeyError) as caught:
            codec.open(value, "the route password of forest-1")
        failures.append(caught.value)
    for failure in failures:
        message = str(failure)
        assert "the route password of forest-1" in message
        assert "\n" not in message
        for secret in (SECRET, right, wrong, stored):
            assert secret not in message
        assert failure.__cause__ is None
        assert failure.__context__ is None or failure.__suppress_context__
    assert RegistryKeyError.exit_code == 3


def test_after_a_rotation_the_old_key_still_opens_and_the_new_one_seals() -> None:
    old, new = new_key(), new_key()
    stored_old = codec_with(old).seal(SECRET)
    rotated = codec_with(new, old)
    assert rotated.open(stored_old, "x") == SECRET
    stored_new = rotated.seal(SECRET)
    assert codec_with(new).open(stored_new, "x") == SECRET
    with pytest.raises(RegistryKeyError):
        codec_with(old).open(stored_new, "x")
    assert rotated.check() == 2


def test_a_malformed_key_is_named_by_its_place_never_shown() -> None:
    codec = codec_with(new_key(), "not-a-key-at-all")
    with pytest.raises(RegistryKeyError, match=f"key 2 of {KEY_ENV} is not a registry key") as e:
        codec.seal(SECRET)
    assert "not-a-key-at-all" not in str(e.value)


def test_the_variable_wins_then_the_configured_file_then_the_default_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert default_key_file(env) == tmp_path / "config" / "morpheus" / "registry.key"
    assert KeySource.find(None, env).origin is KeyOrigin.NONE
    default = default_key_file(env)
    default.parent.mkdir(parents=True)
    private_file(default, new_key() + "\n")
    assert KeySource.find(None, env).file == default
    configured = private_file(tmp_path / "team.key", new_key())
    assert KeySource.find(configured, env).file == configured
    from_env = KeySource.find(configured, {**env, KEY_ENV: new_key()})
    assert from_env.origin is KeyOrigin.ENVIRONMENT
    assert from_env.describe() == KEY_ENV
    assert KEY_ENV in repr(from_env) and env.get(KEY_ENV, "?") not in repr(from_env)


def test_the_key_never_shows_in_a_repr(tmp_path: Path) -> None:
    key = new_key()
    codec = codec_with(key)
    codec.seal(SECRET)
    assert key not in repr(codec) and key not in repr(codec.source)


def test_a_key_file_holds_keys_one_a_line_with_comments(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    path = private_file(tmp_path / "k", f"# team key\n{first}\n\n{second}\n")
    source = KeySource.find(path, {})
    assert source.keys() == [first, second]
    stored = SecretCodec(source).seal(SECRET)
    assert Fernet(first.encode()).decrypt(stored.removeprefix(SEALED).encode()) == SECRET.encode()


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    key = new_key()
    path = private_file(tmp_path / "k", key, mode=0o644)
    with pytest.raises(RegistryKeyError, match=f"mode 0644.*chmod 600 {path}") as caught:
        SecretCodec(KeySource.find(path, {})).seal(SECRET)
    assert key not in str(caught.value)


def test_a_missing_or_empty_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(RegistryKeyError, match=r"does not exist.*registry key generate --file"):
        SecretCodec(KeySource.find(missing, {})).seal(SECRET)
    with pytest.raises(RegistryKeyError, match=r"is not a file: point registry\.key_file"):
        SecretCodec(KeySource.find(tmp_path, {})).seal(SECRET)  # a directory: no chmod advice
    empty = private_file(tmp_path / "empty.key", "# nothing yet\n")
    with pytest.raises(RegistryKeyError, match="holds no key"):
        SecretCodec(KeySource.find(empty, {})).seal(SECRET)


def test_looking_for_the_key_reads_nothing_until_a_secret_is_needed(tmp_path: Path) -> None:
    path = private_file(tmp_path / "k", new_key(), mode=0o644)
    codec = SecretCodec(KeySource.find(path, {}))  # no error yet: list and status never ask
    assert codec.has_key
    assert codec.open(SECRET, "x") == SECRET  # a plain row needs no key
    with pytest.raises(RegistryKeyError):
        codec.seal(SECRET)


def test_a_generated_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "config" / "morpheus" / "registry.key"
    write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (key,) = KeySource.find(path, {}).keys()
    assert len(key) == 44
    Fernet(key.encode())
    with pytest.raises(RegistryKeyError, match=r"already exists.*--rotate"):
        write_key_file(path)
    assert KeySource.find(path, {}).keys() == [key]
    write_key_file(path, rotate=True)
    newer, older = KeySource.find(path, {}).keys()
    assert older == key and newer != key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["registry.key"]  # no partial file left
    with pytest.raises(RegistryKeyError, match="no key to rotate"):
        write_key_file(tmp_path / "other.key", rotate=True)


def test_a_stored_value_that_is_not_text_is_a_damaged_row() -> None:
    from morpheus.errors import DamagedRegistryError

    blob: Any = b"\x00\x01"
    with pytest.raises(DamagedRegistryError, match=r"route password of forest-1 .* not text"):
        codec_with(new_key()).open(blob, "the route password of forest-1")
