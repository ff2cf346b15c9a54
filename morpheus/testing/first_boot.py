"""A cloud node's first boot on a simulated machine (see :mod:`morpheus.testing.netns`).

:func:`first_boot` does to a machine what a cloud image and cloud-init do with a node's
user-data, in cloud-init's order: ``bootcmd`` runs as written (Morpheus's loads the node
firewall with ``nft``), ``write_files`` are written with their modes and owners, ``ssh_keys``
become the host keys, the platform's keys are root's ``authorized_keys``, sshd starts (with the
drop-ins in ``/etc/ssh/sshd_config.d``), and ``runcmd`` runs: Morpheus's real bootstrap.

The image it boots has what the bootstrap expects of a Debian cloud image, with two stand-ins
for what a namespace cannot have: nats-server is baked in at ``/usr/local/bin/nats-server``
(the venv's; plant with ``integration.nats_install: false``, as for an image that has it), and
``/usr/local/bin/systemctl`` runs the units in ``/etc/systemd/system`` the way systemd would
for what they use: ``Type=oneshot`` runs ``ExecStart`` at once, ``Type=simple`` starts it in
the background as ``User=`` (its output in ``/var/log/UNIT.log``), ``ExecReload`` and stop
act on its ``$MAINPID``. So ``systemctl restart nats.service`` over SSH works as on a node.
``/usr/local/bin/systemd-run`` starts a transient service's command in the background (as
root; its ``--property=`` options are not applied): a failed bootstrap's responder runs so.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Sequence
from typing import Any

import yaml

from morpheus.testing.nats import nats_server_binary
from morpheus.testing.netns import Machine
from morpheus.testing.sshd import start_sshd

NATS_BINARY = "/usr/local/bin/nats-server"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SYSTEMCTL = r"""#!/bin/bash
# systemctl's stand-in on a simulated machine (no systemd in a namespace): see first_boot.py.
set -euo pipefail
units=/etc/systemd/system
state=/run/simulated-systemd
mkdir -p "$state" /var/log
key() { sed -n "s/^$2=//p" "$units/$1" | head -n 1; }
pid_of() { cat "$state/$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
start() {
  local unit=$1 command user
  [ -f "$units/$unit" ] || { echo "Unit $unit not found." >&2; return 5; }
  command=$(key "$unit" ExecStart)
  if [ "$(key "$unit" Type)" = oneshot ]; then
    bash -c "$command"
    return
  fi
  running "$unit" && return 0
  user=$(key "$unit" User)
  # shellcheck disable=SC2086 # ExecStart is a command line
  if [ -n "$user" ]; then
    setsid setpriv --reuid "$user" --regid "$user" --init-groups -- $command \
      >>"/var/log/$unit.log" 2>&1 </dev/null &
  else
    setsid $command >>"/var/log/$unit.log" 2>&1 </dev/null &
  fi
  echo $! >"$state/$unit.pid"
}
stop() {
  local unit=$1 pid
  running "$unit" || return 0
  pid=$(pid_of "$unit")
  kill "$pid"
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid"
}
reload() {
  local unit=$1 command
  command=$(key "$unit" ExecReload)
  MAINPID=$(pid_of "$unit") bash -c "$command"
}
verb=${1:-}
shift || true
now=false
list=()
for word in "$@"; do
  case "$word" in
    --now) now=true ;;
    -*) ;;
    *) list+=("$word") ;;
  esac
done
for unit in "${list[@]}"; do
  case "$verb" in
    start) start "$unit" ;;
    stop) stop "$unit" ;;
    restart) stop "$unit"; start "$unit" ;;
    reload) reload "$unit" ;;
    reload-or-restart) if running "$unit"; then reload "$unit"; else start "$unit"; fi ;;
    enable) if $now; then start "$unit"; fi ;;
    disable) if $now; then stop "$unit"; fi ;;
    is-active) running "$unit" || [ "$(key "$unit" Type)" = oneshot ] || exit 3 ;;
  esac
done
"""


SYSTEMD_RUN = r"""#!/bin/bash
# systemd-run's stand-in on a simulated machine: see first_boot.py.
set -euo pipefail
unit=transient
while [ "${1#--}" != "$1" ]; do
  case "$1" in --unit=*) unit=${1#--unit=} ;; esac
  shift
done
mkdir -p /run/simulated-systemd /var/log
setsid "$@" >>"/var/log/$unit.service.log" 2>&1 </dev/null &
echo $! >"/run/simulated-systemd/$unit.service.pid"
"""


def _content(entry: dict[str, Any]) -> bytes:
    raw = entry.get("content", "")
    encoding = entry.get("encoding", "text/plain")
    if encoding in ("gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        return gzip.decompress(base64.b64decode(raw))
    if encoding in ("b64", "base64"):
        return base64.b64decode(raw)
    return str(raw).encode()


def bake_image(machine: Machine) -> None:
    """What the node's image has before cloud-init runs: nats-server and the stand-ins."""
    machine.run("install", "-D", "-m", "0755", str(nats_server_binary()), NATS_BINARY)
    machine.write_file("/usr/local/bin/systemctl", SYSTEMCTL.encode(), 0o755)
    machine.write_file("/usr/local/bin/systemd-run", SYSTEMD_RUN.encode(), 0o755)


def first_boot(
    machine: Machine,
    user_data: str,
    authorized_keys: Sequence[str],
    *,
    ssh_port: int = 22,
    timeout: float = 180,
) -> str:
    """Boot ``machine`` from ``user_data`` (see the module docstring); the bootstrap's output.

    Raises ``LabError`` (with the step's output) when a step fails, as ``cloud-init status``
    would say error.
    """
    bake_image(machine)
    config = yaml.safe_load(user_data) or {}
    for command in config.get("bootcmd") or []:
        machine.run(*(command if isinstance(command, list) else ["sh", "-c", command]))
    for entry in config.get("write_files") or []:
        permissions = int(str(entry.get("permissions", "0644")), 8)
        owner = entry.get("owner", "root:root")
        machine.write_file(entry["path"], _content(entry), permissions, owner)
    host_keys = config.get("ssh_keys") or {}
    for kind in ("ed25519", "ecdsa", "rsa"):
        if f"{kind}_private" in host_keys:
            path = f"/etc/ssh/ssh_host_{kind}_key"
            machine.write_file(path, host_keys[f"{kind}_private"].encode(), 0o600)
            machine.write_file(f"{path}.pub", host_keys[f"{kind}_public"].encode(), 0o644)
    start_sshd(machine, authorized_keys, ssh_port)
    output = []
    for command in config.get("runcmd") or []:
        argv = command if isinstance(command, list) else ["sh", "-c", command]
        merged = ["sh", "-c", 'exec "$@" 2>&1', "runcmd", "env", f"PATH={PATH}", *argv]
        output.append(machine.run(*merged, timeout=timeout))
    return "".join(output)
