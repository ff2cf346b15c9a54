"""Carry a standalone node's JetStream streams into the cluster it joins.

nats-server (2.15) does not adopt the streams a standalone server kept on disk when that
server restarts as a cluster member: they are restored locally but the cluster's meta layer
has no record of them, so clients get "stream not found".  Declaring each stream again, with
its old configuration and a placement tag that pins it to the node holding its files, makes
the server take up the data already on its disk (checked against the real nats-server in
tests/test_grow.py).  So before restarting, read the streams from ``/jsz``; once the cluster
is healthy, declare them again here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from morpheus.errors import JetStreamMigrationError


class ConsumerSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    config: dict[str, Any]


class StreamSpec(BaseModel):
    """A stream's configuration and durable consumers, as ``/jsz`` reports them."""

    model_config = ConfigDict(extra="ignore")

    name: str
    config: dict[str, Any]
    consumers: list[ConsumerSpec] = []


def read_streams(monitor_url: str, timeout: float = 5.0) -> list[StreamSpec]:
    """Every stream (with durable consumers) of the node's global account, from ``/jsz``."""
    try:
        response = httpx.get(
            f"{monitor_url}/jsz",
            params={"accounts": "true", "streams": "true", "config": "true", "consumers": "true"},
            timeout=timeout,
            trust_env=False,
        )
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise JetStreamMigrationError(
            f"cannot read the streams of {monitor_url}: {exc}; nothing was changed"
        ) from exc
    specs = []
    for account in body.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            consumers = [
                ConsumerSpec(name=c["name"], config=c["config"])
                for c in stream.get("consumer_detail") or []
                if c.get("config", {}).get("durable_name")
            ]
            specs.append(
                StreamSpec(name=stream["name"], config=stream["config"], consumers=consumers)
            )
    return specs


async def adopt_streams(client_url: str, streams: list[StreamSpec], node_tag: str) -> None:
    """Declare ``streams`` again in the cluster, pinned to the node whose disk holds them."""
    import nats

    connection = await nats.connect(client_url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        for stream in streams:
            config = dict(stream.config, placement={"tags": [node_tag]})
            await _request(connection, f"$JS.API.STREAM.CREATE.{stream.name}", config)
            for consumer in stream.consumers:
                await _request(
                    connection,
                    f"$JS.API.CONSUMER.CREATE.{stream.name}.{consumer.name}",
                    {"stream_name": stream.name, "config": consumer.config},
                )
    finally:
        await connection.close()


async def _request(connection: Any, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await connection.request(subject, json.dumps(body).encode(), timeout=10)
    answer: dict[str, Any] = json.loads(reply.data)
    if "error" in answer:
        raise JetStreamMigrationError(
            f"{subject}: {answer['error'].get('description', answer['error'])}"
        )
    return answer


@dataclass(frozen=True)
class RaisedStream:
    """A stream whose replica count growth raised."""

    name: str
    replicas_before: int
    replicas_after: int


async def raise_replicas(
    client_urls: list[str], replicas: int, deadline: float
) -> list[RaisedStream]:
    """Raise every R1 stream to ``replicas`` and wait until its new replicas are current.

    A stream Morpheus pinned to one node when that node joined the cluster loses its
    ``node:`` placement tag: with it, only that one node could hold a replica.
    """
    import nats

    connection = await nats.connect(client_urls, connect_timeout=5, max_reconnect_attempts=3)
    raised = []
    try:
        for config in await _stream_configs(connection):
            before = int(config.get("num_replicas") or 1)
            if before != 1:
                continue
            update = dict(config, num_replicas=replicas)
            placement = update.get("placement") or {}
            tags = [t for t in placement.get("tags") or [] if not str(t).startswith("node:")]
            if placement.get("cluster") or tags:
                update["placement"] = dict(placement, tags=tags)
            else:
                update.pop("placement", None)
            await _request(connection, f"$JS.API.STREAM.UPDATE.{config['name']}", update)
            raised.append(RaisedStream(config["name"], before, replicas))
        for stream in raised:
            await _wait_current(connection, stream, deadline)
    finally:
        await connection.close()
    return raised


async def _stream_configs(connection: Any) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = []
    while True:
        page = await _request(connection, "$JS.API.STREAM.LIST", {"offset": len(configs)})
        streams = page.get("streams") or []
        configs.extend(stream["config"] for stream in streams)
        if not streams or len(configs) >= int(page.get("total", 0)):
            return configs


async def _wait_current(connection: Any, stream: RaisedStream, deadline: float) -> None:
    """Until every replica of ``stream`` is current: only then does losing one lose nothing."""
    import asyncio

    while True:
        info = await _request(connection, f"$JS.API.STREAM.INFO.{stream.name}", {})
        cluster = info.get("cluster") or {}
        replicas = cluster.get("replicas") or []
        if (
            cluster.get("leader")
            and len(replicas) == stream.replicas_after - 1
            and all(r.get("current") and not r.get("lag") for r in replicas)
        ):
            return
        if time.monotonic() >= deadline:
            raise JetStreamMigrationError(
                f"stream {stream.name} was raised to {stream.replicas_after} replicas, but "
                "they did not catch up in time; `morpheus status` shows the forest, and "
                "JetStream keeps copying in the background"
            )
        await asyncio.sleep(0.2)
