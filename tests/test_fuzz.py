"""Property-based fuzzing of what Morpheus reads from outside: config files and variables,
tokens, NATS monitoring replies, and every string that could reach a template.

Each property is bounded (200 examples, fewer where noted) so the file runs in seconds; examples are
derandomized so CI sees the same inputs on every run. ``HYPOTHESIS_PROFILE=explore`` draws
fresh, more numerous examples for a local hunt.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from morpheus.blueprint import NatsInstall, NodeBlueprint, RouteCredentials, build_blueprint
from morpheus.errors import ConfigError, TemplateInputError
from morpheus.monitor import Healthz, Jsz, MonitorTarget, NodeSample, Varz, poll_nodes
from morpheus.render import render_nats_conf, render_user_data
from morpheus.settings import DEFAULT_NATS_VERSION, Settings, load_settings
from morpheus.testing.nats import nats_server_binary
from morpheus.validation import validate_token

# The isolation fixture is function-scoped and autouse; every example here makes its own
# files and environment, so sharing one fixture run across a test's examples is fine.
_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("ci", max_examples=200, derandomize=True, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("explore", max_examples=2000, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def one_line(message: str) -> bool:
    """What a terminal shows as one line (``splitlines`` knows every line separator)."""
    return len(message.splitlines()) == 1


# --- config ---------------------------------------------------------------------------------


def _schema_keys(model: type[BaseModel]) -> Iterator[str]:
    for name, info in model.model_fields.items():
        yield name
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _schema_keys(annotation)


# Keys are mostly real ones, so the values reach the validators instead of stopping at
# "unknown key"; some are arbitrary text, including what YAML reads as line breaks.
SCHEMA_KEYS = sorted(set(_schema_keys(Settings)) | {"local", "hetzner", "host", "nats_server"})
keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=12))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(["${HOME}", "${MORPHEUS_FUZZ_UNSET}", "1G", "https://x.example/a", "::1"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def assert_loads_or_one_line_error(path: Path, environ: dict[str, str]) -> None:
    try:
        loaded = load_settings(path, environ=environ)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert isinstance(loaded.settings, Settings)
        # What `morpheus config check -o json` prints must be real JSON.
        json.dumps(loaded.settings.model_dump(mode="json"), allow_nan=False)
        return
    assert one_line(message), repr(message)


@given(document=st.dictionaries(keys, documents, max_size=6))
def test_any_yaml_document_loads_or_fails_in_one_line(
    tmp_path: Path, document: dict[Any, Any]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert_loads_or_one_line_error(path, {"HOME": "/home/fuzz"})


@given(text=st.text(max_size=300))
def test_any_text_loads_or_fails_in_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_loads_or_one_line_error(path, {})


@given(raw=st.binary(max_size=200))
@settings(max_examples=100)
def test_any_bytes_load_or_fail_in_one_line(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(raw)
    assert_loads_or_one_line_error(path, {})


# MORPHEUS_SECTION__KEY for every setting, plus the token variables.
ENV_NAMES = [
    "MORPHEUS_" + "__".join(parts).upper()
    for parts in (
        ("growth",),
        ("growth", "max_nodes"),
        ("growth", "threshold_cpu"),
        ("infrastructure", "locations"),
        ("infrastructure", "ssh"),
        ("integration", "registry_url"),
        ("provisioning", "readiness_timeout"),
        ("providers",),
        ("secrets", "hetzner_api_token"),
    )
] + ["HCLOUD_TOKEN", "HETZNER_API_TOKEN"]


@given(
    variables=st.dictionaries(
        st.sampled_from(ENV_NAMES),
        st.one_of(st.text(max_size=30), st.sampled_from(['{"max_nodes": 3}', '["fsn1"]', "7"])),
        max_size=4,
    )
)
def test_any_environment_loads_or_fails_in_one_line(
    tmp_path: Path, variables: dict[str, str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("growth:\n  max_nodes: 4\n")
    # Environment variables cannot hold NUL; the OS refuses them before Morpheus sees them.
    clean = {name: value.replace("\0", "") for name, value in variables.items()}
    with mock.patch.dict(os.environ, clean):
        assert_loads_or_one_line_error(path, dict(os.environ))


# --- tokens ---------------------------------------------------------------------------------

_TOKEN_PROBLEM = re.compile(
    r"^TOKEN_VAR (contains a (control|non-ASCII) character at position \d+; copy the token "
    r"again without it|is empty; set it to your API token or unset it)$"
)


@given(token=st.text(max_size=80))
def test_token_is_cleaned_or_refused_without_being_echoed(token: str) -> None:
    try:
        cleaned = validate_token(token, "TOKEN_VAR")
    except ConfigError as exc:
        message = str(exc)
    else:
        assert cleaned == token.strip()
        assert cleaned and cleaned.isascii() and cleaned.isprintable()
        return
    # The message is one of the fixed sentences: no part of the token is in it.
    assert _TOKEN_PROBLEM.match(message), message


# --- NATS monitoring replies ----------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(),
        st.text(max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=15,
)
REPLY_KEYS = [
    "server_name", "cpu", "mem", "cores", "connections", "remotes", "jetstream", "config",
    "stats", "memory", "storage", "max_memory", "max_storage", "disabled", "status", "error",
]  # fmt: skip
# Objects shaped like the real replies (known keys, arbitrary values), and arbitrary JSON.
replies = st.one_of(
    st.dictionaries(st.sampled_from(REPLY_KEYS), json_values, max_size=10),
    st.fixed_dictionaries(
        {"cpu": json_values, "mem": json_values, "cores": json_values, "connections": json_values}
    ),
    json_values,
)


@given(reply=replies)
def test_reply_models_parse_or_refuse(reply: Any) -> None:
    for model in (Varz, Healthz, Jsz):
        try:
            parsed = model.model_validate(reply)
        except ValidationError:
            continue
        # Whatever parses can be printed as JSON by `status -o json` and divided safely.
        json.dumps(parsed.model_dump(), allow_nan=False)
        if isinstance(parsed, Varz):
            assert math.isfinite(parsed.cpu) and parsed.cores >= 1
            assert math.isfinite(parsed.cpu / parsed.cores) and math.isfinite(parsed.mem / 1)


def _json_text(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included, as a broken server might


bodies = st.one_of(
    replies.map(_json_text),
    st.binary(max_size=60),
    st.sampled_from(
        [b"<html><body>502 Bad Gateway</body></html>", b'{"cpu": 1', b"", b"[" * 5000 + b"]"]
    ),
)
endpoint_answers = st.tuples(st.sampled_from([200, 200, 200, 404, 500, 503]), bodies)


@given(
    answers=st.lists(
        st.fixed_dictionaries(
            {"/varz": endpoint_answers, "/healthz": endpoint_answers, "/jsz": endpoint_answers}
        ),
        min_size=1,
        max_size=3,
    ),
    memory_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=2**63)),
)
def test_poll_nodes_returns_one_sample_per_node_whatever_they_answer(
    answers: list[dict[str, tuple[int, bytes]]], memory_bytes: int | None
) -> None:
    targets = [
        MonitorTarget(
            node_name=f"node-{i}", host="127.0.0.1", port=9000 + i, memory_bytes=memory_bytes
        )
        for i in range(len(answers))
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        status, body = answers[request.url.port - 9000][request.url.path]  # type: ignore[operator]
        return httpx.Response(status, content=body)

    samples = asyncio.run(poll_nodes(targets, transport=httpx.MockTransport(answer)))

    assert [s.node_name for s in samples] == [t.node_name for t in targets]
    for sample, given_answers in zip(samples, answers, strict=True):
        assert isinstance(sample, NodeSample)
        if given_answers["/varz"][0] != 200:
            assert not sample.reachable
        if not sample.reachable:
            assert sample.error and sample.cpu_percent is None
        json.dumps(sample.model_dump(), allow_nan=False)


# --- template inputs ------------------------------------------------------------------------

NAME = r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?"
names = st.one_of(st.from_regex(NAME, fullmatch=True), st.text(max_size=30))
valid_hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?(?:\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
)
hosts = st.one_of(
    valid_hosts,
    st.text(max_size=30),
    st.sampled_from(["localhost\n", "a.example\r\nX: y", "::1\n", "127.0.0.1 ", "[::1]"]),
)
urls = st.one_of(
    st.none(),
    st.from_regex(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]{1,60}", fullmatch=True),
    st.text(max_size=60).map(lambda tail: f"https://x.example/{tail}"),
    st.text(max_size=40),
)
SHA = "0" * 64


def blueprint_fields(
    forest: str, node: str, host: str, peers: list[str], url: str | None
) -> dict[str, Any]:
    return {
        "forest_id": forest,
        "run_id": "run-1",
        "node_id": f"{forest}-{node}",
        "node_name": node,
        "index": 1,
        "cluster_name": forest,
        "host": host,
        "peers": [{"host": peer} for peer in peers],
        "credentials": RouteCredentials.generate(),
        "nats": NatsInstall(version=DEFAULT_NATS_VERSION),
        "nimsforest": None
        if url is None
        else {"download_url": url, "sha256": SHA, "registry_url": url},
        "labels": {"forest": forest},
    }


@given(
    forest=names,
    node=names,
    host=hosts,
    peers=st.lists(hosts, max_size=3),
    url=urls,
)
def test_blueprint_accepts_only_what_renders_safely(
    forest: str, node: str, host: str, peers: list[str], url: str | None
) -> None:
    try:
        blueprint = build_blueprint(**blueprint_fields(forest, node, host, peers, url))
    except TemplateInputError as exc:
        refusal: str | None = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert one_line(refusal), repr(refusal)
        return
    conf = render_nats_conf(blueprint)
    # Every accepted value is plain: no line breaks, quotes or backslashes to escape from.
    for value in (blueprint.host, *(p.host for p in blueprint.peers), url or ""):
        assert value.isprintable() and not set(value) & set("\"'\\ \n"), repr(value)
    assert f'server_name: "{forest}-{node}"' in conf
    try:
        user_data = render_user_data(blueprint, now=datetime(2025, 1, 1, tzinfo=UTC))
    except TemplateInputError as exc:
        # Whole-node checks come last (cloud size limits, a firewall that needs peer IPs).
        refusal = str(exc)
    else:
        assert yaml.safe_load(user_data)["write_files"]
        return
    assert one_line(refusal), repr(refusal)


@pytest.fixture(scope="module")
def nats_server() -> Path:
    return nats_server_binary()


@given(
    forest=st.from_regex(NAME, fullmatch=True),
    node=st.from_regex(NAME, fullmatch=True),
    host=valid_hosts,
    # Distinct, as route_mesh makes them (a repeated peer is refused: see the test above).
    peers=st.lists(valid_hosts, min_size=2, max_size=3, unique_by=str.lower),
)
@settings(max_examples=8)
def test_accepted_blueprints_render_a_nats_conf_nats_server_accepts(
    tmp_path: Path, nats_server: Path, forest: str, node: str, host: str, peers: list[str]
) -> None:
    fields = blueprint_fields(forest, node, host, peers, None)
    fields["store_dir"] = str(tmp_path / "jetstream")
    blueprint = build_blueprint(**fields)
    assert isinstance(blueprint, NodeBlueprint)
    conf = tmp_path / "nats.conf"
    conf.write_text(render_nats_conf(blueprint))
    result = subprocess.run(
        [str(nats_server), "-c", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr + conf.read_text()
