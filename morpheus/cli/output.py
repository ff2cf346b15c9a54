"""Rendering for people (rich tables, live progress) and for scripts (stable JSON).

JSON shapes are documented in docs/cli.md and only ever gain keys.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from morpheus.cli.app import OutputFormat
    from morpheus.models import Forest, Node, Removal
    from morpheus.monitor import NodeSample
    from morpheus.provider import CheckResult, ProviderInfo
    from morpheus.services.grow import Assessment, Expansion
    from morpheus.services.migrate import ImportPlan, ImportResult
    from morpheus.services.plant import PlantPlan, PlantResult
    from morpheus.services.reconcile import ReconcilePlan, Reconciliation
    from morpheus.services.status import ForestView
    from morpheus.settings import LoadedSettings


# rich is imported where it is used: commands that print JSON, and successful runs of the
# rest until they render, start without it (about 60 ms, measured by bench/grow_monitor.py).


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    # Piped output is for grep and logs: never truncate it to an imagined terminal width.
    # No markup or emoji parsing: "[fd4d::2]" is an address, not a style, ":cd:" no emoji.
    return Console(
        file=stream,
        no_color="NO_COLOR" in os.environ or not tty,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,
        width=None if tty else 400,
    )


def _table(*columns: str) -> Table:
    from rich.table import Table

    return Table(*columns, box=None)


def error(message: str) -> None:
    """One line on stderr; red at a terminal."""
    from rich.text import Text

    from morpheus.validation import printable

    message = printable(message)
    _console(stderr=True).print(Text.assemble(("error:", "red"), f" {message}"))


def _emit(data: Any, output: OutputFormat) -> None:
    """Data for scripts: JSON, or YAML with the same shape."""
    if output.value == "yaml":
        from morpheus.cli.plain import yaml_text

        sys.stdout.write(yaml_text(data))
    else:
        _json(data)


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _is_data(output: OutputFormat) -> bool:
    return output.value in ("json", "yaml")


class NodeProgress:
    """Live per-node state while a command waits; plain lines when not at a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.states: dict[str, str] = {}
        self.console = _console(stderr=True)
        self.live: Live | None = None

    def __enter__(self) -> NodeProgress:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, value, traceback)

    def _table(self) -> Table:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        for node_id, words in self.states.items():
            table.add_row(f"  {node_id}", words)
        return table

    def __call__(self, node_id: str, words: str) -> None:
        if not self.enabled:
            return
        self.states[node_id] = words
        if self.live is not None:
            self.live.update(self._table())
        else:
            self.console.print(f"  {node_id}  {words}", markup=False)


def forest_dict(forest: Forest, nodes: list[Node] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": forest.id,
        "provider": forest.provider,
        "size": forest.size,
        "location": forest.location,
        "status": forest.status.value,
        "created_at": forest.created_at.isoformat(),
        "last_expansion": forest.last_expansion.isoformat() if forest.last_expansion else None,
        "cluster_name": forest.cluster_name,
    }
    if nodes is not None:
        data["node_count"] = len(nodes)
    return data


def node_dict(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "status": node.status.value,
        "provider_id": node.provider_id,
        "host": node.host,
        "addresses": node.addresses,
        "ports": node.ports.model_dump(),
        "monitor_url": node.monitor_url,
        "capacity": node.capacity.model_dump() if node.capacity else None,
        "location": node.location,
        "created_at": node.created_at.isoformat(),
    }


def show_plan(plan: PlantPlan) -> None:
    console = _console()
    console.print(f"Plan: {plan.size} forest of {plan.node_count} node(s) on {plan.provider.name}")
    for line in plan.lines:
        console.print(f"  {line.label}: {line.value}", markup=False)
    for warning in plan.warnings:
        console.print(f"  warning: {warning}", markup=False)
    if plan.provider.costs_money:
        console.print(
            "  ports: 22 (SSH) and 8222 (NATS monitoring) from admin sources only; 6222 (cluster)"
            " from the forest's nodes only; 4222 (clients) on each node's localhost only",
            markup=False,
        )


def show_written(paths: list[Path]) -> None:
    console = _console()
    for path in paths:
        console.print(f"  wrote {path}", markup=False)
    console.print("These files hold the forest's route password: keep them private.")


def show_planted(result: PlantResult, output: OutputFormat) -> None:
    if _is_data(output):
        _emit(
            {"forest": forest_dict(result.forest), "nodes": [node_dict(n) for n in result.nodes]},
            output,
        )
        return
    console = _console()
    console.print(f"🌲 Planted {result.forest.id}: {len(result.nodes)} node(s) active")
    for node in result.nodes:
        console.print(f"  {node.name}  {node.host}  monitor {node.monitor_url}", markup=False)
    console.print(
        f"See it with `morpheus status {result.forest.id}`; remove it with "
        f"`morpheus teardown {result.forest.id}`.",
        markup=False,
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def show_status(view: ForestView, output: OutputFormat) -> None:
    if _is_data(output):
        nodes = []
        for item in view.nodes:
            data = node_dict(item.node)
            data["platform_state"] = item.platform_state
            data["nats"] = item.sample.model_dump() if item.sample else None
            nodes.append(data)
        _emit(
            {
                "forest": forest_dict(view.forest),
                "nodes": nodes,
                "untracked": [h.model_dump() for h in view.untracked],
                "events": [e.model_dump(mode="json") for e in view.events],
                "notes": view.notes,
            },
            output,
        )
        return
    console = _console()
    forest = view.forest
    console.print(
        f"🌲 Forest: {forest.id}  ({forest.provider}, {forest.size}, {forest.status.value})"
    )
    table = _table("NODE", "STATUS", "PLATFORM", "NATS", "PEERS", "CPU", "MEM", "ADDRESS")
    expected = max(len(view.nodes) - 1, 0)
    for item in view.nodes:
        sample = item.sample
        if sample is None:
            nats, peers = "-", "-"
        elif not sample.reachable:
            nats, peers = "unreachable", "-"
        else:
            nats = "healthy" if sample.healthy else "unhealthy"
            peers = f"{sample.peers or 0}/{expected}"
        table.add_row(
            item.node.name,
            item.node.status.value,
            item.platform_state or "unknown",
            nats,
            peers,
            _percent(sample.cpu_percent if sample else None),
            _percent(sample.memory_percent if sample else None),
            item.node.monitor_url or "-",
        )
    console.print(table)
    for handle in view.untracked:
        console.print(
            f"  ⚠ {handle.node_id} exists on {forest.provider} but not in the registry",
            markup=False,
        )
    for note in view.notes:
        console.print(f"  {note}", markup=False)
    if view.events:
        console.print("Recent events:")
        for event in view.events:
            console.print(
                f"  {event.at:%Y-%m-%d %H:%M:%S}  {event.kind:<10} {event.message}", markup=False
            )


def show_teardown_preview(forest_id: str, node_ids: list[str]) -> None:
    console = _console()
    console.print(f"Teardown of {forest_id} would delete {len(node_ids)} node(s):", markup=False)
    for node_id in node_ids:
        console.print(f"  {node_id}", markup=False)
    console.print("and the forest's records. Nothing was deleted (--dry-run).")


def show_reconcile_plan(plan: ReconcilePlan) -> None:
    console = _console()
    forest_id = plan.forest.id
    if plan.finish_teardown or not plan.keep:
        why = "its teardown was interrupted" if plan.finish_teardown else "no active node is left"
        console.print(f"{forest_id}: {why}; reconcile removes the whole forest.", markup=False)
        return
    console.print(f"{forest_id}: keep {', '.join(n.name for n in plan.keep)}", markup=False)
    for node in plan.remove:
        console.print(f"  delete {node.name} (left {node.status.value})", markup=False)
    for node in plan.missing:
        console.print(f"  forget {node.name} (gone from {plan.forest.provider})", markup=False)
    for handle in plan.untracked:
        console.print(f"  delete {handle.node_id} (not in the registry)", markup=False)
    if not plan.changes:
        console.print("  nothing to delete; the kept nodes get their configuration again")


def show_reconciliation(result: Reconciliation) -> None:
    console = _console()
    for what, why in sorted(result.failed.items()):
        error(f"could not delete {what}: {why}")
    if result.forest_removed:
        console.print(f"Removed {result.plan.forest.id}; nothing left behind.", markup=False)
    elif not result.failed:
        console.print(
            f"Reconciled {result.plan.forest.id}: {len(result.plan.keep)} node(s) ready, "
            f"{len(result.deleted)} deleted.",
            markup=False,
        )


def show_removal(forest_id: str, removal: Removal) -> None:
    console = _console()
    if removal.failed:
        for what, why in sorted(removal.failed.items()):
            error(f"could not delete {what}: {why}")
        console.print(
            f"{forest_id}: {len(removal.deleted)} deleted, {len(removal.failed)} left; "
            "their records are kept — run teardown again.",
            markup=False,
        )
    else:
        console.print(
            f"Deleted {forest_id} ({len(removal.deleted)} node(s)); nothing left behind.",
            markup=False,
        )


def show_providers(infos: list[ProviderInfo], output: OutputFormat) -> None:
    if _is_data(output):
        _emit(
            [
                {
                    "name": i.name,
                    "distribution": i.distribution,
                    "version": i.version,
                    "target": i.target,
                }
                for i in infos
            ],
            output,
        )
        return
    table = _table("NAME", "DISTRIBUTION", "VERSION")
    for info in infos:
        table.add_row(info.name, info.distribution, info.version)
    _console().print(table)


def show_checks(results: list[CheckResult], output: OutputFormat) -> None:
    if _is_data(output):
        _emit(
            [{"name": r.name, "ok": r.ok, "detail": r.detail, "fix": r.fix} for r in results],
            output,
        )
        return
    from rich.text import Text

    console = _console()
    for result in results:
        mark = ("✓", "green") if result.ok else ("✗", "red")
        fix = f" — fix: {result.fix}" if result.fix and not result.ok else ""
        console.print(Text.assemble(mark, f" {result.name:<12} {result.detail}{fix}"))


def show_import(
    found: ImportPlan | ImportResult, output: OutputFormat, *, dry_run: bool = False
) -> None:
    """A plan (dry run, or nothing to import) or what was imported: forests, skips, notes."""
    from morpheus.services.migrate import ImportPlan

    planned = list(found.forests) if isinstance(found, ImportPlan) else found.imported
    notes = list(found.notes) if isinstance(found, ImportPlan) else []
    if _is_data(output):
        _emit(
            {
                "source": str(found.source),
                "dry_run": dry_run,
                "forests": [
                    {
                        **forest_dict(p.forest, list(p.nodes)),
                        "nodes": [node_dict(n) for n in p.nodes],
                    }
                    for p in planned
                ],
                "skipped": [{"forest": s.forest_id, "reason": s.reason} for s in found.skipped],
                "notes": notes,
            },
            output,
        )
        return
    console = _console()
    verb = "Would import" if dry_run else "Imported"
    if not planned:
        console.print(f"Nothing to import from {found.source}.")
    else:
        table = _table("FOREST", "PROVIDER", "SIZE", "NODES", "STATUS", "ADDRESSES")
        for p in planned:
            hosts = ", ".join(n.host for n in p.nodes if n.host) or "-"
            table.add_row(
                p.forest.id,
                p.forest.provider,
                p.forest.size,
                str(len(p.nodes)),
                p.forest.status.value,
                hosts,
            )
        console.print(f"{verb} from {found.source}:")
        console.print(table)
    for skipped in found.skipped:
        console.print(f"  skipped {skipped.forest_id}: {skipped.reason}")
    for note in notes:
        console.print(f"  note: {note}")


def show_config(loaded: LoadedSettings, output: OutputFormat) -> None:
    values = _flatten(loaded.settings.model_dump(mode="json"))
    secrets = {key for key in values if key.startswith("secrets.") and values[key] is not None}
    rows = [
        (key, "********" if key in secrets else values[key], loaded.sources.get(key, "default"))
        for key in sorted(values)
    ]
    from morpheus.install_sources import describe_install_sources

    downloads = describe_install_sources(loaded.settings.integration)
    if _is_data(output):
        _emit(
            {
                "file": str(loaded.path) if loaded.path else None,
                "values": {key: {"value": value, "source": source} for key, value, source in rows},
                "cloud_node_downloads": downloads,
            },
            output,
        )
        return
    console = _console()
    console.print(
        f"Config file: {loaded.path or 'none (defaults and environment only)'}", markup=False
    )
    console.print("Configuration is valid.")
    table = _table("KEY", "VALUE", "SOURCE")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    console.print(table)
    console.print("Cloud nodes download at first boot:")
    for program, source in downloads.items():
        console.print(f"  {program}: {source}", markup=False)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _bar(percent: float | None, width: int = 28) -> str:
    if percent is None:
        return "n/a"
    filled = round(min(max(percent, 0), 100) / 100 * width)
    return f"{percent:3.0f}% " + "█" * filled + "░" * (width - filled)


def _node_state(sample: NodeSample, assessment: Assessment) -> str:
    policy = assessment.policy
    if not sample.reachable:
        return f"unreachable ({sample.error})"
    if sample.healthy is False:
        return "unhealthy"
    hot = (sample.cpu_percent or 0) > policy.threshold_cpu or (
        sample.memory_percent or 0
    ) > policy.threshold_memory
    return "warning ⚠️" if hot else "healthy"


def show_assessment(assessment: Assessment) -> None:
    """The operator's picture: forest load, every node (unreachable ones too), the verdict."""
    console = _console()
    load = assessment.load
    policy = assessment.policy
    console.print(f"🌲 Forest: {assessment.forest.id}\n", markup=False)
    console.print("Resource Usage (NATS server figures):")
    cpu_warn = " ⚠️" if (load.cpu_percent or 0) > policy.threshold_cpu else ""
    mem_warn = " ⚠️" if (load.memory_percent or 0) > policy.threshold_memory else ""
    console.print(f"  CPU:    {_bar(load.cpu_percent)}{cpu_warn}", markup=False)
    console.print(f"  Memory: {_bar(load.memory_percent)}{mem_warn}\n", markup=False)
    console.print(f"Nodes ({len(assessment.nodes)}):")
    table = _table("ID", "IP", "CPU", "MEM", "PEERS", "STATUS")
    for node, sample in zip(assessment.nodes, assessment.samples, strict=True):
        table.add_row(
            node.name,
            node.host or "-",
            _percent(sample.cpu_percent),
            _percent(sample.memory_percent),
            "-" if sample.peers is None else str(sample.peers),
            _node_state(sample, assessment),
        )
    console.print(table)
    console.print("")
    if load.cpu_percent is not None and load.cpu_percent > policy.threshold_cpu:
        console.print(f"⚠️  CPU above {policy.threshold_cpu}% threshold", markup=False)
    if load.memory_percent is not None and load.memory_percent > policy.threshold_memory:
        console.print(f"⚠️  Memory above {policy.threshold_memory}% threshold", markup=False)
    console.print(assessment.decision.message, markup=False)


def show_growth(
    assessment: Assessment, expansion: Expansion, output: OutputFormat, *, dry_run: bool
) -> None:
    decision = expansion.decision
    if _is_data(output):
        _emit(
            {
                "forest": assessment.forest.id,
                "assessed_at": assessment.assessed_at.isoformat(),
                "nodes": [
                    {
                        "id": node.id,
                        "name": node.name,
                        "host": node.host,
                        **sample.model_dump(exclude={"node_name"}),
                    }
                    for node, sample in zip(assessment.nodes, assessment.samples, strict=True)
                ],
                "aggregate": assessment.load.model_dump(),
                "thresholds": {
                    "cpu": assessment.policy.threshold_cpu,
                    "memory": assessment.policy.threshold_memory,
                },
                "policy": assessment.policy.model_dump(),
                "decision": {
                    "action": decision.action.value,
                    "reason": decision.reason.value,
                    "message": decision.message,
                    "nodes_to_add": decision.nodes_to_add,
                    "cooldown_remaining_seconds": decision.cooldown_remaining_seconds,
                },
                "nodes_added": [node.name for node in expansion.added],
                "dry_run": dry_run,
            },
            output,
        )
        return
    console = _console()
    if expansion.added:
        names = ", ".join(node.name for node in expansion.added)
        console.print(f"🌱 Added {names} to {assessment.forest.id}.", markup=False)
    elif decision is not assessment.decision:
        console.print(decision.message, markup=False)
    elif dry_run and decision.nodes_to_add:
        console.print("Dry run: nothing was added.")
