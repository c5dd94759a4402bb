"""What the agent reports of its VM runtime with the node's capabilities."""

from __future__ import annotations

import shutil

import pytest

from otherix.agent.main import host_capabilities, vm_capabilities
from otherix.agent.vms import accel


def test_no_qemu_is_accelerator_none_with_the_reason() -> None:
    assert vm_capabilities(qemu="no-such-qemu-system") == {
        "vm_accelerator": "none",
        "vm_accelerator_reason": "no-such-qemu-system is not installed",
    }


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_the_probe_answer_is_what_the_node_reports() -> None:
    found = accel.probe()
    caps = host_capabilities()
    assert caps["vm_accelerator"] == found.accel
    if found.accel == "kvm":
        assert "vm_accelerator_reason" not in caps
    else:
        assert caps["vm_accelerator_reason"] == found.reason
