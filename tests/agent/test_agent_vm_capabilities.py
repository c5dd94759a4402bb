"""What the agent reports of its VM runtime with the node's capabilities."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from otherix.agent.main import host_capabilities, vm_capabilities
from otherix.agent.vms import accel, cgroups


def test_no_qemu_is_accelerator_none_with_the_reason(tmp_path: Path) -> None:
    none = cgroups.detect(tmp_path)  # not a cgroup fs
    assert vm_capabilities(qemu="no-such-qemu-system", limits=none) == {
        "vm_accelerator": "none",
        "vm_accelerator_reason": "no-such-qemu-system is not installed",
        "vm_resource_limits": "none",
        "vm_resource_limits_reason": f"no cgroup v2 with memory and cpu, no v1 {tmp_path}/memory",
    }


def test_the_cgroup_answer_is_what_the_node_reports() -> None:
    found = cgroups.detect()
    caps = vm_capabilities(qemu="no-such-qemu-system")
    assert caps["vm_resource_limits"] == found.mode
    if found.mode == "none":
        assert caps["vm_resource_limits_reason"] == found.reason
    else:
        assert "vm_resource_limits_reason" not in caps


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_the_probe_answer_is_what_the_node_reports() -> None:
    found = accel.probe()
    caps = host_capabilities()
    assert caps["vm_accelerator"] == found.accel
    if found.accel == "kvm":
        assert "vm_accelerator_reason" not in caps
    else:
        assert caps["vm_accelerator_reason"] == found.reason
