"""Can QEMU, as the user libvirt starts it as, open /dev/kvm?

libvirt lists KVM guests in its capabilities whenever /dev/kvm exists, even when the user it
runs QEMU as (``libvirt-qemu`` on Debian) cannot open the device; the first domain then
fails to start.  The pre-flight asks the question itself, for a libvirt host on this machine.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path

from morpheus_libvirt.libvirt_xml import hypervisor_problem

KVM_DEVICE = Path("/dev/kvm")


def qemu_ids(capabilities_xml: str, virt_type: str) -> tuple[int, int] | None:
    """The ``(uid, gid)`` libvirt runs ``virt_type`` guests as (its DAC base label)."""
    root = ET.fromstring(capabilities_xml)  # noqa: S314 - XML from the libvirt daemon
    for secmodel in root.findall("host/secmodel"):
        if secmodel.findtext("model") != "dac":
            continue
        for label in secmodel.findall("baselabel"):
            if label.get("type") == virt_type and label.text:
                user, _, group = label.text.partition(":")
                try:
                    return int(user.lstrip("+")), int(group.lstrip("+"))
                except ValueError:
                    return None
    return None


def _groups_of(uid: int, gid: int) -> set[int]:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return {gid}
    return {gid, *os.getgrouplist(name, gid)}


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def can_open_read_write(mode: int, owner: int, group: int, uid: int, gids: Iterable[int]) -> bool:
    """Whether ``uid`` (in groups ``gids``) may open a file of ``mode`` for reading and writing."""
    if uid == 0:
        return True
    if uid == owner:
        return mode & (stat.S_IRUSR | stat.S_IWUSR) == stat.S_IRUSR | stat.S_IWUSR
    if group in set(gids):
        return mode & (stat.S_IRGRP | stat.S_IWGRP) == stat.S_IRGRP | stat.S_IWGRP
    return mode & (stat.S_IROTH | stat.S_IWOTH) == stat.S_IROTH | stat.S_IWOTH


def kvm_device_problem(
    uid: int,
    gid: int,
    *,
    device: Path = KVM_DEVICE,
    groups_of: Callable[[int, int], set[int]] = _groups_of,
) -> str | None:
    """Why QEMU running as ``uid:gid`` cannot use ``device``, or ``None`` when it can."""
    fallback = "or set providers.libvirt.virt_type: qemu to emulate (much slower)"
    try:
        info = device.stat()
    except OSError:
        return f"{device} does not exist on the libvirt host: enable virtualisation, {fallback}"
    if can_open_read_write(info.st_mode, info.st_uid, info.st_gid, uid, groups_of(uid, gid)):
        return None
    user = _user(uid)
    owner = f"{_user(info.st_uid)}:{_group(info.st_gid)}"
    return (
        f"QEMU runs as {user} (uid {uid}) and cannot open {device} "
        f"({stat.filemode(info.st_mode)} {owner}): let that user read and write it (e.g. "
        f"`chgrp kvm {device}; chmod 0660 {device}` with {user} in group kvm), {fallback}"
    )


def host_problem(capabilities_xml: str, virt_type: str, host_is_here: bool) -> str | None:
    """Why the libvirt host cannot run ``virt_type`` guests, or None.

    libvirt offers KVM whenever /dev/kvm exists; on this machine, ask what QEMU will get.
    """
    problem = hypervisor_problem(capabilities_xml, virt_type)
    if problem is None and virt_type == "kvm" and host_is_here:
        ids = qemu_ids(capabilities_xml, "kvm")
        problem = kvm_device_problem(*ids) if ids is not None else None
    return problem
