"""`morpheus registry …`: recover the registry, look after the key of its secrets, show where
it is and move it (``morpheus.cli.registry_move``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from morpheus.cli import output as out
from morpheus.cli import registry_move
from morpheus.cli.options import OutputFormat, OutputOption
from morpheus.cli.session import show_warnings, state_of

if TYPE_CHECKING:
    from morpheus.services.rebuild import Rebuild
    from morpheus.services.registry_key import KeyCheck

registry_app = typer.Typer(
    help="Look after the registry (the state database).", no_args_is_help=True
)
key_app = typer.Typer(
    help="The key that encrypts the registry's route passwords and private keys.",
    no_args_is_help=True,
)
registry_app.add_typer(key_app, name="key")
registry_app.command("info")(registry_move.info)
registry_app.command("migrate")(registry_move.migrate)


@registry_app.command("rebuild")
def rebuild(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Recreate the registry's forests from node directories and provider listings.

    For a registry that is damaged, lost or empty while nodes still run: every forest an
    installed provider still has nodes of is recorded again (running nodes active, the rest
    failed, for `morpheus reconcile`). A damaged file is kept beside the new one as
    registry.sqlite3.damaged-<time>; forests already recorded are left as they are.
    """
    from morpheus.paths import state_dir
    from morpheus.registry import utcnow
    from morpheus.services.rebuild import rebuild_registry
    from morpheus.settings import load_settings

    loaded = load_settings(state_of(ctx).config)
    show_warnings(loaded.warnings)
    show_rebuild(rebuild_registry(loaded.settings, state_dir(), utcnow()), output)


def show_rebuild(result: Rebuild, output: OutputFormat) -> None:
    if out.is_data(output):
        out.emit(
            {
                "recovered": [
                    {
                        "forest": r.forest_id,
                        "provider": r.provider,
                        "nodes": r.nodes,
                        "running": r.running,
                    }
                    for r in result.recovered
                ],
                "already_recorded": result.already_recorded,
                "kept_aside": None if result.kept_aside is None else str(result.kept_aside),
                "notes": result.notes,
            },
            output,
        )
        return
    console = out.console()
    if result.kept_aside is not None:
        console.print(f"The damaged registry was kept as {result.kept_aside}", markup=False)
    for forest in result.recovered:
        console.print(
            f"Recovered {forest.forest_id} from {forest.provider}: {forest.nodes} node(s), "
            f"{forest.running} running",
            markup=False,
        )
    for note in result.notes:
        console.print(f"  note: {note}", markup=False)
    if result.recovered:
        ids = " ".join(forest.forest_id for forest in result.recovered)
        console.print(
            "Route credentials cannot be read back from the nodes: run "
            f"`morpheus reconcile FOREST` for each ({ids}) before growing it; "
            "it gives every node the new ones and tidies nodes that are not running.",
            markup=False,
        )
    else:
        console.print("No forest to recover: every forest the providers list is recorded.")


@key_app.command("generate")
def generate_key(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Where to write it (default: registry.key_file, else "
            "$XDG_CONFIG_HOME/morpheus/registry.key).",
            dir_okay=False,
        ),
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Put a new key before the keys the file holds (they still decrypt); then run "
            "`morpheus registry encrypt`.",
        ),
    ] = False,
) -> None:
    """Write a new registry key to a file only you can read (mode 0600).

    The key never appears on screen. Keep a copy somewhere safe: without it, encrypted
    secrets cannot be read. Every host that tends the same registry needs the same key
    (the file, or its content in MORPHEUS_REGISTRY_KEY). An existing file is never
    overwritten.
    """
    from morpheus.services.registry_key import generate_key as generate
    from morpheus.settings import load_settings

    loaded = load_settings(state_of(ctx).config)
    show_warnings(loaded.warnings)
    written = generate(loaded.settings, file, rotate=rotate)
    console = out.console()
    verb = "Put a new registry key first in" if written.rotated else "Wrote a new registry key to"
    console.print(f"{verb} {written.path} (mode 0600).", markup=False)
    if written.shadowed:
        console.print(
            "  note: MORPHEUS_REGISTRY_KEY is set and is used instead of this file.",
            markup=False,
        )
    console.print(
        "Keep a copy somewhere safe; run `morpheus registry encrypt` to encrypt the "
        "registry's secrets with it.",
        markup=False,
    )


@key_app.command("check")
def check_key(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Show where the registry key comes from and whether it opens every stored secret.

    Exits 3 when the key is unreadable, malformed or does not open an encrypted secret.
    """
    from morpheus.errors import RegistryKeyError
    from morpheus.services.registry_key import check_key as check

    result = check(state_of(ctx).context())
    show_key_check(result, output)
    if result.problem is not None:
        raise RegistryKeyError(result.problem)


def show_key_check(result: KeyCheck, output: OutputFormat) -> None:
    secrets = result.secrets
    if out.is_data(output):
        out.emit(
            {
                "key": {"source": result.origin.value, "where": result.where, "keys": result.keys},
                "secrets": {
                    "plain": secrets.plain,
                    "encrypted": secrets.sealed,
                    "unreadable": secrets.unreadable,
                },
                "problem": result.problem,
            },
            output,
        )
        return
    console = out.console()
    keys = f" ({result.keys} keys; the first encrypts)" if result.keys > 1 else ""
    console.print(f"Key: {result.source}{keys}", markup=False)
    console.print(f"Secrets: {secrets.sealed} encrypted, {secrets.plain} plain", markup=False)
    if result.problem is None and secrets.plain and result.keys:
        console.print(
            f"  note: run `morpheus registry encrypt` to encrypt the {secrets.plain} plain "
            "secret(s) with the key.",
            markup=False,
        )


@registry_app.command("encrypt")
def encrypt(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Encrypt every secret in the registry with the registry key.

    Plain secrets (recorded before a key was set) are encrypted; secrets encrypted with an
    older key (after `registry key generate --rotate`) are encrypted again with the first
    key, after which the old one can be removed. One transaction: all or nothing.
    """
    from morpheus.services.registry_key import encrypt_registry

    count = encrypt_registry(state_of(ctx).context())
    if out.is_data(output):
        out.emit({"encrypted": count.encrypted, "re_encrypted": count.re_encrypted}, output)
        return
    out.console().print(
        f"Encrypted {count.encrypted} plain secret(s); re-encrypted {count.re_encrypted} "
        "with the first key.",
        markup=False,
    )
