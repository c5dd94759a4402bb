"""The accelerator probe: each of its three checks failing on its own, and the probe
guest booting under TCG (so the check that it boots under KVM means something)."""

from __future__ import annotations

from pathlib import Path

from otherix.agent.vms import accel


def test_no_kvm_device_is_tcg_with_the_reason(tmp_path):
    found = accel.probe(dev=tmp_path / "kvm")
    assert found.accel == "tcg"
    assert found.reason is not None
    assert found.reason.startswith(f"cannot open {tmp_path / 'kvm'}")


def test_a_device_that_is_not_kvm_is_tcg():
    found = accel.probe(dev=Path("/dev/null"))
    assert found.accel == "tcg"
    assert found.reason is not None
    assert "KVM_GET_API_VERSION failed" in found.reason


def test_kvm_without_a_hardware_module_is_tcg(tmp_path):
    (tmp_path / "kvm").mkdir()
    (tmp_path / "kvm_pvm").mkdir()
    reason = accel._hardware_kvm(tmp_path)
    assert reason is not None
    assert "neither kvm_intel nor kvm_amd" in reason
    assert "(loaded: kvm_pvm)" in reason
    (tmp_path / "kvm_intel").mkdir()
    assert accel._hardware_kvm(tmp_path) is None


def test_the_probe_guest_reaches_long_mode_under_tcg():
    assert len(accel.BOOT_SECTOR) == 512
    assert accel.BOOT_SECTOR.endswith(b"\x55\xaa")
    assert accel.boot_probe("tcg", timeout=20) is None


def test_a_qemu_that_cannot_run_is_the_reason(tmp_path):
    reason = accel.boot_probe("kvm", qemu=str(tmp_path / "no-qemu"))
    assert reason is not None
    assert reason.startswith(f"cannot run {tmp_path / 'no-qemu'}")


def test_a_qemu_that_exits_is_the_reason():
    reason = accel.boot_probe("nosuchaccel")  # type: ignore[arg-type]
    assert reason is not None
    assert reason.startswith("QEMU -accel nosuchaccel exited (1):")


def test_the_probe_on_this_machine_answers_with_a_reason_exactly_when_tcg():
    found = accel.probe()
    assert (found.accel == "kvm") == (found.reason is None)
