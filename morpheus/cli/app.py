"""The ``morpheus`` command.

Commands import what they use inside their bodies so ``--help`` and completion stay fast.

Exit codes: 0 success; 1 failure (config, provider, registry, readiness); 2 usage error;
130 interrupted.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from morpheus.services import Context

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``grow``: nodes were added / growth was needed but blocked (see ``GrowthReason``).
EXIT_GREW = 10
EXIT_BLOCKED = 11
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="morpheus",
    help="Plant and tend forests of clustered NATS + NimsForest nodes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class State:
    """Options of the top-level callback, shared with the commands."""

    def __init__(self, config: Path | None, quiet: bool) -> None:
        self.config = config
        self.quiet = quiet
        self._context: Context | None = None

    def context(self) -> Context:
        """Settings, state directory and registry, built once, on first use."""
        if self._context is None:
            from morpheus.paths import state_dir
            from morpheus.registry import Registry
            from morpheus.services import Context
            from morpheus.settings import load_settings

            loaded = load_settings(self.config)
            show_warnings(loaded.warnings)
            directory = state_dir()
            self._context = Context(
                settings=loaded.settings,
                state_dir=directory,
                registry=Registry.in_state_dir(directory),
            )
        return self._context


def show_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)


def _state(ctx: typer.Context) -> State:
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state


def _version(value: bool) -> None:
    if value:
        from morpheus import __version__

        typer.echo(f"morpheus {__version__}")
        raise typer.Exit()


def complete_forest_id(incomplete: str) -> list[str]:
    """Forest ids from the registry (stdlib only, so completion stays fast)."""
    from morpheus.listing import forest_ids
    from morpheus.paths import state_dir

    return forest_ids(state_dir(), incomplete)


ForestArgument = Annotated[
    str,
    typer.Argument(
        help="Forest id, as `morpheus list` shows it.", autocompletion=complete_forest_id
    ),
]
OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people; json or yaml for scripts.")
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; for scripts.")]


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (default: first of $MORPHEUS_CONFIG, "
            "./config.yaml, $XDG_CONFIG_HOME/morpheus/config.yaml, ~/.morpheus/config.yaml, "
            "/etc/morpheus/config.yaml).",
            dir_okay=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only results and errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Plant and tend forests of clustered NATS + NimsForest nodes."""
    ctx.obj = State(config, quiet)


@app.command()
def plant(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(help="local, cloud (the configured cloud provider), or a provider name."),
    ],
    size: Annotated[
        str | None, typer.Argument(help="small (1 node), medium (3) or large (5).")
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option("--nodes", "-n", min=1, max=500, help="Number of nodes instead of a size."),
    ] = None,
    yes: YesOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; create nothing.")
    ] = False,
    user_data_dir: Annotated[
        Path | None,
        typer.Option(
            "--user-data-dir",
            file_okay=False,
            help="With --dry-run: write each planned node's user-data to DIR/<node>.yaml.",
        ),
    ] = None,
    keep_on_failure: Annotated[
        bool,
        typer.Option("--keep-on-failure", help="Keep what a failed plant created, for inspection."),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a forest of NATS nodes that cluster with each other."""
    from morpheus.cli import output as out
    from morpheus.services.plant import PlantRequest, plan
    from morpheus.services.plant import plant as plant_forest

    state = _state(ctx)
    context = state.context()
    request = PlantRequest(target=target, size=size, nodes=nodes, keep_on_failure=keep_on_failure)
    if user_data_dir is not None and not dry_run:
        _fail("--user-data-dir only goes with --dry-run", EXIT_USAGE)
    plant_plan = plan(context, request)
    if dry_run or (plant_plan.provider.costs_money and not yes):
        out.show_plan(plant_plan)
        if dry_run:
            if user_data_dir is not None:
                from morpheus.services.plant import write_user_data

                written = write_user_data(context, plant_plan, user_data_dir)
                out.show_written(written)
            return
        _confirm("Create these machines?")
    else:
        show_warnings(plant_plan.warnings)
    with out.NodeProgress(enabled=not state.quiet and output == OutputFormat.table) as progress:
        result = plant_forest(context, plant_plan, request, progress)
    out.show_planted(result, output)


@app.command(name="list")
def list_forests(
    ctx: typer.Context,
    output: OutputOption = OutputFormat.table,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Ask each forest's provider first and record what it reports."
        ),
    ] = False,
) -> None:
    """List the forests in the registry."""
    from morpheus.cli.plain import show_drift, show_forests
    from morpheus.listing import forest_summaries
    from morpheus.paths import state_dir

    if refresh:
        from morpheus.services.reconcile import refresh_all

        show_drift(refresh_all(_state(ctx).context()))
    show_forests(forest_summaries(state_dir()), output.value)


@app.command()
def status(
    ctx: typer.Context, forest: ForestArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Show a forest's nodes: platform state, NATS health, peers, addresses and events."""
    from morpheus.cli import output as out
    from morpheus.services.status import forest_status

    out.show_status(forest_status(_state(ctx).context(), forest), output)


@app.command()
def teardown(
    ctx: typer.Context,
    forest: ForestArgument,
    yes: YesOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete a forest: every node, process, file and record of it."""
    from morpheus.cli import output as out
    from morpheus.services.teardown import teardown as teardown_forest
    from morpheus.services.teardown import teardown_preview

    state = _state(ctx)
    context = state.context()
    found = context.registry.get_forest(forest)
    if dry_run:
        out.show_teardown_preview(found.id, teardown_preview(context, found.id))
        return
    if not yes:
        if not sys.stdin.isatty():
            _fail("teardown asks for confirmation: pass --yes when not at a terminal", EXIT_USAGE)
        typed = typer.prompt(f"This deletes {found.id} and all its nodes. Type its id to confirm")
        if typed.strip() != found.id:
            _fail("the id did not match; nothing was deleted", EXIT_FAILURE)
    with out.NodeProgress(enabled=not state.quiet) as progress:
        removal = teardown_forest(context, found.id, progress)
    out.show_removal(found.id, removal)
    if removal.failed:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def reconcile(
    ctx: typer.Context,
    forest: ForestArgument,
    yes: YesOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
) -> None:
    """Repair a forest after an interrupted plant, grow or teardown (registry = platform)."""
    from morpheus.cli import output as out
    from morpheus.services.reconcile import preview
    from morpheus.services.reconcile import reconcile as reconcile_forest

    state = _state(ctx)
    context = state.context()
    plan = preview(context, forest)
    out.show_reconcile_plan(plan)
    if dry_run:
        return
    if plan.changes and not yes:
        _confirm("Apply these changes?", "reconcile deletes nodes: pass --yes")
    with out.NodeProgress(enabled=not state.quiet) as progress:
        result = reconcile_forest(context, plan.forest.id, progress)
    out.show_reconciliation(result)
    if result.failed:
        raise typer.Exit(EXIT_FAILURE)


@app.command(name="import-registry")
def import_registry(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The older Go tool's registry (default: ~/.morpheus/registry.json).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be imported; write nothing.")
    ] = False,
    yes: YesOption = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Import the forests and nodes of the older Go tool's registry.json."""
    from morpheus.cli import output as out
    from morpheus.provider import installed_providers
    from morpheus.services.migrate import DEFAULT_LEGACY_REGISTRY, plan_import
    from morpheus.services.migrate import import_registry as import_forests

    context = _state(ctx).context()
    plan = plan_import(
        (path or DEFAULT_LEGACY_REGISTRY).expanduser(),
        context.registry.forest_ids(),
        {provider.name for provider in installed_providers()},
    )
    if dry_run or not plan.forests:
        out.show_import(plan, output, dry_run=dry_run)
        return
    if not yes:
        out.show_import(plan, OutputFormat.table, dry_run=True)
        _confirm(f"Import {len(plan.forests)} forest(s)?", "import-registry asks first: pass --yes")
    out.show_import(import_forests(context, plan), output)


@app.command(name="user-data")
def user_data(
    ctx: typer.Context,
    forest: ForestArgument,
    node: Annotated[str, typer.Argument(help="Node name (node-1) or id.")],
) -> None:
    """Print the cloud-init user-data a node of the forest gets (secrets included: keep it)."""
    from morpheus.services.plant import node_user_data

    sys.stdout.write(node_user_data(_state(ctx).context(), forest, node))


@app.command()
def grow(
    ctx: typer.Context,
    forest: Annotated[
        str | None,
        typer.Argument(
            help="Forest id; may be left out when there is only one.",
            autocompletion=complete_forest_id,
        ),
    ] = None,
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
) -> None:
    """Show a forest's load and add nodes when it runs hot.

    CPU and memory are the NATS server's own figures from its monitoring port (process CPU
    over the machine's cores; resident memory over the node's RAM), averaged over the nodes
    that answer. Exit codes: 0 no growth needed, 10 grew, 11 growth blocked (cooldown,
    max_nodes, too many unreachable nodes, a one-node forest its provider cannot
    reconfigure), 1 error, 2 usage.
    """
    from morpheus.cli import output as out
    from morpheus.growth import GrowthAction
    from morpheus.services.grow import Expansion, assess, expand, policy_from

    state = _state(ctx)
    context = state.context()
    forest_id = forest if forest is not None else _choose_forest(context)
    policy = policy_from(context.settings.growth, threshold)
    assessment = assess(context, forest_id, policy, per_node_timeout=timeout)
    json_output = output != OutputFormat.table
    if not json_output:
        out.show_assessment(assessment)
    expansion = Expansion(assessment.decision)
    if assessment.decision.action == GrowthAction.GROW and not dry_run:
        if not (auto or yes):
            count = assessment.decision.nodes_to_add
            _confirm(f"Add {count} node{'s' if count > 1 else ''}?", "pass --yes or --auto")
        show_progress = not (state.quiet or json_output)
        with out.NodeProgress(enabled=show_progress) as progress:
            expansion = expand(context, assessment, progress)
    out.show_growth(assessment, expansion, output, dry_run=dry_run)
    if expansion.added:
        raise typer.Exit(EXIT_GREW)
    if expansion.decision.action == GrowthAction.BLOCKED:
        raise typer.Exit(EXIT_BLOCKED)


def _ask_rollback() -> bool:
    """Ctrl-C during plant: ask once whether to delete what was made (yes if no one answers)."""
    if not sys.stdin.isatty():
        return True
    try:
        return typer.confirm("\nInterrupted. Delete what this plant created?", default=True)
    except (KeyboardInterrupt, EOFError):
        return True


def _choose_forest(context: Context) -> str:
    """The only forest; with several, ask at a terminal and refuse in a script."""
    ids = [f.id for f in context.registry.list_forests()]
    if not ids:
        _fail("there are no forests; plant one with `morpheus plant local small`", EXIT_FAILURE)
    if len(ids) == 1:
        return ids[0]
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _fail(f"several forests; name one of: {', '.join(ids)}", EXIT_USAGE)
    for number, forest_id in enumerate(ids, start=1):
        typer.echo(f"  {number}) {forest_id}")
    while True:
        choice = typer.prompt(f"Which forest (1-{len(ids)})")
        if choice.strip().isdigit() and 1 <= int(choice) <= len(ids):
            return ids[int(choice) - 1]
        if choice.strip() in ids:
            return str(choice.strip())


@app.command()
def providers(output: OutputOption = OutputFormat.table) -> None:
    """List the installed provider plugins."""
    from morpheus.cli import output as out
    from morpheus.provider import installed_providers

    out.show_providers(installed_providers(), output)


@app.command()
def check(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Check this machine is ready: config, state dir, nats-server, cloud token, SSH key, IPv6."""
    from morpheus.cli import output as out
    from morpheus.paths import state_dir
    from morpheus.services.check import run_checks

    results = run_checks(_state(ctx).config, state_dir())
    out.show_checks(results, output)
    if not all(result.ok for result in results):
        raise typer.Exit(EXIT_FAILURE)


@config_app.command("check")
def config_check(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Validate the configuration and show where each value came from (secrets masked)."""
    from morpheus.cli import output as out
    from morpheus.settings import load_settings

    loaded = load_settings(_state(ctx).config)
    show_warnings(loaded.warnings)
    out.show_config(loaded, output)


def _confirm(
    question: str, script_hint: str = "this creates machines that cost money: pass --yes"
) -> None:
    if not sys.stdin.isatty():
        _fail(f"{script_hint} to confirm from a script", EXIT_USAGE)
    if not typer.confirm(question, default=False):
        _fail("nothing was created", EXIT_FAILURE)


def _fail(message: str, code: int) -> NoReturn:
    from morpheus.cli.output import error

    error(message)
    raise typer.Exit(code)


def main() -> None:
    """Entry point: run the app and turn Morpheus errors into one line and an exit code."""
    from typer._click.exceptions import NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError

    from morpheus.cli.output import error
    from morpheus.errors import MorpheusError

    try:
        code = app(prog_name="morpheus", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        sys.exit(EXIT_USAGE)
    except ClickUsageError as exc:
        # One line, like every other error (Click's own format takes four).
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        error(f"{exc.format_message()}{hint}")
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except MorpheusError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
