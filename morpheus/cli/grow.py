"""`morpheus grow`: a forest's load, the growth decision, and growing it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli.options import (
    OptionalForestArgument,
    OutputFormat,
    OutputOption,
    QuietOption,
    YesOption,
)
from morpheus.cli.session import (
    EXIT_BLOCKED,
    EXIT_GREW,
    EXIT_OK,
    ask,
    choose_forest,
    show_warnings,
    state_of,
)

if TYPE_CHECKING:
    from morpheus.growth import NodeVerdict
    from morpheus.load import NodeSample
    from morpheus.services.grow import Assessment, Expansion


def grow(
    ctx: typer.Context,
    forest: OptionalForestArgument = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Decide and act without asking (for cron).")
    ] = False,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", min=1, max=100, help="Grow above this CPU or memory % (both)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide; add nothing.")] = False,
    yes: YesOption = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=60, help="Seconds to wait for each node.")
    ] = 2.0,
    output: OutputOption = OutputFormat.table,
    quiet: QuietOption = False,
) -> None:
    """Show a forest's load and add nodes when it runs hot.

    CPU and memory are the NATS server's own figures from its monitoring port (process CPU
    over the machine's cores; resident memory over the node's RAM), averaged over the nodes
    that answer. Exit codes: 0 no growth needed (or declined at the prompt), 10 grew,
    11 growth blocked (cooldown, max_nodes, too many unreachable nodes, a one-node forest
    its provider cannot reconfigure), 1 error, 2 usage.
    """
    from morpheus.early_requests import claim

    early = claim()
    if early is not None:
        early.pump()  # connections that came up while the CLI loaded send their requests
    from morpheus.growth import GrowthAction
    from morpheus.services.grow import Expansion, assess, expand, policy_from

    state = state_of(ctx)
    context = state.context()
    forest_id = choose_forest(context, forest)
    policy = policy_from(context.settings.growth, threshold)
    assessment = assess(
        context, forest_id, policy, per_node_timeout=timeout, dry_run=dry_run, early=early
    )
    json_output = output != OutputFormat.table
    if not json_output:
        show_assessment(assessment)
    expansion = Expansion(assessment.decision)
    if assessment.decision.action == GrowthAction.GROW and not dry_run:
        if not (auto or yes):
            count = assessment.decision.nodes_to_add
            if not ask(f"Add {count} node{'s' if count > 1 else ''}?", "pass --yes or --auto"):
                out.console().print("Not growing; nothing was added.")
                raise typer.Exit(EXIT_OK)
        show_progress = not (state.quiet or json_output)
        with out.NodeProgress(enabled=show_progress) as progress:
            expansion = expand(context, assessment, progress)
    show_growth(assessment, expansion, output, dry_run=dry_run)
    if expansion.added:
        raise typer.Exit(EXIT_GREW)
    if expansion.decision.action == GrowthAction.BLOCKED:
        raise typer.Exit(EXIT_BLOCKED)


def _bar(percent: float | None, width: int = 28) -> str:
    if percent is None:
        return "n/a"
    filled = round(min(max(percent, 0), 100) / 100 * width)
    return f"{percent:3.0f}% " + "█" * filled + "░" * (width - filled)


def _node_state(sample: NodeSample, verdict: NodeVerdict) -> str:
    from morpheus.growth import NodeVerdict

    match verdict:
        case NodeVerdict.UNREACHABLE:
            return f"unreachable ({sample.error})"
        case NodeVerdict.HEALTH_UNKNOWN:
            return f"health unknown ({sample.error})" if sample.error else "health unknown"
        case NodeVerdict.HOT:
            return "warning ⚠️"
        case _:
            return verdict.value


def show_assessment(assessment: Assessment) -> None:
    """The operator's picture: forest load, every node (unreachable ones too), the verdict."""
    console = out.console()
    load = assessment.load
    policy = assessment.policy
    decision = assessment.decision
    console.print(f"🌲 Forest: {assessment.forest.id}\n", markup=False)
    console.print("Resource Usage (NATS server figures):")
    cpu_warn = " ⚠️" if decision.cpu_over_threshold else ""
    mem_warn = " ⚠️" if decision.memory_over_threshold else ""
    console.print(f"  CPU:    {_bar(load.cpu_percent)}{cpu_warn}", markup=False)
    console.print(f"  Memory: {_bar(load.memory_percent)}{mem_warn}\n", markup=False)
    console.print(f"Nodes ({len(assessment.nodes)}):")
    table = out.table("ID", "IP", "CPU", "MEM", "PEERS", "STATUS")
    rows = zip(assessment.nodes, assessment.samples, assessment.verdicts, strict=True)
    for node, sample, verdict in rows:
        table.add_row(
            node.name,
            node.host or "-",
            out.percent(sample.cpu_percent),
            out.percent(sample.memory_percent),
            "-" if sample.peers is None else str(sample.peers),
            _node_state(sample, verdict),
        )
    console.print(table)
    console.print("")
    if decision.cpu_over_threshold:
        console.print(f"⚠️  CPU above {policy.threshold_cpu}% threshold", markup=False)
    if decision.memory_over_threshold:
        console.print(f"⚠️  Memory above {policy.threshold_memory}% threshold", markup=False)
    console.print(decision.message, markup=False)


def show_growth(
    assessment: Assessment, expansion: Expansion, output: OutputFormat, *, dry_run: bool
) -> None:
    decision = expansion.decision
    if out.is_data(output):
        out.emit(
            {
                "forest": assessment.forest.id,
                "assessed_at": assessment.assessed_at.isoformat(),
                "nodes": [
                    {
                        "id": node.id,
                        "name": node.name,
                        "host": node.host,
                        **sample.model_dump(exclude={"node_name"}),
                        "verdict": verdict.value,
                    }
                    for node, sample, verdict in zip(
                        assessment.nodes, assessment.samples, assessment.verdicts, strict=True
                    )
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
                    "cpu_over_threshold": decision.cpu_over_threshold,
                    "memory_over_threshold": decision.memory_over_threshold,
                },
                "nodes_added": [node.name for node in expansion.added],
                "streams_raised": [
                    {
                        "stream": stream.name,
                        "replicas_before": stream.replicas_before,
                        "replicas_after": stream.replicas_after,
                    }
                    for stream in expansion.raised
                ],
                "warnings": expansion.warnings,
                "dry_run": dry_run,
            },
            output,
        )
        return
    console = out.console()
    if expansion.added:
        names = ", ".join(node.name for node in expansion.added)
        console.print(f"🌱 Added {names} to {assessment.forest.id}.", markup=False)
        for stream in expansion.raised:
            console.print(
                f"Raised stream {stream.name} from {stream.replicas_before} to "
                f"{stream.replicas_after} replicas.",
                markup=False,
            )
        show_warnings(expansion.warnings)
    elif decision is not assessment.decision:
        console.print(decision.message, markup=False)
    elif dry_run and decision.nodes_to_add:
        console.print("Dry run: nothing was added.")
