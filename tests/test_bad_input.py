"""The bad input corpus: hostile or broken input, through the CLI wherever it reaches.

The CLI runs in this process (``invoke``: the program's entry point, exit codes and error
lines included) except where a case plants real nats-servers, which only a real process
(``morpheus``) can own and leave behind. Every case must end in one line on stderr
(``error: ...``), the documented exit code (1 for config, registry and provider errors, 2 for
usage), no traceback, and nothing recorded lost.
Cases that are not CLI-reachable (NATS monitoring replies, blueprint fields) go straight to
the boundary that receives them.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from morpheus.blueprint import NatsInstall, build_blueprint, size_text
from morpheus.errors import TemplateInputError
from morpheus.models import Capacity
from morpheus.monitor import MonitorTarget, poll_nodes
from morpheus.registry import Registry
from morpheus.render import delivered_files
from morpheus.testing.cli import cli_environment, invoke, morpheus
from morpheus.testing.nats import healthz_ok, processes_mentioning

Result = subprocess.CompletedProcess[str]
SHA = "ab" * 32
#: A command substitution that leaves a file behind if any layer ever runs it.
CANARY_COMMAND = "$(touch$IFS./pwned)"


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said why in exactly one ``error:`` line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.returncode == code, result.stderr
    return lines[0]


def assert_usage_error(result: Result, fragment: str) -> None:
    """Exit 2 from Click's own parsing: one ``Error:`` line (after its usage hint), no trace.

    ``test_click_usage_errors_are_one_line`` holds these to the one-line rule as well.
    """
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def write_config(text: str | bytes, name: str = "config.yaml") -> Path:
    path = Path.cwd() / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def listed_forests() -> list[dict[str, Any]]:
    result = invoke("list", "-o", "json")
    assert result.returncode == 0, result.stderr
    forests: list[dict[str, Any]] = json.loads(result.stdout)
    return forests


# --- config files ---------------------------------------------------------------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)

CONFIG_CASES = [
    # wrong types, at each level
    ("growth: 5\n", "config.yaml:1: growth: Input should be a valid dictionary"),
    ("growth:\n  max_nodes: [1, 2]\n", "config.yaml:2: growth.max_nodes: Input should be a valid"),
    ("integration:\n  nats_install: maybe\n", "integration.nats_install: Input should be a valid"),
    ("infrastructure:\n  locations: fsn1\n", "infrastructure.locations: Input should be a valid"),
    ("infrastructure:\n  locations: []\n", "infrastructure.locations: List should have at least"),
    ("infrastructure:\n  ssh: {key_path: [a]}\n", "infrastructure.ssh.key_path"),
    ("secrets: 5\n", "config.yaml:1: secrets: Input should be a valid dictionary"),
    (
        "secrets:\n  hetzner_api_token: 12345\n",
        "secrets.hetzner_api_token: Input should be a valid",
    ),
    ("providers: [local]\n", "config.yaml:1: providers: Input should be a valid dictionary"),
    ("1: one\n", "config.yaml:1: '1' is not a section name"),
    ("null: nothing\n", "config.yaml:1: 'null' is not a section name"),
    # unknown keys at every level
    ("colour: green\n", "config.yaml:1: colour: unknown key"),
    ("infrastructure:\n  flavour: cx11\n", "config.yaml:2: infrastructure.flavour: unknown key"),
    ("infrastructure:\n  ssh:\n    keyname: me\n", "config.yaml:3: infrastructure.ssh.keyname"),
    ("secrets:\n  hcloud_token: abc\n", "config.yaml:2: secrets.hcloud_token: unknown key"),
    # broken YAML of several kinds
    ("growth: {max_nodes: 3\n", "config.yaml:2: expected ',' or '}'"),
    ("growth:\n  max_nodes: 3\n cooldown_minutes: 1\n", "config.yaml:3:"),
    ("growth:\n\tmax_nodes: 3\n", "found character '\\t' that cannot start any token"),
    ("image: 'unterminated\n", "found unexpected end of stream"),
    ("growth: *nowhere\n", "found undefined alias 'nowhere'"),
    ("growth: {}\n---\ngrowth: {}\n", "but found another document"),
    ("%YAML 9.9\n---\ngrowth: {}\n", "found incompatible YAML document"),
    ("? [a, b]\n: 1\n", "found unhashable key"),
    ("- a list\n- of things\n", "the top level must be a mapping"),
    # huge values
    ("growth:\n  threshold_cpu: " + "1" + "0" * 30 + "\n", "less than or equal to 100"),
    ("growth:\n  max_nodes: " + "9" * 5000 + "\n", "a value cannot be read"),
    ("provisioning:\n  readiness_timeout: .inf\n", "readiness_timeout: Input should be a finite"),
    ("provisioning:\n  readiness_timeout: 1e999\n", "readiness_timeout: Input should be a finite"),
    ("provisioning:\n  readiness_interval: .nan\n", "readiness_interval: Input should be a finite"),
    ("growth: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("x: &loop [*loop]\n", "contains itself through a YAML alias"),
    (BILLION_LAUGHS, "expands to more than 100000 values"),
    # unicode and control characters
    ("ünïcødé: ✓\n", "config.yaml:1: ünïcødé: unknown key"),
    ('growth:\n  "max\\nnodes": 3\n', "growth.max\\nnodes: unknown key"),
    ('growth:\n  "max\\u2028nodes": 3\n', "growth.max\\u2028nodes: unknown key"),
    ('integration:\n  jetstream_max_memory: "１G"\n', "integration.jetstream_max_memory"),
    ('integration:\n  nats_version: "２.１０.０"\n', "integration.nats_version"),
    ('integration:\n  registry_url: "https://r.example/\\u00e9"\n', "integration.registry_url"),
    ('secrets:\n  hetzner_api_token: "tok\\x1ben"\n', "control character at position 4"),
    # ${VAR} that is not set
    ("secrets:\n  hetzner_api_token: ${MORPHEUS_TEST_UNSET}\n", "config.yaml:2: ${MORPHEUS_TEST"),
]


@pytest.mark.parametrize(("text", "expected"), CONFIG_CASES)
def test_broken_config_is_one_line(text: str, expected: str) -> None:
    write_config(text)
    started = time.process_time()  # CPU seconds: the machine may be busy with other work
    result = invoke("config", "check")
    line = assert_one_line_error(result, 1, expected)
    assert result.stdout == ""
    assert time.process_time() - started < 30
    # What the operator typed is echoed only as far as needed to find it.
    assert len(line) < 400, line[:400]


def test_python_tags_are_not_constructed(tmp_path: Path) -> None:
    write_config("growth: !!python/object/apply:os.system ['touch pwned']\n")
    assert_one_line_error(invoke("config", "check"), 1, "could not determine a constructor")
    assert not (tmp_path / "pwned").exists()


def test_ten_megabyte_values_are_refused_quickly_without_being_echoed() -> None:
    write_config('integration:\n  jetstream_max_memory: "' + "9" * 10_000_000 + 'X"\n')
    started = time.process_time()  # CPU seconds: the machine may be busy with other work
    # Refused by its size before the YAML parser spends seconds on it.
    line = assert_one_line_error(invoke("config", "check"), 1, "larger than 1024 KiB")
    assert len(line) < 400 and time.process_time() - started < 60


def test_deep_but_readable_nesting_is_an_unknown_key_not_a_crash() -> None:
    write_config("growth:\n  deep: " + "{a: " * 200 + "1" + "}" * 200 + "\n")
    assert_one_line_error(invoke("config", "check"), 1, "growth.deep: unknown key")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"\xef\xbb\xbfgrowth:\n  max_nodes: 4\n", id="utf8-bom"),
        pytest.param(b"growth:\r\n  max_nodes: 4\r\n", id="crlf"),
        pytest.param(b"growth:\n  max_nodes: 4 # \xe2\x9c\x93 \xc3\xbc\n", id="unicode-comment"),
    ],
)
def test_harmless_encodings_are_read(text: bytes) -> None:
    write_config(text)
    result = invoke("config", "check", "-o", "json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["values"]["growth.max_nodes"]
    assert shown["value"] == 4 and shown["source"].endswith("config.yaml:2")


@pytest.mark.parametrize(
    "raw",
    [b"", b"\n\n", b"# nothing\n", b"---\n", b"~\n"],
    ids=["empty", "blank", "c", "doc", "null"],
)
def test_empty_config_means_defaults(raw: bytes) -> None:
    write_config(raw)
    result = invoke("config", "check", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["values"]["growth.max_nodes"]["source"] == "default"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfegrowth: {}\n", "cannot read config file"),
        (b"growth:\n  max_nodes: \x00\n", "not valid YAML"),
        (b"growth:\n  enabled: \x1b[31m\n", "not valid YAML"),
    ],
    ids=["utf16-bytes", "nul", "escape"],
)
def test_unreadable_bytes_are_one_line(raw: bytes, expected: str) -> None:
    write_config(raw)
    assert_one_line_error(invoke("config", "check"), 1, expected)


def test_config_path_that_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf.d").mkdir()
    assert_usage_error(invoke("-c", str(tmp_path / "conf.d"), "config", "check"), "directory")
    monkeypatch.setenv("MORPHEUS_CONFIG", str(tmp_path / "conf.d"))
    assert_one_line_error(invoke("config", "check"), 1, "conf.d is not a file")


def test_config_path_that_is_a_dangling_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "link.yaml").symlink_to(tmp_path / "gone.yaml")
    monkeypatch.setenv("MORPHEUS_CONFIG", str(tmp_path / "link.yaml"))
    assert_one_line_error(invoke("config", "check"), 1, "link.yaml does not exist")
    assert_one_line_error(invoke("status", "forest-1"), 1, "link.yaml does not exist")


# --- environment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HCLOUD_TOKEN", "tok\x1b[31mred", "HCLOUD_TOKEN contains a control character at"),
        ("HCLOUD_TOKEN", "tok\nen", "HCLOUD_TOKEN contains a control character at position 4"),
        ("HCLOUD_TOKEN", "tok\x7fen", "HCLOUD_TOKEN contains a control character at position 4"),
        ("HCLOUD_TOKEN", "tok\u200ben", "HCLOUD_TOKEN contains a non-ASCII character at"),
        ("HCLOUD_TOKEN", "\ufefftoken", "HCLOUD_TOKEN contains a non-ASCII character at position"),
        ("HETZNER_API_TOKEN", "tøken", "HETZNER_API_TOKEN contains a non-ASCII character at"),
        ("HETZNER_API_TOKEN", " \t ", "HETZNER_API_TOKEN is empty"),
        (
            "MORPHEUS_SECRETS__HETZNER_API_TOKEN",
            "tok\x07en",
            "MORPHEUS_SECRETS__HETZNER_API_TOKEN contains a control character at position 4",
        ),
    ],
)
def test_bad_token_characters_through_the_cli(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = invoke("plant", "cloud", "small", "--dry-run")
    assert_one_line_error(result, 1, expected)
    assert value.strip() not in result.stderr + result.stdout or not value.strip()


def test_check_names_a_bad_token_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", "tok-secret\x1b[2J")
    checked = invoke("check")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "HCLOUD_TOKEN contains a control character at position 11" in checked.stdout
    assert "tok-secret" not in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MORPHEUS_GROWTH", "not json", 'field "growth"'),
        ("MORPHEUS_INFRASTRUCTURE__ADMIN_SOURCES", "fsn1", 'field "infrastructure"'),
        ("MORPHEUS_PROVIDERS", "[1, 2", 'field "providers"'),
        ("MORPHEUS_GROWTH__MAX_NODES", "9" * 5000, "environment variable MORPHEUS_GROWTH__MAX"),
        ("MORPHEUS_GROWTH__THRESHOLD_CPU", "0", "threshold_cpu: Input should be greater than"),
    ],
)
def test_bad_environment_values_are_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert_one_line_error(invoke("config", "check"), 1, expected)


# --- flags and arguments --------------------------------------------------------------------

USAGE_CASES = [
    (["plant", "local", "--nodes", "-1"], "'--nodes'"),
    (["plant", "local", "--nodes", "0"], "'--nodes'"),
    (["plant", "local", "--nodes", "501"], "'--nodes'"),
    (["plant", "local", "--nodes", "1" + "0" * 30], "'--nodes'"),
    (["plant", "local", "--nodes", "three"], "'--nodes'"),
    (["plant", "local", "--nodes", "1.5"], "'--nodes'"),
    (["grow", "--threshold", "0"], "'--threshold'"),
    (["grow", "--threshold", "101"], "'--threshold'"),
    (["grow", "--threshold", "-80"], "'--threshold'"),
    (["grow", "--timeout", "nan"], "'--timeout'"),
    (["grow", "--timeout", "inf"], "'--timeout'"),
    (["grow", "--timeout", "0"], "'--timeout'"),
    (["plant", "local", "small", "--colour"], "No such option: --colour"),
    (["--verbose", "list"], "No such option: --verbose"),
    (["status", "forest-1", "-o", "xml"], "'xml' is not one of"),
    (["config", "check", "--output", "toml"], "'toml' is not one of"),
    (["list", "-o", ""], "'' is not one of"),
    (["sprout"], "No such command 'sprout'"),
    (["teardown"], "Missing argument"),
    (["list", "extra"], "unexpected extra argument"),
    (["plant", "local", "small", "--dry-run", "--user-data-dir", "config.yaml"], "is a file"),
]


@pytest.mark.parametrize(("args", "fragment"), USAGE_CASES)
def test_bad_flags_are_usage_errors(args: list[str], fragment: str) -> None:
    Path("config.yaml").write_text("growth: {}\n")
    assert_usage_error(invoke(*args), fragment)


def test_click_usage_errors_are_one_line() -> None:
    assert_one_line_error(invoke("plant", "local", "--nodes", "-1"), 2, "--nodes")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plant", "local", "small; rm -rf ~"], "unknown size 'small; rm -rf ~'"),
        (["plant", "local", "ｓｍａｌｌ"], "unknown size"),
        (["plant", "$(reboot)", "small"], "unknown target '$(reboot)'"),
        (["plant", "local", "small", "--user-data-dir", "ud"], "only goes with --dry-run"),
        (["plant", "local", "small", "--nodes", "3"], "size 'small' means 1 nodes"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(args: list[str], fragment: str) -> None:
    assert_one_line_error(invoke(*args), 2, fragment)
    assert not Path("ud").exists()


# --- forest ids -----------------------------------------------------------------------------

HOSTILE_IDS = [
    "",
    " ",
    "../../etc",
    "/etc/passwd",
    "forest-*",
    "%",
    "' OR 1=1 --",
    '"; DROP TABLE forests; --',
    "forest-1; rm -rf ~",
    CANARY_COMMAND,
    "`touch pwned`",
    "ƒørèst-☃",
    "forest-%s%n%x",
    "x" * 100_000,
]


# Each id goes to one of the commands that take a forest, in turn.
FOREST_COMMANDS = [
    ["status", "{}"],
    ["teardown", "{}", "--yes"],
    ["grow", "{}", "--dry-run"],
    ["user-data", "{}", "node-1"],
]


@pytest.mark.parametrize(
    ("forest_id", "command"),
    [(v, FOREST_COMMANDS[i % len(FOREST_COMMANDS)]) for i, v in enumerate(HOSTILE_IDS)],
    ids=lambda v: repr(v[:20]) if isinstance(v, str) else v[0],
)
def test_hostile_forest_ids_are_not_found(
    forest_id: str, command: list[str], tmp_path: Path
) -> None:
    args = [forest_id if word == "{}" else word for word in command]
    line = assert_one_line_error(invoke(*args), 1, "no forest")
    assert len(line) < 300
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "forest_id", ["forest\x1b]0;pwned\x07", "forest\x1b[2J", "a\u202eb", "a\rb", "a\nb"]
)
def test_control_characters_in_forest_ids_are_escaped(forest_id: str) -> None:
    result = invoke("status", forest_id)
    assert_one_line_error(result, 1, "no forest")
    assert not set(result.stderr) & {"\x1b", "\x07", "\u202e", "\r"}


@pytest.mark.parametrize("forest_id", ["[/red]", "[bold]x[/bold]"])
def test_markup_in_forest_ids_is_shown_as_typed(forest_id: str) -> None:
    assert_one_line_error(invoke("status", forest_id), 1, repr(forest_id))


def test_hostile_ids_leave_a_planted_forest_alone(state_dir: Path, tmp_path: Path) -> None:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    near_misses = [
        forest + "\n", " " + forest, forest.upper(), forest[:-1], forest[:-2] + "_" + forest[-1],
        f"{forest}' OR '1'='1", "forest-*", "%", f"../{forest}",
    ]  # fmt: skip
    for forest_id in near_misses:
        assert_one_line_error(morpheus("teardown", forest_id, "--yes"), 1, "no forest")
    for node in ("../../../etc/passwd", "node-1' OR '1'='1"):
        assert_one_line_error(morpheus("user-data", forest, node), 2, "has no node")

    assert [f["id"] for f in listed_forests()] == [forest]
    status = json.loads(morpheus("status", forest, "-o", "json").stdout)
    assert [n["nats"]["healthy"] for n in status["nodes"]] == [True]
    assert morpheus("teardown", forest, "--yes").returncode == 0
    assert processes_mentioning(str(state_dir)) == []


def test_a_broken_config_loses_nothing_recorded(state_dir: Path) -> None:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]
    monitor = json.loads(planted.stdout)["nodes"][0]["monitor_url"]
    commands = (
        ["grow", forest["id"], "--yes"],
        ["teardown", forest["id"], "--yes"],
        ["user-data", forest["id"], "node-1"],
    )
    for broken, args in zip(
        ("growth: [\n", "growth:\n  max_nodes: lots\n", "x: &a [*a]\n"), commands, strict=True
    ):
        write_config(broken)
        assert_one_line_error(morpheus(*args), 1, "config.yaml")
    assert [f["id"] for f in listed_forests()] == [forest["id"]]
    assert healthz_ok(monitor)
    Path("config.yaml").unlink()
    assert morpheus("teardown", forest["id"], "--yes").returncode == 0
    assert processes_mentioning(str(state_dir)) == []


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"this is not sqlite" * 100, b"SQLite format 3\x00" + b"\xff" * 200]
)
def test_a_corrupt_registry_is_reported_and_never_overwritten(
    state_dir: Path, content: bytes
) -> None:
    state_dir.mkdir()
    registry = state_dir / "registry.sqlite3"
    registry.write_bytes(content)
    for args in (["status", "forest-1"], ["plant", "local", "small"], ["grow"]):
        line = assert_one_line_error(invoke(*args), 1, "registry", "morpheus registry rebuild")
        assert "aside" not in line
    assert registry.read_bytes() == content
    assert processes_mentioning(str(state_dir)) == []


def test_list_reports_a_corrupt_registry_in_one_line(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "registry.sqlite3").write_bytes(b"this is not sqlite" * 100)
    assert_one_line_error(invoke("list"), 1, "registry", "morpheus registry rebuild")


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_a_lost_registry_beside_running_nodes_is_said_never_empty(
    state_dir: Path, damage: str
) -> None:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    monitor = json.loads(planted.stdout)["nodes"][0]["monitor_url"]
    for leftover in state_dir.glob("registry.sqlite3*"):
        leftover.unlink()
    if damage == "empty":
        (state_dir / "registry.sqlite3").touch()
    for args in (["list"], ["status", forest], ["plant", "local", "small"], ["grow"]):
        assert_one_line_error(
            morpheus(*args), 1, f"is {damage}, but forests remain", forest, "registry rebuild"
        )
    checked = morpheus("check")
    assert checked.returncode == 1 and "✗ registry" in checked.stdout, checked.stdout
    assert "fix: morpheus registry rebuild" in checked.stdout
    assert healthz_ok(monitor)
    assert len(list(state_dir.glob("local/*/*/node.json"))) == 1


@pytest.mark.parametrize(
    ("trigger", "fragment"),
    [
        ("BEFORE INSERT ON nodes", "free space on that disk"),
        ("BEFORE UPDATE OF status ON nodes WHEN NEW.status = 'active'", "free space on that"),
        ("BEFORE UPDATE OF status ON forests WHEN NEW.status = 'active'", "free space on th"),
    ],
    ids=["planning", "activating-a-node", "activating-the-forest"],
)
def test_a_registry_write_failing_mid_plant_rolls_everything_back(
    state_dir: Path, trigger: str, fragment: str
) -> None:
    """A full disk at each step of a plant: one line, no process, no `planting` row."""
    Registry.in_state_dir(state_dir).close()
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute(
            f"CREATE TRIGGER full {trigger} BEGIN "
            "SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    assert_one_line_error(morpheus("-q", "plant", "local", "medium"), 1, fragment)
    assert processes_mentioning(str(state_dir)) == []
    assert listed_forests() == []
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM nodes").fetchone() == (0,)
    assert not (state_dir / "local").exists() or list((state_dir / "local").iterdir()) == []


def test_a_crafted_forest_row_never_reaches_the_file_system(
    state_dir: Path, tmp_path: Path
) -> None:
    """A row whose id climbs out of the state directory: teardown must not delete there."""
    victim = tmp_path / "victim"
    (victim / "precious").mkdir(parents=True)
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    crafted = "../../victim"
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute(
            "INSERT INTO forests SELECT ?, provider, size, location, status, created_at,"
            " last_expansion, cluster_name, credentials_ref, run_id, next_node_index, host"
            " FROM forests WHERE id = ?",
            (crafted, forest),
        )
    for args in (["teardown", crafted, "--yes"], ["status", crafted], ["grow", crafted]):
        assert_one_line_error(morpheus(*args), 1, "is damaged", "registry rebuild")
    assert (victim / "precious").is_dir()


def test_control_sequences_in_the_registry_never_reach_the_terminal(state_dir: Path) -> None:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    with sqlite3.connect(state_dir / "registry.sqlite3") as db:
        db.execute(
            "INSERT INTO events (forest_id, at, kind, message) VALUES (?, ?, ?, ?)",
            (forest, "2026-11-27T12:00:00+00:00", "note\x1b[2J", "\x1b]0;pwned\x07\r\u202eok"),
        )
        db.execute("UPDATE forests SET size = 'small\x1b[31m'")
    for args in (["status", forest], ["list"], ["status", forest, "-o", "json"]):
        shown = morpheus(*args)
        assert shown.returncode == 0, shown.stderr
        assert not set(shown.stdout + shown.stderr) & {"\x1b", "\x07", "\r", "\u202e"}
    assert morpheus("teardown", forest, "--yes").returncode == 0


# --- hostile strings that would reach templates ---------------------------------------------

NIMSFOREST = f"  nimsforest_install: true\n  nimsforest_sha256: '{SHA}'\n"
HOSTILE_TEMPLATE_INPUTS = [
    (
        "integration:\n" + NIMSFOREST + "  nimsforest_download_url: https://d.example/nf\n"
        '  registry_url: "https://r.example/\\n  - reboot"\n',
        "integration.registry_url: String should match pattern",
    ),
    (
        'integration:\n  registry_url: "https://r.example/\\"; reboot; \\""\n',
        "integration.registry_url",
    ),
    ('integration:\n  callback_url: "javascript:alert(1)"\n', "integration.callback_url"),
    (
        f"integration:\n  nats_download_url: file:///etc/passwd\n  nats_sha256: '{SHA}'\n",
        "integration.nats_download_url",
    ),
    (
        "integration:\n  nats_download_url: \"https://n.example/x'$(reboot)'\"\n"
        f"  nats_sha256: '{SHA}'\n",
        "integration.nats_download_url",
    ),
    ("infrastructure:\n  admin_sources: ['0.0.0.0/0; reboot']\n", "admin_sources.0: Value error"),
    ("infrastructure:\n  admin_sources: [everyone]\n", "admin_sources.0: Value error"),
    ("infrastructure:\n  admin_sources: [10]\n", "admin_sources.0: Input should be a valid"),
    # Refused by the blueprint today; by the provider's settings once they check the host.
    ('providers:\n  local:\n    host: "localhost\\n"\n', "client_listen: Value error|local.host"),
    ("providers:\n  local:\n    host: '127.0.0.1 }'\n", "client_listen: Value error|local.host"),
]


@pytest.mark.parametrize(("config", "fragment"), HOSTILE_TEMPLATE_INPUTS)
def test_hostile_template_inputs_are_refused_before_rendering(
    config: str, fragment: str, state_dir: Path, tmp_path: Path
) -> None:
    write_config(config)
    dry = invoke("-q", "plant", "local", "small", "--dry-run", "--user-data-dir", "ud")
    line = assert_one_line_error(dry, 1)
    assert any(alternative in line for alternative in fragment.split("|")), line
    assert not (tmp_path / "ud").exists() or list((tmp_path / "ud").iterdir()) == []
    # A real plant reads the same config; it is worth running where the refusal comes at
    # render time (the blueprint), not where the config itself is refused. Not for the
    # local provider's own settings, whose plant does not get that far: see the report.
    if "Value error" in fragment and "providers:" not in config:
        assert_one_line_error(invoke("-q", "plant", "local", "small"), 1, fragment)
    assert listed_forests() == []
    assert processes_mentioning(str(state_dir)) == []


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ('providers:\n  local:\n    host: "localhost\\n"\n', "providers.local.host"),
        ("providers:\n  local:\n    host: evil.example\n", "providers.local.host"),
        ("providers:\n  local:\n    node_memory: '0'\n", "providers.local.node_memory"),
        ('providers:\n  local:\n    jetstream_max_memory: "６４M"\n', "jetstream_max_memory"),
        ('providers:\n  local:\n    "a\\nb": 1\n', "providers.local.a\\nb"),
    ],
)
def test_bad_local_provider_settings_are_one_line(
    config: str, fragment: str, state_dir: Path
) -> None:
    write_config(config)
    assert_one_line_error(invoke("-q", "plant", "local", "small"), 1, fragment)
    assert listed_forests() == []


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "::ffff:127.0.0.1", "fe80::1"]
)
def test_local_nodes_listen_on_loopback_only(host: str, state_dir: Path) -> None:
    """Their client port has no authentication: refused before anything is created."""
    write_config(f'providers:\n  local:\n    host: "{host}"\n')
    assert_one_line_error(
        morpheus("plant", "local", "small"), 1, "providers.local.host", "loopback"
    )
    assert listed_forests() == []
    assert not (state_dir / "locks").exists() or list((state_dir / "locks").iterdir()) == []
    assert not (state_dir / "local").exists()


@pytest.mark.parametrize("name", ['say "hi"', "cost$HOME", "100%", "back\\slash", "new\nline"])
def test_state_directories_configs_cannot_hold_are_refused_by_check_and_plant(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / name
    monkeypatch.setenv("MORPHEUS_STATE_DIR", str(state))
    checked = morpheus("check")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert "✗ state" in checked.stdout and "MORPHEUS_STATE_DIR" in checked.stdout
    assert_one_line_error(morpheus("plant", "local", "small"), 1, "MORPHEUS_STATE_DIR")
    assert listed_forests() == []
    assert not (state / "local").exists()


def _shell_lines_with(marker: str, user_data: str) -> list[str]:
    return [
        line.strip()
        for path, content in delivered_files(user_data).items()
        if path.startswith("/usr/local/lib/morpheus/")
        for line in content.splitlines()
        if marker in line
    ]


def test_urls_with_shell_syntax_are_rendered_inertly(tmp_path: Path) -> None:
    urls = {
        "registry_url": f"https://r.example/{CANARY_COMMAND}?a=1&b=2;c",
        "callback_url": f"https://c.example/a;touch$IFS./pwned&b#{CANARY_COMMAND}",
        "nimsforest_download_url": f"https://d.example/{CANARY_COMMAND}/nf",
        "nats_download_url": f"https://n.example/{CANARY_COMMAND}/nats-server",
    }
    write_config(
        "integration:\n"
        + NIMSFOREST
        + f"  nats_sha256: '{SHA}'\n"
        + "".join(f"  {key}: '{url}'\n" for key, url in urls.items())
    )
    result = invoke("plant", "local", "small", "--dry-run", "--user-data-dir", "ud")
    assert result.returncode == 0, result.stderr
    [user_data] = (tmp_path / "ud").glob("*.yaml")
    lines = _shell_lines_with("touch$IFS", user_data.read_text())
    # Every URL reached a script: the NATS and NimsForest downloads, and the report targets.
    assert sorted(line.split("=", 1)[0] for line in lines) == [
        "nimsforest_url",
        "report_urls",
        "url",
    ], lines
    for line in lines:
        # Each is an assignment; bash evaluates it and prints what the variable holds.
        match = re.match(r"^([a-z_]+)=(\(?)", line)
        assert match, line
        name, is_array = match.group(1), bool(match.group(2))
        show = f'printf "%s\\n" "${{{name}[@]}}"' if is_array else f'printf "%s\\n" "${name}"'
        shown = subprocess.run(
            ["bash", "-c", f"{line}\n{show}"], cwd=tmp_path, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert set(shown) <= set(urls.values()), shown
    assert not (tmp_path / "pwned").exists()


def test_ssh_key_name_with_quotes_is_never_rendered(tmp_path: Path) -> None:
    key_name = "my\"key'; touch pwned; '"
    write_config(f"infrastructure:\n  ssh:\n    key_name: {json.dumps(key_name)}\n")
    result = invoke("plant", "local", "small", "--dry-run", "--user-data-dir", "ud")
    assert result.returncode == 0, result.stderr
    [user_data] = (tmp_path / "ud").glob("*.yaml")
    assert not [t for t in delivered_files(user_data.read_text()).values() if "touch pwned" in t]
    shown = json.loads(invoke("config", "check", "-o", "json").stdout)
    assert shown["values"]["infrastructure.ssh.key_name"]["value"] == key_name


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"host": "node.example\n"}, "host: Value error"),
        ({"host": "node.example\r\nX-Injected: 1"}, "host: Value error"),
        ({"peers": [{"host": "a.example\n"}]}, "peers.0.host: Value error"),
        ({"peers": [{"host": "10.0.0.1"}, {"host": "10.0.0.1"}]}, "listed twice"),
        ({"cluster_name": "c\n}"}, "cluster_name: String should match"),
        ({"node_name": "../../etc"}, "node_name: String should match"),
        ({"store_dir": "/var/lib/nats\n"}, "store_dir: Value error"),
        ({"store_dir": '/var/lib/"nats'}, "store_dir: Value error"),
        ({"store_dir": "/var/lib/$HOME"}, "store_dir: Value error"),
        ({"store_dir": "/var/lib/%n"}, "store_dir: Value error"),
        ({"store_dir": "/var/lib/a\u202eb"}, "store_dir: Value error"),
        ({"store_dir": "relative/jetstream"}, "store_dir: Value error"),
        ({"jetstream": {"max_memory": "１G"}}, "jetstream.max_memory: String should match"),
        ({"labels": {"forest": "a b"}}, "labels.forest: String should match"),
        ({"nats": {"version": "2.10.0\n"}}, "nats.version: String should match"),
        ({"nats": {"version": "٢.١٠.٠"}}, "nats.version: String should match"),
    ],
)
def test_blueprint_refuses_unsafe_fields(fields: dict[str, Any], fragment: str) -> None:
    base: dict[str, Any] = {
        "forest_id": "forest-1",
        "run_id": "run-1",
        "node_id": "forest-1-node-1",
        "node_name": "node-1",
        "index": 1,
        "cluster_name": "forest-1",
        "host": "10.0.0.2",
        "nats": NatsInstall(version="2.10.0"),
    }
    build_blueprint(**base)  # the base itself is fine
    with pytest.raises(TemplateInputError, match=re.escape(fragment)) as caught:
        build_blueprint(**{**base, **fields})
    assert len(str(caught.value).splitlines()) == 1


# --- malformed NATS monitoring replies --------------------------------------------------------

VARZ = {"server_name": "n1", "cpu": 12.5, "mem": 1 << 30, "cores": 4, "connections": 3}


class _Replies(BaseHTTPRequestHandler):
    """Answers each path with the (status, body) the test put in ``server.replies``."""

    def do_GET(self) -> None:
        replies: dict[str, tuple[int, bytes]] = self.server.replies  # type: ignore[attr-defined]
        status, body = replies.get(self.path, (404, b"not found"))
        if status == 0:  # hang up without answering
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def nats_lookalike() -> Iterator[ThreadingHTTPServer]:
    """A loopback HTTP server that answers /varz, /healthz and /jsz as a test says."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replies)
    server.replies = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _varz(**changes: Any) -> bytes:
    return json.dumps({**VARZ, **changes}).encode()


@pytest.mark.parametrize(
    ("varz", "error"),
    [
        ((200, b"<html><body><h1>502 Bad Gateway</h1></body></html>"), "/varz: malformed JSON"),
        ((200, _varz()[:25]), "/varz: malformed JSON"),
        ((200, b""), "/varz: malformed JSON"),
        ((200, b"\xff\xfe\x00\x01"), "/varz: malformed JSON"),
        ((200, b"[" * 30_000 + b"]" * 30_000), "/varz: malformed JSON"),
        ((200, b"[" * 100_000 + b"]" * 100_000), "/varz: reply of 200000 bytes is over the limit"),
        ((200, b"null"), "/varz: expected a JSON object"),
        ((200, _varz(cpu=-1.0)), "/varz: bad 'cpu'"),
        ((200, _varz(mem=-1)), "/varz: bad 'mem'"),
        ((200, _varz(connections=-3)), "/varz: bad 'connections'"),
        ((200, _varz(cores=-4)), "/varz: bad 'cores'"),
        ((200, _varz().replace(b"12.5", b"NaN")), "/varz: bad 'cpu'"),
        ((200, _varz().replace(b"12.5", b"Infinity")), "/varz: bad 'cpu' (input should be a fin"),
        ((200, _varz().replace(b"12.5", b"1e999")), "/varz: bad 'cpu' (input should be a finite"),
        ((200, _varz(mem=10**400)), "/varz: bad 'mem'"),
        ((200, _varz(cores=10**400)), "/varz: bad 'cores'"),
        ((200, _varz(cpu=10**400)), "/varz: bad 'cpu'"),
        ((200, _varz(cpu="12.5")), "/varz: bad 'cpu'"),
        ((200, _varz(connections=[])), "/varz: bad 'connections'"),
        ((200, _varz(jetstream="on")), "/varz: bad 'jetstream'"),
        ((200, _varz(jetstream={"stats": {"memory": 1, "storage": 2**70}})), "/varz: bad 'jet"),
        ((503, _varz()), "/varz: HTTP 503"),
        ((0, b""), "server closed the connection without a reply"),
    ],
)
def test_malformed_nats_replies_make_one_unreachable_sample(
    nats_lookalike: ThreadingHTTPServer, varz: tuple[int, bytes], error: str
) -> None:
    nats_lookalike.replies = {  # type: ignore[attr-defined]
        "/varz": varz,
        "/healthz": (200, b'{"status": "ok"}'),
    }
    port = nats_lookalike.server_address[1]
    targets = [
        MonitorTarget(node_name="node-1", host="127.0.0.1", port=port, memory_bytes=8 << 30),
        MonitorTarget(node_name="node-2", host="127.0.0.1", port=port, memory_bytes=8 << 30),
    ]
    samples = asyncio.run(poll_nodes(targets, per_node_timeout=5))
    assert [s.node_name for s in samples] == ["node-1", "node-2"]
    for sample in samples:
        assert not sample.reachable and sample.cpu_percent is None
        assert sample.error is not None and error in sample.error, sample.error
        assert len(sample.error) < 300
        json.dumps(sample.model_dump(), allow_nan=False)


@pytest.mark.parametrize(
    ("healthz", "jsz"),
    [
        ((200, b"<html>ok</html>"), (200, b"{broken")),
        ((500, b"\x00"), (200, json.dumps({"memory": "lots", "storage": 1}).encode())),
        ((0, b""), (200, b"[" * 100_000)),
    ],
)
def test_malformed_secondary_endpoints_keep_the_figures(
    nats_lookalike: ThreadingHTTPServer, healthz: tuple[int, bytes], jsz: tuple[int, bytes]
) -> None:
    varz = _varz(jetstream={"config": {"max_memory": 1 << 20, "max_storage": 1 << 30}})
    nats_lookalike.replies = {"/varz": (200, varz), "/healthz": healthz, "/jsz": jsz}  # type: ignore[attr-defined]
    target = MonitorTarget(
        node_name="node-1", host="127.0.0.1", port=nats_lookalike.server_address[1]
    )
    [sample] = asyncio.run(poll_nodes([target], per_node_timeout=5))
    assert sample.reachable and sample.cpu_percent == pytest.approx(12.5 / 4)
    assert sample.jetstream_memory_used is None and sample.error and "/jsz" in sample.error
    # Health is the status code alone; no answer at all leaves it unknown.
    assert sample.healthy is {200: True, 500: False, 0: None}[healthz[0]]


@pytest.mark.parametrize(
    ("capacity", "said"),
    [
        (Capacity(cores=1, memory_bytes=32_000_000), "node's 30.5 MiB of RAM"),
        (Capacity(cores=1, memory_bytes=1 << 30), "node's 1 GiB of RAM"),
        (Capacity(cores=1, memory_bytes=16 << 30, disk_bytes=512 << 20), "node's 512 MiB disk"),
    ],
)
def test_limits_over_a_small_machine_say_its_size_in_sensible_units(
    capacity: Capacity, said: str
) -> None:
    # Issue 16 item 6: 32 MB of RAM was "0.0 GiB of RAM".
    with pytest.raises(TemplateInputError, match=re.escape(said)):
        build_blueprint(
            forest_id="forest-1",
            run_id="run-1",
            node_id="forest-1-node-1",
            node_name="node-1",
            index=1,
            cluster_name="forest-1",
            host="10.0.0.2",
            nats=NatsInstall(version="2.10.0"),
            capacity=capacity,
        )


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1 KiB"), (32_000_000, "30.5 MiB"),
     (3 << 29, "1.5 GiB"), (2 << 40, "2 TiB")],
)  # fmt: skip
def test_size_text(size: int, text: str) -> None:
    assert size_text(size) == text


def test_jetstream_limit_over_the_node_names_the_providers_key(state_dir: Path) -> None:
    """Local nodes take their JetStream limit from providers.local, not integration."""
    write_config("providers:\n  local:\n    node_memory: 256M\n    jetstream_max_memory: 1G\n")
    line = assert_one_line_error(invoke("-q", "plant", "local", "small"), 1)
    assert "lower providers.local.jetstream_max_memory" in line, line
    assert "integration.jetstream_max_memory" not in line
    assert listed_forests() == []


# --- hostile files for import-registry and config check ---------------------------------------


def _hostile_file(kind: str, tmp_path: Path) -> str:
    """A path that is not an ordinary small text file, made for the test."""
    import os

    if kind in ("/dev/zero", "/dev/stdin"):
        return kind
    path = tmp_path / f"hostile-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-loop":
        path.symlink_to(tmp_path / "hostile-symlink-loop")
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "long-number":
        path.write_text('{"forests": {}, "nodes": {}, "n": 1' + "0" * 5000 + "}")
    elif kind == "huge":
        with path.open("wb") as stream:
            stream.truncate(40 << 20)  # sparse: 40 MiB of zero bytes, instantly
    return str(path)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("/dev/zero", "is not a regular file"),
        ("/dev/stdin", "not a regular file"),
        ("fifo", "is not a regular file"),
        ("symlink-loop", "cannot read"),
        ("deep", "nested too deeply"),
        ("long-number", "a value cannot be read"),
        ("huge", "larger than 16 MiB"),
    ],
)
def test_hostile_files_given_to_import_registry(kind: str, fragment: str, tmp_path: Path) -> None:
    path = _hostile_file(kind, tmp_path)
    # The timeout is the bound: reading endlessly (/dev/zero, a FIFO no one writes) never
    # ends, while a loaded machine may stretch a Python start to many seconds.
    result = subprocess.run(
        [*_MORPHEUS, "import-registry", path, "--dry-run"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert_one_line_error(result, 1, fragment)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("/dev/zero", "is not a file"),
        ("fifo", "is not a file"),
        ("huge", "larger than 1024 KiB"),
    ],
)
def test_hostile_files_given_as_config(kind: str, fragment: str, tmp_path: Path) -> None:
    path = _hostile_file(kind, tmp_path)
    # Each run's timeout is the bound (see test_hostile_files_given_to_import_registry).
    for args in (["-c", path, "config", "check"], ["-c", path, "check"]):
        result = subprocess.run(
            [*_MORPHEUS, *args], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if args[-1] == "check" and args[-2] != "config":
            assert result.returncode == 1 and fragment in result.stdout, result.stdout
            assert "Traceback" not in result.stderr
        else:
            assert_one_line_error(result, 1, fragment)


# --- unusual output streams ----------------------------------------------------------------

_MORPHEUS = [sys.executable, "-m", "morpheus"]


def _run_with_streams(args: list[str], **streams: Any) -> Result:
    return subprocess.run([*_MORPHEUS, *args], text=True, timeout=120, check=False, **streams)


@pytest.mark.parametrize("args", [["list"], ["providers"], ["config", "check"], ["status", "x"]])
def test_a_full_output_is_one_line_on_stderr(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = _run_with_streams(args, stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_closed_standard_streams_are_no_traceback(state_dir: Path) -> None:
    """``>&-``, ``<&-`` and ``2>&-`` from a shell: Python sees None; nothing may crash on it."""
    for redirect, args, code in (
        (">&-", ["list"], 0),
        (">&-", ["config", "check", "-o", "json"], 0),
        ("<&-", ["teardown", "forest-1"], 1),
        ("<&- >&-", ["grow", "--dry-run"], 1),
        ("2>&-", ["status", "forest-1"], 1),
    ):
        result = subprocess.run(
            ["sh", "-c", f'"$@" {redirect}; echo "exit $?" >&2', "sh", *_MORPHEUS, *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1] == f"exit {code}", (redirect, result.stderr)


def test_a_terminal_that_cannot_show_emoji_still_shows_the_status(state_dir: Path) -> None:
    planted = morpheus("plant", "local", "small", "-o", "json")
    assert planted.returncode == 0, planted.stderr
    forest = json.loads(planted.stdout)["forest"]["id"]
    env = {**cli_environment(), "PYTHONIOENCODING": "ascii"}
    for args in (["status", forest], ["list"], ["teardown", forest, "--yes"]):
        result = _run_with_streams(args, capture_output=True, env=env)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert processes_mentioning(str(state_dir)) == []
