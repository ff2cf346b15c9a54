"""Whether a forest should grow: a pure function of its load, the policy and the clock.

``decide`` reads no clock, network or database; the caller passes ``now`` and the forest's
``last_expansion``. The rules, checked in this order (the first that applies is the answer):

1. ``disabled``: the policy is off; nothing happens.
2. ``no_nodes``: the forest has no nodes to judge or grow from.
3. ``too_many_unreachable``: blocked when more than ``max_unreachable_fraction`` of the polled
   nodes gave no figures (exactly that fraction is still judged), or none did. Growing on
   the word of a minority could double a forest that is merely partitioned.
4. ``below_threshold``: neither mean is *strictly above* its threshold. At exactly 80 % with
   a threshold of 80 the forest does not grow: "above 80 %" is what the operator was told.
   Memory counts only when some node's RAM is known.
5. ``max_nodes``: blocked when growing would pass ``max_nodes``. A one-node forest grows
   straight to three (JetStream needs three servers for a quorum that survives a loss); if
   ``max_nodes`` is below three it is blocked rather than grown to a two-node cluster, which
   would lose JetStream on either node's failure.
6. ``cannot_reconfigure``: blocked when the forest has one node and its provider cannot
   reconfigure a running node: growing restarts node 1 into a cluster.
7. ``cooldown``: blocked until ``cooldown_minutes`` have passed since ``last_expansion``
   (at exactly the end of the cooldown growth is allowed again).
8. Otherwise ``grow``, with the reason naming what is over its threshold.

``judge_node`` gives each node's verdict by the same thresholds (strictly above is hot), so
what the operator sees per node and what the forest's decision says never disagree.

The lasting obstacles (``max_nodes``, ``cannot_reconfigure``) are reported before the passing
one (``cooldown``), so an operator is not told to wait for something that will not help.
``cooldown_remaining_seconds`` is filled in whatever the outcome, for the operator's view and
the JSON output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from morpheus.load import ForestLoad, NodeSample

__all__ = [
    "GrowthAction",
    "GrowthDecision",
    "GrowthPolicy",
    "GrowthReason",
    "NodeVerdict",
    "decide",
    "judge_node",
]

# JetStream keeps a quorum through one lost server only from three servers up.
QUORUM_NODES = 3


class GrowthPolicy(BaseModel):
    """When a forest may grow, from the ``growth`` section of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    threshold_cpu: int = Field(default=80, ge=1, le=100)
    threshold_memory: int = Field(default=80, ge=1, le=100)
    max_nodes: int = Field(default=10, ge=1)
    cooldown_minutes: float = Field(default=10, ge=0)
    max_unreachable_fraction: float = Field(default=0.5, ge=0, le=1)


class GrowthAction(StrEnum):
    """What to do: nothing, add nodes, or nothing because something stands in the way."""

    NONE = "none"
    GROW = "grow"
    BLOCKED = "blocked"


class GrowthReason(StrEnum):
    """Why the decision came out as it did; stable values for JSON consumers."""

    DISABLED = "disabled"
    NO_NODES = "no_nodes"
    TOO_MANY_UNREACHABLE = "too_many_unreachable"
    BELOW_THRESHOLD = "below_threshold"
    CPU_OVER_THRESHOLD = "cpu_over_threshold"
    MEMORY_OVER_THRESHOLD = "memory_over_threshold"
    CPU_AND_MEMORY_OVER_THRESHOLD = "cpu_and_memory_over_threshold"
    MAX_NODES = "max_nodes"
    CANNOT_RECONFIGURE = "cannot_reconfigure"
    COOLDOWN = "cooldown"


class GrowthDecision(BaseModel):
    """The outcome of ``decide``: an action, its reason and a sentence for the operator.

    ``cpu_over_threshold`` and ``memory_over_threshold`` say whether the forest's mean is
    above its threshold, whatever the action (a disabled policy still sees a hot forest).
    """

    model_config = ConfigDict(frozen=True)

    action: GrowthAction
    reason: GrowthReason
    message: str
    nodes_to_add: int = 0
    cooldown_remaining_seconds: float = 0.0
    cpu_over_threshold: bool = False
    memory_over_threshold: bool = False


class NodeVerdict(StrEnum):
    """How one node looks; stable values for JSON consumers.

    ``health_unknown``: ``/varz`` answered but ``/healthz`` did not, so the node is not
    called healthy; ``hot``: a figure is strictly above its threshold.
    """

    HEALTHY = "healthy"
    HOT = "hot"
    HEALTH_UNKNOWN = "health_unknown"
    UNHEALTHY = "unhealthy"
    UNREACHABLE = "unreachable"


def _over(value: float | None, threshold: int) -> bool:
    return value is not None and value > threshold


def judge_node(sample: NodeSample, policy: GrowthPolicy) -> NodeVerdict:
    """One node's verdict: unreachable, unhealthy, hot, health unknown or healthy, in that order."""
    if not sample.reachable:
        return NodeVerdict.UNREACHABLE
    if sample.healthy is False:
        return NodeVerdict.UNHEALTHY
    if _over(sample.cpu_percent, policy.threshold_cpu) or _over(
        sample.memory_percent, policy.threshold_memory
    ):
        return NodeVerdict.HOT
    return NodeVerdict.HEALTH_UNKNOWN if sample.healthy is None else NodeVerdict.HEALTHY


def _utc(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC, which is how Morpheus records them.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _percent(value: float) -> str:
    return f"{value:.1f}%"


def decide(
    load: ForestLoad,
    policy: GrowthPolicy,
    *,
    node_count: int,
    last_expansion: datetime | None,
    now: datetime,
    can_reconfigure: bool = True,
    dry_run: bool = False,
) -> GrowthDecision:
    """Decide whether a forest of ``node_count`` nodes under ``load`` should grow now.

    ``node_count`` is the number of nodes the forest has (what ``max_nodes`` limits);
    ``load`` is what polling them found; ``can_reconfigure`` is the forest's provider's
    (see ``Provider.can_reconfigure``), which only a one-node forest's growth needs.
    ``dry_run`` only words the message: growth a dry run finds "would add" nodes.
    """
    cpu_over = _over(load.cpu_percent, policy.threshold_cpu)
    memory_over = _over(load.memory_percent, policy.threshold_memory)
    cooldown_total = policy.cooldown_minutes * 60
    remaining = 0.0
    if last_expansion is not None:
        elapsed = (_utc(now) - _utc(last_expansion)).total_seconds()
        # A last_expansion in the future (clock skew) counts as "just now".
        remaining = min(max(cooldown_total - elapsed, 0.0), cooldown_total)

    def outcome(
        action: GrowthAction, reason: GrowthReason, message: str, add: int = 0
    ) -> GrowthDecision:
        return GrowthDecision(
            action=action,
            reason=reason,
            message=message,
            nodes_to_add=add,
            cooldown_remaining_seconds=remaining,
            cpu_over_threshold=cpu_over,
            memory_over_threshold=memory_over,
        )

    if not policy.enabled:
        return outcome(GrowthAction.NONE, GrowthReason.DISABLED, "Automatic growth is disabled.")
    if node_count < 1 or load.nodes < 1:
        return outcome(GrowthAction.NONE, GrowthReason.NO_NODES, "The forest has no nodes.")

    if load.reachable == 0 or load.unreachable / load.nodes > policy.max_unreachable_fraction:
        return outcome(
            GrowthAction.BLOCKED,
            GrowthReason.TOO_MANY_UNREACHABLE,
            f"Cannot judge the load: {load.unreachable} of {load.nodes} nodes did not "
            f"report it (at most {policy.max_unreachable_fraction:.0%} may be missing).",
        )

    over: list[str] = []
    if cpu_over and load.cpu_percent is not None:
        over.append(f"CPU {_percent(load.cpu_percent)} is above {policy.threshold_cpu}%")
    if memory_over and load.memory_percent is not None:
        over.append(f"memory {_percent(load.memory_percent)} is above {policy.threshold_memory}%")
    if not over:
        return outcome(
            GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD, _below_message(load, policy)
        )

    if cpu_over and memory_over:
        reason = GrowthReason.CPU_AND_MEMORY_OVER_THRESHOLD
    elif cpu_over:
        reason = GrowthReason.CPU_OVER_THRESHOLD
    else:
        reason = GrowthReason.MEMORY_OVER_THRESHOLD
    why = " and ".join(over)
    why = why[0].upper() + why[1:]

    target = max(node_count + 1, QUORUM_NODES)
    if target > policy.max_nodes:
        if node_count >= policy.max_nodes:
            limit = f"the forest already has {_nodes(node_count)} (max_nodes is {policy.max_nodes})"
        else:
            limit = (
                f"max_nodes is {policy.max_nodes} and a one-node forest grows to "
                f"{QUORUM_NODES} nodes for a JetStream quorum"
            )
        return outcome(
            GrowthAction.BLOCKED, GrowthReason.MAX_NODES, f"{why}, but {limit}; not growing."
        )

    if node_count == 1 and not can_reconfigure:
        return outcome(
            GrowthAction.BLOCKED,
            GrowthReason.CANNOT_RECONFIGURE,
            f"{why}, but growing a one-node forest restarts node 1 into a cluster, which its "
            "provider cannot do; plant a new forest of 3 or more nodes.",
        )

    if remaining > 0:
        return outcome(
            GrowthAction.BLOCKED,
            GrowthReason.COOLDOWN,
            f"{why}, but the forest grew {_ago(cooldown_total - remaining)}; "
            f"the cooldown ends in {_duration(remaining)}.",
        )

    add = target - node_count
    quorum = f" (to {QUORUM_NODES}, for a JetStream quorum)" if node_count < 2 else ""
    adds = "would add" if dry_run else "adding"
    return outcome(GrowthAction.GROW, reason, f"{why}: {adds} {_nodes(add)}{quorum}.", add)


def _below_message(load: ForestLoad, policy: GrowthPolicy) -> str:
    parts = []
    if load.cpu_percent is not None:
        parts.append(f"CPU {_percent(load.cpu_percent)} (threshold {policy.threshold_cpu}%)")
    if load.memory_percent is not None:
        parts.append(
            f"memory {_percent(load.memory_percent)} (threshold {policy.threshold_memory}%)"
        )
    else:
        parts.append("memory unknown")
    return "Load is within thresholds: " + ", ".join(parts) + "."


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _duration(seconds: float) -> str:
    whole = max(round(seconds), 1)
    minutes, secs = divmod(whole, 60)
    if minutes and secs:
        return f"{minutes} min {secs} s"
    return f"{minutes} min" if minutes else f"{secs} s"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 1 else f"{_duration(seconds)} ago"
