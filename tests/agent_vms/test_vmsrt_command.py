"""The QEMU command line built from a VmLaunch (pure)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from otherix.agent.vms import RunPaths, VmLaunch, qemu_command

BASE = VmLaunch(
    vm_id="7b4c",
    name="web",
    disk_path=Path("/pool/vms/7b4c/disk.qcow2"),
    disk_format="qcow2",
    vcpus=2,
    memory_mb=512,
    accel="tcg",
    vm_dir=Path("/pool/vms/7b4c"),
)


def make(**overrides) -> VmLaunch:
    return replace(BASE, **overrides)


PATHS = RunPaths(Path("/run/otherix/vms/7b4c"))


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_the_command_line_of_a_tcg_vm():
    argv = qemu_command(make(), PATHS)
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-machine") == ["q35"]
    assert option(argv, "-accel") == ["tcg"]
    assert option(argv, "-cpu") == []
    assert option(argv, "-smp") == ["2"]
    assert option(argv, "-m") == ["512"]
    assert option(argv, "-nic") == ["none"]
    assert option(argv, "-display") == ["none"]
    assert "-nodefaults" in argv
    assert "-daemonize" not in argv
    assert "-no-shutdown" not in argv
    assert option(argv, "-name") == ["guest=web"]
    assert option(argv, "-pidfile") == ["/run/otherix/vms/7b4c/qemu.pid"]
    assert option(argv, "-serial") == ["chardev:console"]
    assert option(argv, "-chardev") == [
        "file,id=console,path=/pool/vms/7b4c/console.log,append=on",
        "socket,id=qmp,path=/run/otherix/vms/7b4c/qmp.sock,server=on,wait=off",
    ]
    assert option(argv, "-mon") == ["chardev=qmp,mode=control"]
    assert option(argv, "-device") == ["virtio-blk-pci,drive=root,bootindex=0"]
    [blockdev] = option(argv, "-blockdev")
    assert json.loads(blockdev) == {
        "driver": "qcow2",
        "node-name": "root",
        "cache": {"direct": False, "no-flush": False},
        "discard": "unmap",
        "file": {"driver": "file", "filename": "/pool/vms/7b4c/disk.qcow2"},
    }


def test_kvm_uses_the_host_cpu():
    argv = qemu_command(make(accel="kvm"), PATHS)
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]


def test_a_raw_disk_and_a_path_with_commas():
    argv = qemu_command(
        make(disk_format="raw", disk_path=Path("/p,q/d.raw"), vm_dir=Path("/p,q"), name="a,b"),
        RunPaths(Path("/r,s")),
    )
    [blockdev] = option(argv, "-blockdev")
    assert json.loads(blockdev)["driver"] == "raw"
    assert json.loads(blockdev)["file"]["filename"] == "/p,q/d.raw"
    assert option(argv, "-name") == ["guest=a,,b"]
    assert option(argv, "-chardev")[0] == "file,id=console,path=/p,,q/console.log,append=on"
    assert option(argv, "-chardev")[1].startswith("socket,id=qmp,path=/r,,s/qmp.sock,")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"vcpus": 0}, "vcpus must be at least 1"), ({"memory_mb": 0}, "memory_mb must be")],
)
def test_values_qemu_cannot_take_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        qemu_command(make(**overrides), PATHS)


def test_a_qmp_socket_path_too_long_for_a_unix_socket_is_refused():
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        qemu_command(make(), RunPaths(Path("/" + "r" * 100)))


def test_relative_paths_are_refused():
    with pytest.raises(ValueError, match=r"disk\.qcow2 is not an absolute path"):
        qemu_command(make(disk_path=Path("disk.qcow2")), PATHS)
    with pytest.raises(ValueError, match="run is not an absolute path"):
        qemu_command(make(), RunPaths(Path("run")))
