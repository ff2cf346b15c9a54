"""Blueprint -> text: nats.conf and cloud-init user-data, from the Jinja2 templates.

Templates ship inside the core wheel (``morpheus/templates``); in a source checkout they are
read from the top-level ``templates/`` directory.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from morpheus.models import host_for_url

if TYPE_CHECKING:
    import jinja2

    from morpheus.blueprint import NodeBlueprint


def templates_dir() -> Path:
    """Where the templates are: inside the installed package, else the source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "nats.conf.j2").is_file():
            return candidate
    raise FileNotFoundError("morpheus templates are missing from this installation")


def _quote(value: object) -> str:
    # Blueprint fields are validated to hold no quotes, backslashes or newlines, so a JSON
    # string is also a valid NATS / YAML double-quoted string.
    return json.dumps(str(value))


def _hostport(host: str, port: int) -> str:
    return f"{host_for_url(host)}:{port}"


@cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - config files, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = _quote
    env.filters["hostport"] = _hostport
    return env


def render_nats_conf(blueprint: NodeBlueprint) -> str:
    """The node's nats.conf."""
    return environment().get_template("nats.conf.j2").render(bp=blueprint)
