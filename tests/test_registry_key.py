"""The registry key from the command line: a real local forest planted with a key, then tended
with no key, a wrong key and the right one.

Plants and grows run as real processes (their nats-servers outlive the command); the rest runs
in this process.  Every output is searched for the keys and the forest's secrets.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from morpheus.registry import Registry
from morpheus.secret_codec import KEY_ENV, SEALED, KeySource, SecretCodec, new_key
from morpheus.testing.cli import invoke, morpheus

KEY_EXIT, GREW = 3, 10


@pytest.fixture(autouse=True)
def small_local_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in test_grow: an idle nats-server uses ~6% of a 256 MiB node, so `--threshold 3`
    # makes the forest hot without burning the shared CPU.
    monkeypatch.setenv("MORPHEUS_PROVIDERS__LOCAL__NODE_MEMORY", "256M")


def forest_secrets(state_dir: Path, key: str, forest_id: str) -> list[str]:
    """The forest's route password, CA key and node keys, opened with ``key``."""
    codec = SecretCodec(KeySource.find(None, {KEY_ENV: key}))
    with Registry.in_state_dir(state_dir, secrets=codec) as registry:
        ca = registry.forest_ca(forest_id)
        assert ca is not None
        found = [
            registry.route_credentials(forest_id).password.get_secret_value(),
            ca.key.get_secret_value(),
        ]
        for node in registry.nodes(forest_id):
            certificate = registry.node_certificate(node.id)
            assert certificate is not None
            found.append(certificate.key.get_secret_value())
    return found


def key_line(secret: str) -> str:
    """A PEM's base64 body line, or the secret itself: what would show if it leaked."""
    lines = [line for line in secret.splitlines() if line and not line.startswith("-----")]
    return lines[0] if lines else secret


def test_without_the_right_key_a_forest_lists_shows_and_tears_down_but_does_not_grow(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    planted = morpheus("plant", "local", "medium", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest_id = json.loads(planted.stdout)["forest"]["id"]
    secrets = forest_secrets(state_dir, key, forest_id)
    assert len(secrets) == 5
    outputs = [planted.stdout + planted.stderr]

    def run(*args: str, expect: int, process: bool = False) -> str:
        """stdout, or stderr (one line) when the command failed."""
        result = (morpheus if process else invoke)(*args)
        text = result.stdout + result.stderr
        assert result.returncode == expect, (args, text)
        assert "Traceback" not in text
        outputs.append(text)
        if expect in (0, GREW):
            return result.stdout
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, text
        return result.stderr

    wrong = new_key()
    malformed = "malformed-key-Zq9x"
    for setting in (None, wrong, malformed):
        if setting is None:
            monkeypatch.delenv(KEY_ENV)
        else:
            monkeypatch.setenv(KEY_ENV, setting)
        assert forest_id in run("list", expect=0)
        # Listing needs no secret; like `status`, it says what tending the forest will need.
        listing = invoke("list")
        assert (
            "1 forest(s) keep their secrets encrypted and no registry key is set here"
            in listing.stderr
        ) == (setting is None), listing.stderr
        assert invoke("list", "-q").stderr == ""
        shown = run("status", forest_id, expect=0)
        assert "node-3" in shown
        assert ("no registry key is set here" in shown) == (setting is None)
        assert KEY_ENV in run("grow", forest_id, "--auto", "--threshold", "3", expect=KEY_EXIT)
        assert KEY_ENV in run("rotate", forest_id, expect=KEY_EXIT)
        run("registry", "key", "check", expect=KEY_EXIT)
        run("registry", "encrypt", expect=KEY_EXIT)
    listed = json.loads(run("list", "-o", "json", expect=0))
    assert listed[0]["node_count"] == 3  # nothing was planned, added or changed
    assert forest_secrets(state_dir, key, forest_id) == secrets

    newer = new_key()
    monkeypatch.setenv(KEY_ENV, f"{newer},{key}")  # rotated: the old key second
    assert run("registry", "key", "check", expect=0).startswith(f"Key: {KEY_ENV} (2 keys")
    stored = json.loads(run("registry", "key", "check", "-o", "json", expect=0))["secrets"]
    assert stored["plain"] == 0 and stored["encrypted"] >= len(secrets)
    assert f"re-encrypted {stored['encrypted']}" in run("registry", "encrypt", expect=0)
    # A long --timeout: a slow answer on a loaded machine is not an unreachable node.
    grow = ("grow", forest_id, "--auto", "--threshold", "3", "--timeout", "30")
    run(*grow, expect=GREW, process=True)
    checked = json.loads(run("registry", "key", "check", "-o", "json", expect=0))
    # One more node: one more key, encrypted with the new key.
    grown = {"plain": 0, "encrypted": stored["encrypted"] + 1, "unreadable": 0}
    assert checked["secrets"] == grown
    # The new key alone now opens everything: the old one can go.
    assert forest_secrets(state_dir, newer, forest_id)[:2] == secrets[:2]

    monkeypatch.delenv(KEY_ENV)  # what is billing can always be removed, key or not
    run("teardown", forest_id, "--yes", expect=0, process=True)
    assert json.loads(run("list", "-o", "json", expect=0)) == []

    for text in outputs:
        for secret in [key, wrong, newer, malformed, *secrets]:
            assert key_line(secret) not in text


def test_key_generate_writes_a_private_file_that_the_next_command_uses(state_dir: Path) -> None:
    made = invoke("registry", "key", "generate")
    assert made.returncode == 0, made.stderr
    path = Path.home() / ".config" / "morpheus" / "registry.key"
    assert f"Wrote a new registry key to {path} (mode 0600)" in made.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (key,) = path.read_text().split()
    assert key not in made.stdout + made.stderr
    again = invoke("registry", "key", "generate")
    assert again.returncode == KEY_EXIT
    assert again.stderr.startswith("error: the key file") and "--rotate" in again.stderr
    assert path.read_text().split() == [key]
    checked = json.loads(invoke("registry", "key", "check", "-o", "json").stdout)
    assert checked["key"] == {"source": "key_file", "where": str(path), "keys": 1}
    path.chmod(0o644)
    refused = invoke("registry", "key", "check")
    assert refused.returncode == KEY_EXIT
    assert f"chmod 600 {path}" in refused.stderr


def test_a_registry_from_before_the_key_is_encrypted_by_registry_encrypt(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from morpheus.blueprint import RouteCredentials
    from morpheus.pki import ForestCA
    from morpheus.registry import utcnow

    with Registry.in_state_dir(state_dir) as registry:
        forest = registry.create_forest(
            provider="local",
            size="small",
            location=None,
            run_id="run-1",
            credentials=RouteCredentials.generate(),
            now=utcnow(),
            ca=ForestCA.generate("t", utcnow()),
        )
    key_file = Path("team.key")
    assert invoke("registry", "key", "generate", "--file", str(key_file)).returncode == 0
    monkeypatch.setenv("MORPHEUS_REGISTRY__KEY_FILE", str(key_file))
    check = invoke("registry", "key", "check")
    assert "Secrets: 0 encrypted, 2 plain" in check.stdout
    assert "morpheus registry encrypt" in check.stdout
    assert json.loads(invoke("registry", "encrypt", "-o", "json").stdout) == {
        "encrypted": 2,
        "re_encrypted": 0,
    }
    codec = SecretCodec(KeySource.find(key_file, {}))
    with Registry.in_state_dir(state_dir, secrets=codec) as registry:
        forms = registry.secret_forms()
        assert (forms.plain, forms.sealed) == (0, 2)
        assert registry.route_credentials(forest.id).username == "morpheus-route"
    assert SEALED.encode() in (state_dir / "registry.sqlite3").read_bytes()
