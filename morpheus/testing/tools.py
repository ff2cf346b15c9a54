"""System tools the tests use: found, or skipped with a reason naming the helper that installs them.

Every test that needs a program from outside the Python environment (``shellcheck``,
``systemd-analyze``, ``nft``, cloud-init's validator, and whatever later tests add) asks for it
here, so a missing tool reads the same everywhere::

    SKIPPED shellcheck is not installed: run scripts/test-tools to install it

Locally that is a skip. ``.ci/run`` runs ``scripts/test-tools`` and sets
``MORPHEUS_REQUIRE_TOOLS=1``; with it set every such skip is a failure, so CI cannot pass
without having run a real-tool test.

cloud-init is never installed on the machine: ``scripts/test-tools`` downloads Debian 13's
``cloud-init`` package (and the few pure-Python Debian packages it imports that the project's
environment lacks) with ``apt-get download`` and unpacks them with ``dpkg -x`` into
``MORPHEUS_TOOLS_CACHE`` (default ``~/.cache/morpheus/test-tools``). :func:`cloud_init` runs that
tree's own ``cloud-init schema`` with this interpreter, which supplies the rest of what it
imports (PyYAML, Jinja2, jsonschema, requests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from morpheus.testing import network_guard

HELPER = "scripts/test-tools"
REQUIRE_VARIABLE = "MORPHEUS_REQUIRE_TOOLS"
CACHE_VARIABLE = "MORPHEUS_TOOLS_CACHE"
#: Variables that steer a test run rather than Morpheus: the isolation fixture keeps them.
RUN_VARIABLES = (REQUIRE_VARIABLE, CACHE_VARIABLE, *network_guard.VARIABLES)


def _default_cache() -> Path:
    # Resolved once, at import (pytest loads this plugin before any test runs): the isolation
    # fixture gives every test a HOME of its own, where the cache is not.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "morpheus" / "test-tools"


_DEFAULT_CACHE = _default_cache()


def tools_required() -> bool:
    """True where a missing tool must fail the test (CI: ``MORPHEUS_REQUIRE_TOOLS=1``)."""
    return os.environ.get(REQUIRE_VARIABLE, "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip the test because ``reason`` (a tool or capability is missing), or fail it in CI."""
    if tools_required():
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE} is set: {HELPER} must provide it)")
    pytest.skip(f"{reason}: run {HELPER} to install it")


def require_tool(name: str) -> str:
    """The path of program ``name`` on PATH, or skip/fail (see :func:`missing`)."""
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
    return found


def tools_cache() -> Path:
    """Where ``scripts/test-tools`` unpacks the tools that are not installed system-wide."""
    return Path(os.environ.get(CACHE_VARIABLE) or _DEFAULT_CACHE)


@dataclass(frozen=True)
class CloudInit:
    """Debian's cloud-init, unpacked (not installed) by ``scripts/test-tools``."""

    tree: Path  # the unpacked package's dist-packages directory
    version: str  # the Debian package version, e.g. 25.1.4-1+deb13u1

    def schema(self, config: Path, *, workdir: Path) -> subprocess.CompletedProcess[str]:
        """Run ``cloud-init schema --config-file CONFIG`` exactly as on a node.

        As root, cloud-init looks for a datasource and writes instance data under its run
        directory (``/run/cloud-init``). ``CLOUD_CFG`` points it at a configuration that moves
        every directory it writes into ``workdir`` and allows only the ``None`` datasource, so
        the check touches nothing of this machine and probes no network.
        """
        return subprocess.run(
            self.schema_command(config), capture_output=True, text=True, env=self.env(workdir)
        )

    def schema_command(self, config: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cloudinit.cmd.main",
            "schema",
            "--config-file",
            str(config),
        ]

    def env(self, workdir: Path) -> dict[str, str]:
        workdir.mkdir(parents=True, exist_ok=True)
        settings = workdir / "cloud.cfg"
        settings.write_text(
            "datasource_list: [None]\n"
            "system_info:\n"
            "  paths:\n"
            f"    run_dir: {workdir / 'run'}\n"
            f"    cloud_dir: {workdir / 'lib'}\n"
            f"    docs_dir: {workdir / 'doc'}\n"
            f"    templates_dir: {workdir / 'templates'}\n"
        )
        return {
            **os.environ,
            "PYTHONPATH": str(self.tree),
            "CLOUD_CFG": str(settings),
            "PYTHONDONTWRITEBYTECODE": "1",
        }


def cloud_init() -> CloudInit:
    """The unpacked cloud-init, or skip/fail (see :func:`missing`)."""
    home = tools_cache() / "cloud-init"
    tree = home / "root" / "usr" / "lib" / "python3" / "dist-packages"
    version_file = home / "version"
    if not (tree / "cloudinit" / "cmd" / "main.py").is_file() or not version_file.is_file():
        missing(f"cloud-init is not unpacked in {home}")
    return CloudInit(tree=tree, version=version_file.read_text().strip())
