"""Decision-table tests for the growth policy, boundaries included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from morpheus.growth import (
    GrowthAction,
    GrowthDecision,
    GrowthPolicy,
    GrowthReason,
    NodeVerdict,
    decide,
    judge_node,
)
from morpheus.load import ForestLoad, NodeSample

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOT = 95.0
COOL = 20.0


def load(
    cpu: float | None = COOL,
    memory: float | None = COOL,
    *,
    nodes: int = 3,
    unreachable: int = 0,
) -> ForestLoad:
    reachable = nodes - unreachable
    return ForestLoad(
        nodes=nodes,
        reachable=reachable,
        unreachable=unreachable,
        healthy=reachable,
        memory_known=reachable if memory is not None else 0,
        cpu_percent=cpu if reachable else None,
        memory_percent=memory if reachable else None,
        max_cpu_percent=cpu if reachable else None,
        max_memory_percent=memory if reachable else None,
    )


def run(
    forest_load: ForestLoad,
    policy: GrowthPolicy | None = None,
    *,
    node_count: int | None = None,
    last_expansion: datetime | None = None,
    now: datetime = NOW,
) -> GrowthDecision:
    return decide(
        forest_load,
        policy or GrowthPolicy(),
        node_count=forest_load.nodes if node_count is None else node_count,
        last_expansion=last_expansion,
        now=now,
    )


@pytest.mark.parametrize(
    ("cpu", "memory", "action", "reason"),
    [
        (COOL, COOL, GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD),
        (80.0, COOL, GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD),
        (80.000001, COOL, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        (COOL, 80.0, GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD),
        (COOL, 80.000001, GrowthAction.GROW, GrowthReason.MEMORY_OVER_THRESHOLD),
        (80.0, 80.0, GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD),
        (HOT, HOT, GrowthAction.GROW, GrowthReason.CPU_AND_MEMORY_OVER_THRESHOLD),
        (COOL, None, GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD),
        (HOT, None, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        (0.0, 100.0, GrowthAction.GROW, GrowthReason.MEMORY_OVER_THRESHOLD),
    ],
)
def test_threshold_is_strictly_above(
    cpu: float, memory: float | None, action: GrowthAction, reason: GrowthReason
) -> None:
    decision = run(load(cpu, memory))
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.nodes_to_add == (1 if action is GrowthAction.GROW else 0)


@pytest.mark.parametrize(
    ("threshold_cpu", "threshold_memory", "cpu", "memory", "action"),
    [
        (1, 100, 1.0, 99.0, GrowthAction.NONE),
        (1, 100, 1.01, 99.0, GrowthAction.GROW),
        (100, 100, 100.0, 100.0, GrowthAction.NONE),
        (50, 90, 50.5, 10.0, GrowthAction.GROW),
        (90, 50, 10.0, 50.5, GrowthAction.GROW),
    ],
)
def test_thresholds_come_from_the_policy(
    threshold_cpu: int, threshold_memory: int, cpu: float, memory: float, action: GrowthAction
) -> None:
    policy = GrowthPolicy(threshold_cpu=threshold_cpu, threshold_memory=threshold_memory)
    assert run(load(cpu, memory), policy).action is action


@pytest.mark.parametrize(
    ("node_count", "max_nodes", "action", "reason", "nodes_to_add"),
    [
        (9, 10, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 1),
        (10, 10, GrowthAction.BLOCKED, GrowthReason.MAX_NODES, 0),
        (11, 10, GrowthAction.BLOCKED, GrowthReason.MAX_NODES, 0),
        (2, 3, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 1),
        (3, 3, GrowthAction.BLOCKED, GrowthReason.MAX_NODES, 0),
        # A one-node forest grows straight to three, or not at all.
        (1, 10, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 2),
        (1, 3, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 2),
        (1, 2, GrowthAction.BLOCKED, GrowthReason.MAX_NODES, 0),
        (1, 1, GrowthAction.BLOCKED, GrowthReason.MAX_NODES, 0),
    ],
)
def test_max_nodes_and_quorum(
    node_count: int,
    max_nodes: int,
    action: GrowthAction,
    reason: GrowthReason,
    nodes_to_add: int,
) -> None:
    decision = run(
        load(HOT, nodes=node_count), GrowthPolicy(max_nodes=max_nodes), node_count=node_count
    )
    assert (decision.action, decision.reason, decision.nodes_to_add) == (
        action,
        reason,
        nodes_to_add,
    )


def test_a_dry_run_says_it_would_add() -> None:
    hot = load(HOT, nodes=3)
    dry = decide(hot, GrowthPolicy(), node_count=3, last_expansion=None, now=NOW, dry_run=True)
    assert "would add 1 node" in dry.message
    assert "adding" not in dry.message
    assert "adding 1 node" in run(hot, node_count=3).message


def test_one_node_forest_says_why_it_adds_two() -> None:
    decision = run(load(HOT, nodes=1))
    assert "adding 2 nodes" in decision.message
    assert "quorum" in decision.message


def test_max_nodes_blocking_a_one_node_forest_explains_the_quorum() -> None:
    decision = run(load(HOT, nodes=1), GrowthPolicy(max_nodes=2))
    assert "quorum" in decision.message
    assert "max_nodes is 2" in decision.message


@pytest.mark.parametrize(
    ("since_expansion", "action", "reason", "remaining"),
    [
        (None, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 0.0),
        (timedelta(minutes=10), GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 0.0),
        (timedelta(hours=5), GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD, 0.0),
        (timedelta(minutes=9, seconds=59), GrowthAction.BLOCKED, GrowthReason.COOLDOWN, 1.0),
        (timedelta(seconds=0), GrowthAction.BLOCKED, GrowthReason.COOLDOWN, 600.0),
        # Clock skew: an expansion "in the future" counts as just now, never more.
        (timedelta(minutes=-30), GrowthAction.BLOCKED, GrowthReason.COOLDOWN, 600.0),
    ],
)
def test_cooldown_boundary(
    since_expansion: timedelta | None,
    action: GrowthAction,
    reason: GrowthReason,
    remaining: float,
) -> None:
    last = None if since_expansion is None else NOW - since_expansion
    decision = run(load(HOT), GrowthPolicy(cooldown_minutes=10), last_expansion=last)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.cooldown_remaining_seconds == pytest.approx(remaining)
    assert decision.nodes_to_add == (1 if action is GrowthAction.GROW else 0)


def test_cooldown_message_says_how_long_to_wait() -> None:
    last = NOW - timedelta(minutes=7, seconds=30)
    decision = run(load(HOT), last_expansion=last)
    assert decision.reason is GrowthReason.COOLDOWN
    assert "ends in 2 min 30 s" in decision.message
    assert "7 min 30 s ago" in decision.message


def test_zero_cooldown_never_blocks() -> None:
    decision = run(load(HOT), GrowthPolicy(cooldown_minutes=0), last_expansion=NOW)
    assert decision.action is GrowthAction.GROW
    assert decision.cooldown_remaining_seconds == 0.0


def test_cooldown_remaining_is_reported_even_when_below_threshold() -> None:
    decision = run(load(COOL), last_expansion=NOW - timedelta(minutes=4))
    assert decision.reason is GrowthReason.BELOW_THRESHOLD
    assert decision.cooldown_remaining_seconds == pytest.approx(360.0)


def test_max_nodes_is_reported_before_cooldown() -> None:
    decision = run(load(HOT), GrowthPolicy(max_nodes=3), last_expansion=NOW)
    assert decision.reason is GrowthReason.MAX_NODES
    assert decision.cooldown_remaining_seconds == pytest.approx(600.0)


@pytest.mark.parametrize(
    ("forest_load", "action", "reason"),
    [
        (load(HOT, nodes=1), GrowthAction.BLOCKED, GrowthReason.CANNOT_RECONFIGURE),
        (load(COOL, nodes=1), GrowthAction.NONE, GrowthReason.BELOW_THRESHOLD),
        (load(HOT, nodes=2), GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        (load(HOT, nodes=3), GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
    ],
)
def test_only_a_lone_node_needs_a_provider_that_can_reconfigure(
    forest_load: ForestLoad, action: GrowthAction, reason: GrowthReason
) -> None:
    decision = decide(
        forest_load,
        GrowthPolicy(),
        node_count=forest_load.nodes,
        last_expansion=None,
        now=NOW,
        can_reconfigure=False,
    )
    assert (decision.action, decision.reason) == (action, reason)
    if reason is GrowthReason.CANNOT_RECONFIGURE:
        assert decision.nodes_to_add == 0
        assert "plant a new forest of 3 or more nodes" in decision.message


def test_lasting_obstacles_come_in_order_before_the_cooldown() -> None:
    def blocked(policy: GrowthPolicy) -> GrowthReason:
        return decide(
            load(HOT, nodes=1),
            policy,
            node_count=1,
            last_expansion=NOW,
            now=NOW,
            can_reconfigure=False,
        ).reason

    assert blocked(GrowthPolicy(max_nodes=2)) is GrowthReason.MAX_NODES
    assert blocked(GrowthPolicy()) is GrowthReason.CANNOT_RECONFIGURE
    assert blocked(GrowthPolicy(cooldown_minutes=0)) is GrowthReason.CANNOT_RECONFIGURE


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    decision = run(load(HOT), last_expansion=naive_now - timedelta(minutes=5), now=NOW)
    assert decision.cooldown_remaining_seconds == pytest.approx(300.0)


@pytest.mark.parametrize(
    ("nodes", "unreachable", "fraction", "action", "reason"),
    [
        (4, 2, 0.5, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        (4, 3, 0.5, GrowthAction.BLOCKED, GrowthReason.TOO_MANY_UNREACHABLE),
        (2, 1, 0.5, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        (3, 2, 0.5, GrowthAction.BLOCKED, GrowthReason.TOO_MANY_UNREACHABLE),
        (10, 1, 0.0, GrowthAction.BLOCKED, GrowthReason.TOO_MANY_UNREACHABLE),
        (10, 0, 0.0, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        (10, 9, 1.0, GrowthAction.GROW, GrowthReason.CPU_OVER_THRESHOLD),
        # Nobody answered: nothing to judge, whatever the fraction allows.
        (3, 3, 1.0, GrowthAction.BLOCKED, GrowthReason.TOO_MANY_UNREACHABLE),
        (1, 1, 0.5, GrowthAction.BLOCKED, GrowthReason.TOO_MANY_UNREACHABLE),
    ],
)
def test_unreachable_fraction_boundary(
    nodes: int, unreachable: int, fraction: float, action: GrowthAction, reason: GrowthReason
) -> None:
    policy = GrowthPolicy(max_unreachable_fraction=fraction, max_nodes=20)
    decision = run(load(HOT, nodes=nodes, unreachable=unreachable), policy)
    assert (decision.action, decision.reason) == (action, reason)


def test_unreachable_message_counts_the_missing() -> None:
    decision = run(load(HOT, nodes=5, unreachable=3))
    assert "3 of 5 nodes" in decision.message


def test_too_many_unreachable_blocks_even_a_cool_forest() -> None:
    decision = run(load(COOL, nodes=5, unreachable=3))
    assert decision.action is GrowthAction.BLOCKED


@pytest.mark.parametrize(
    ("forest_load", "node_count"),
    [(load(HOT, nodes=3), 0), (load(HOT, nodes=0), 0), (load(HOT, nodes=0), 3)],
)
def test_no_nodes(forest_load: ForestLoad, node_count: int) -> None:
    decision = run(forest_load, node_count=node_count)
    assert (decision.action, decision.reason) == (GrowthAction.NONE, GrowthReason.NO_NODES)


@pytest.mark.parametrize(
    "forest_load", [load(HOT, HOT), load(HOT, nodes=5, unreachable=5), load(HOT, nodes=0)]
)
def test_disabled_wins_over_everything(forest_load: ForestLoad) -> None:
    decision = run(forest_load, GrowthPolicy(enabled=False), last_expansion=NOW)
    assert (decision.action, decision.reason) == (GrowthAction.NONE, GrowthReason.DISABLED)
    assert decision.nodes_to_add == 0


@pytest.mark.parametrize(
    "forest_load",
    [load(), load(HOT), load(HOT, HOT), load(COOL, None), load(HOT, nodes=5, unreachable=4)],
)
def test_every_outcome_has_a_sentence(forest_load: ForestLoad) -> None:
    decision = run(forest_load)
    assert decision.message.endswith(".")
    assert decision.message[0].isupper()


def test_below_threshold_message_shows_figures() -> None:
    decision = run(load(42.25, None))
    assert "CPU 42.2%" in decision.message or "CPU 42.3%" in decision.message
    assert "memory unknown" in decision.message


def test_decision_serialises_with_stable_values() -> None:
    data = run(load(HOT)).model_dump(mode="json")
    assert data["action"] == "grow"
    assert data["reason"] == "cpu_over_threshold"
    assert set(data) == {
        "action",
        "reason",
        "message",
        "nodes_to_add",
        "cooldown_remaining_seconds",
        "cpu_over_threshold",
        "memory_over_threshold",
    }
    assert (data["cpu_over_threshold"], data["memory_over_threshold"]) == (True, False)


@pytest.mark.parametrize(
    ("forest_load", "over"),
    [
        (load(80.0, 80.0), (False, False)),
        (load(80.01, 20.0), (True, False)),
        (load(20.0, 95.0), (False, True)),
        (load(95.0, None), (True, False)),
    ],
)
def test_decision_says_which_means_are_over_whatever_the_action(
    forest_load: ForestLoad, over: tuple[bool, bool]
) -> None:
    for policy in (GrowthPolicy(), GrowthPolicy(enabled=False)):
        decision = run(forest_load, policy=policy)
        assert (decision.cpu_over_threshold, decision.memory_over_threshold) == over


def node(
    *,
    reachable: bool = True,
    healthy: bool | None = True,
    cpu: float | None = COOL,
    memory: float | None = COOL,
) -> NodeSample:
    return NodeSample(
        node_name="n",
        url="http://127.0.0.1:8222",
        reachable=reachable,
        healthy=healthy,
        cpu_percent=cpu,
        memory_percent=memory,
    )


@pytest.mark.parametrize(
    ("sample", "verdict"),
    [
        (node(), NodeVerdict.HEALTHY),
        (node(cpu=80.0, memory=80.0), NodeVerdict.HEALTHY),  # at the threshold is not above it
        (node(cpu=80.5), NodeVerdict.HOT),
        (node(memory=99.0, cpu=None), NodeVerdict.HOT),
        (node(healthy=None), NodeVerdict.HEALTH_UNKNOWN),  # /healthz never answered
        (node(healthy=None, cpu=95.0), NodeVerdict.HOT),
        (node(healthy=False, cpu=95.0), NodeVerdict.UNHEALTHY),
        (node(reachable=False, healthy=True, cpu=None, memory=None), NodeVerdict.UNREACHABLE),
    ],
)
def test_node_verdicts(sample: NodeSample, verdict: NodeVerdict) -> None:
    assert judge_node(sample, GrowthPolicy()) == verdict


def test_node_verdict_follows_the_policy_thresholds() -> None:
    policy = GrowthPolicy(threshold_cpu=50, threshold_memory=90)
    assert judge_node(node(cpu=60.0), policy) == NodeVerdict.HOT
    assert judge_node(node(memory=85.0), policy) == NodeVerdict.HEALTHY


def test_growth_policy_does_not_import_the_http_client() -> None:
    """Pure policy: importing it must not drag in the monitor or httpx (issue 19, layers)."""
    import subprocess
    import sys

    code = (
        "import sys, morpheus.growth; "
        "print(sorted(m for m in ('httpx', 'h11', 'morpheus.monitor', 'morpheus.transport') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_policy_defaults() -> None:
    policy = GrowthPolicy()
    assert policy.enabled is True
    assert (policy.threshold_cpu, policy.threshold_memory) == (80, 80)
    assert (policy.max_nodes, policy.cooldown_minutes) == (10, 10)
    assert policy.max_unreachable_fraction == 0.5


@pytest.mark.parametrize(
    "values",
    [
        {"threshold_cpu": 1},
        {"threshold_cpu": 100},
        {"threshold_memory": 1},
        {"threshold_memory": 100},
        {"max_nodes": 1},
        {"cooldown_minutes": 0},
        {"max_unreachable_fraction": 0.0},
        {"max_unreachable_fraction": 1.0},
    ],
)
def test_policy_accepts_its_bounds(values: dict[str, object]) -> None:
    GrowthPolicy.model_validate(values)


@pytest.mark.parametrize(
    "values",
    [
        {"threshold_cpu": 0},
        {"threshold_cpu": 101},
        {"threshold_memory": 0},
        {"threshold_memory": 101},
        {"max_nodes": 0},
        {"cooldown_minutes": -1},
        {"max_unreachable_fraction": -0.1},
        {"max_unreachable_fraction": 1.1},
        {"threshold": 80},
    ],
)
def test_policy_rejects_out_of_range(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GrowthPolicy.model_validate(values)
