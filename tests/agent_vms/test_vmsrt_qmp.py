"""The synchronous QMP facade: a real QEMU answers, a missing socket is QmpError."""

from __future__ import annotations

import pytest

from otherix.agent.vms import qmp


def test_query_status_of_a_running_qemu(runtime, launch, blank_disk, base):
    runtime().start(launch(blank_disk))
    status = qmp.execute(base / "run" / "vm1" / "qmp.sock", "query-status")
    assert isinstance(status, dict)
    assert status["status"] == "running"


def test_an_unknown_command_is_qmp_error(runtime, launch, blank_disk, base):
    runtime().start(launch(blank_disk))
    with pytest.raises(qmp.QmpError, match="no-such-command"):
        qmp.execute(base / "run" / "vm1" / "qmp.sock", "no-such-command")


def test_no_socket_is_qmp_error(tmp_path):
    with pytest.raises(qmp.QmpError, match="QMP query-status on"):
        qmp.execute(tmp_path / "none.sock", "query-status", timeout=1)
