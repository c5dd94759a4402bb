"""Enrolment state file (otherix.agent.state) and the stop token (otherix.agent.runtime)."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from otherix.agent import state
from otherix.agent.runtime import Interrupted, StopToken, SystemClock

NODE = state.NodeState(
    server="http://cp:8080",
    node_name="n1",
    node_id="id-1",
    credential="otxn_secret",
    architecture="arm64",
)


@pytest.mark.security
def test_round_trip_with_private_modes(tmp_path: Path) -> None:
    data_dir = tmp_path / "agent"
    state.save(data_dir, NODE)
    path = data_dir / "node.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert state.load(data_dir) == NODE
    state.save(data_dir, NODE.with_revision(7))
    assert state.load(data_dir) == NODE.with_revision(7)
    assert json.loads(path.read_text())["revision"] == 7
    assert [p.name for p in data_dir.iterdir()] == ["node.json"]  # no temp files left


def test_missing_state_is_none(tmp_path: Path) -> None:
    assert state.load(tmp_path) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must hold a JSON object"),
        ('{"server": "x"}', "is missing or not a string"),
        (
            json.dumps({**NODE.__dict__, "architecture": "riscv"}),
            "architecture 'riscv' is not amd64 or arm64",
        ),
        (json.dumps({**NODE.__dict__, "revision": -1}), "revision must be"),
    ],
)
def test_corrupt_state_is_an_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "node.json").write_text(content)
    with pytest.raises(state.StateError, match=message):
        state.load(tmp_path)


@pytest.mark.security
def test_repr_hides_the_credential() -> None:
    assert "otxn_secret" not in repr(NODE)


def test_signal_sets_the_token_and_abandons_only_an_interruptible_wait() -> None:
    stop = StopToken()
    stop.handle_signal(signal.SIGTERM, None)  # outside a watch: just set
    assert stop.is_set()
    with pytest.raises(Interrupted), stop.interruptible():
        pass  # already stopping: a new watch is not even started
    fresh = StopToken()
    with pytest.raises(Interrupted), fresh.interruptible():
        fresh.handle_signal(signal.SIGINT, None)


def _signal_self_while_blocked(stop: StopToken) -> None:
    with stop.interruptible():
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.pause()  # would block forever without the handler's raise


def test_real_signal_interrupts_a_blocking_call() -> None:
    stop = StopToken()
    old = signal.getsignal(signal.SIGUSR1)
    stop.install((signal.SIGUSR1,))
    try:
        with pytest.raises(Interrupted):
            _signal_self_while_blocked(stop)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert stop.is_set()


def test_system_clock_sleep_returns_when_stopping() -> None:
    stop = StopToken()
    stop.set()
    clock = SystemClock(stop)
    before = clock.monotonic()
    clock.sleep(30)
    assert clock.monotonic() - before < 1
