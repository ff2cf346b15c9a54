"""A real OpenSSH sshd on a simulated machine (see :mod:`morpheus.testing.netns`).

What a cloud image's sshd does once cloud-init has run: root may log in with the keys the
platform handed over (Hetzner puts the project's SSH keys in root's ``authorized_keys``), never
with a password, and the host keys are the ones in the machine's ``/etc/ssh``: those of the
user-data's ``ssh_keys`` when it has them, else one generated at first boot. The host's own
host keys are never visible in a machine.
"""

from __future__ import annotations

from collections.abc import Sequence

from morpheus.testing.netns import SSHD, Machine

HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"


def start_sshd(machine: Machine, authorized_keys: Sequence[str], port: int = 22) -> None:
    """Run sshd on ``port`` (both stacks) in ``machine`` and wait until it listens."""
    keys = machine.run("sh", "-c", "ls /etc/ssh/ssh_host_*_key 2>/dev/null || true").split()
    if not keys:
        machine.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", HOST_KEY)
        keys = [HOST_KEY]
    lines = "".join(f"{key}\n" for key in authorized_keys)
    machine.write_file("/root/.ssh/authorized_keys", lines.encode(), 0o600)
    machine.run("chmod", "700", "/root/.ssh")
    config = [
        # First, as on Debian: the node's own drop-ins (first value wins in sshd_config).
        "Include /etc/ssh/sshd_config.d/*.conf",
        f"Port {port}",
        "ListenAddress ::",
        "ListenAddress 0.0.0.0",
        *(f"HostKey {key}" for key in keys),
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PidFile none",
        "Subsystem sftp internal-sftp",
    ]
    machine.write_file("/etc/ssh/sshd_config", "\n".join([*config, ""]).encode(), 0o644)
    machine.run("mkdir", "-p", "-m", "0755", "/run/sshd")
    machine.spawn("sshd", SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config")
    machine.wait_log("sshd", f"Server listening on :: port {port}")
