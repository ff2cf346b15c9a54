"""Whether QEMU, as the user libvirt runs it as, may open /dev/kvm."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from morpheus_libvirt.kvm_access import can_open_read_write, kvm_device_problem, qemu_ids

CAPABILITIES = """<capabilities><host>
<secmodel><model>none</model><doi>0</doi></secmodel>
<secmodel><model>dac</model><doi>0</doi>
<baselabel type='kvm'>+64055:+107</baselabel><baselabel type='qemu'>+64055:+64055</baselabel>
</secmodel></host></capabilities>"""


def test_qemu_ids_come_from_the_dac_base_label() -> None:
    assert qemu_ids(CAPABILITIES, "kvm") == (64055, 107)
    assert qemu_ids(CAPABILITIES, "qemu") == (64055, 64055)
    assert qemu_ids("<capabilities><host/></capabilities>", "kvm") is None


@pytest.mark.parametrize(
    ("mode", "uid", "groups", "allowed"),
    [
        (0o600, 0, set(), True),  # root opens anything
        (0o600, 64055, {107}, False),  # owner root only: the stock /dev/kvm of this machine
        (0o660, 64055, {107}, True),  # group kvm (107)
        (0o660, 64055, {64055}, False),
        (0o666, 64055, set(), True),
        (0o640, 64055, {107}, False),  # read is not enough
    ],
)
def test_read_write_permission(mode: int, uid: int, groups: set[int], allowed: bool) -> None:
    assert can_open_read_write(stat.S_IFCHR | mode, 0, 107, uid, groups) is allowed


def test_problem_names_the_user_the_device_and_the_fix(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    device.chmod(0o600)
    owner = os.stat(device).st_uid
    assert kvm_device_problem(owner, 0, device=device) is None
    problem = kvm_device_problem(owner + 4242, 4242, device=device, groups_of=lambda u, g: {g})
    assert problem is not None
    assert f"cannot open {device} (-rw-------" in problem
    assert "virt_type: qemu" in problem
    missing = kvm_device_problem(1, 1, device=tmp_path / "absent")
    assert missing is not None and "does not exist" in missing
