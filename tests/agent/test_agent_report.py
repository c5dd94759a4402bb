"""PoolState (otherix.agent.report): allowlist, re-rooting, capacity hysteresis, digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from otherix.agent import pools
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import (
    MAX_ERROR_CHARS,
    SIGNIFICANT_BYTES,
    PoolState,
    _to_wire,
    digest_of,
    settle,
)
from otherix.models.heartbeat import DeclaredPool, PoolReport

GiB = 1 << 30
MiB = 1 << 20


def ready(cap: int, avail: int, name: str = "p") -> PoolReport:
    return PoolReport(
        name=name, reconciliation_status="ready", capacity_bytes=cap, available_bytes=avail
    )


SETTLE_CASES = [
    pytest.param(None, ready(100 * GiB, 50 * GiB), "new", id="first-report"),
    pytest.param(
        ready(100 * GiB, 50 * GiB), ready(100 * GiB, 50 * GiB - 10 * MiB), "old", id="small-drift"
    ),
    pytest.param(
        ready(100 * GiB, 50 * GiB), ready(100 * GiB, 50 * GiB - 65 * MiB), "new", id="over-64MiB"
    ),
    pytest.param(
        ready(100 * GiB, 50 * GiB), ready(100 * GiB, 50 * GiB + 64 * MiB), "old", id="exactly-64MiB"
    ),
    # small pool: 1% of 2 GiB (~20 MiB) is the tighter bound
    pytest.param(ready(2 * GiB, GiB), ready(2 * GiB, GiB - 21 * MiB), "new", id="over-1pct"),
    pytest.param(ready(2 * GiB, GiB), ready(2 * GiB, GiB - 20 * MiB), "old", id="under-1pct"),
    pytest.param(ready(100 * GiB, 50 * GiB), ready(101 * GiB, 50 * GiB), "new", id="capacity-grew"),
    pytest.param(
        ready(100 * GiB, 50 * GiB),
        PoolReport(name="p", reconciliation_status="failed", reconciliation_error="boom"),
        "new",
        id="status-change",
    ),
]


@pytest.mark.parametrize(("previous", "observed", "expected"), SETTLE_CASES)
def test_settle(previous, observed, expected) -> None:
    result = settle(previous, observed)
    assert result is (observed if expected == "new" else previous)


def test_absolute_threshold_is_64_mib() -> None:
    assert 64 * MiB == SIGNIFICANT_BYTES


def test_digest_is_order_sensitive_canonical_sha256() -> None:
    a, b = ready(1, 1, "a"), ready(2, 2, "b")
    assert digest_of([a, b]) == digest_of([a.model_copy(), b.model_copy()])
    assert digest_of([a, b]) != digest_of([b, a])
    assert len(digest_of([])) == 64


def declared(name: str, path: str) -> DeclaredPool:
    return DeclaredPool(name=name, type="local_dir", path=path)


def test_reports_sorted_case_insensitively_and_changes_detected(tmp_path: Path) -> None:
    state = PoolState(PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"])
    pools = [declared("beta", f"{tmp_path}/b"), declared("Alpha", f"{tmp_path}/a")]
    assert state.reconcile(pools) is True
    assert [r.name for r in state.reports] == ["Alpha", "beta"]
    first = state.digest
    assert state.reconcile(pools) is False  # idempotent pass: nothing to report
    assert state.digest == first
    assert state.reconcile(pools[:1]) is True
    assert [r.name for r in state.reports] == ["beta"]


@pytest.mark.security
def test_path_outside_the_allowlist_is_refused(tmp_path: Path) -> None:
    state = PoolState(
        PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/pools/"]
    )
    state.reconcile([declared("evil", f"{tmp_path}/pools-evil/x")])
    (report,) = state.reports
    assert report.reconciliation_status == "failed"
    assert report.reconciliation_error == (
        f'pool "evil": path "{tmp_path}/pools-evil/x" is outside this node\'s allowed path '
        f'prefixes ["{tmp_path}/pools/"] (storage.allowed_path_prefixes); nothing was created'
    )
    assert not (tmp_path / "pools-evil").exists()
    assert state.reconciler.lookup("evil") is None


def test_relative_path_gets_the_reconcilers_message(tmp_path: Path) -> None:
    state = PoolState(PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"])
    state.reconcile([declared("r", "relative/x")])
    assert (
        state.reports[0].reconciliation_error
        == 'pool "r": root must be absolute (got "relative/x")'
    )


def test_host_root_rebases_declared_paths(tmp_path: Path) -> None:
    root = tmp_path / "host"
    root.mkdir()
    state = PoolState(
        PoolReconciler(protected=ProtectedRoots()),
        allowed_prefixes=["/var/lib/otherix/pools/"],
        host_root=root,
    )
    state.reconcile([declared("default", "/var/lib/otherix/pools/default")])
    assert state.reports[0].reconciliation_status == "ready"
    assert (root / "var/lib/otherix/pools/default/scratch").is_dir()
    registered = state.reconciler.lookup("default")
    assert registered is not None
    assert registered.path == f"{root}/var/lib/otherix/pools/default"


def test_long_errors_are_cut_to_the_wire_limit() -> None:
    wire = _to_wire(pools.PoolReport.failed("x", "e" * 10_000))
    assert len(wire.reconciliation_error or "") == MAX_ERROR_CHARS


def test_scan_adopts_fresh_numbers_past_the_hysteresis(tmp_path: Path, monkeypatch) -> None:
    state = PoolState(PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"])
    state.reconcile([declared("p", f"{tmp_path}/p")])
    before = state.digest
    fresh = pools.PoolReport("p", "ready", None, 100 * GiB, 50 * GiB - MiB)  # a 1 MiB drift
    monkeypatch.setattr(state.reconciler, "scan", lambda name: fresh)
    assert state.scan("P") is fresh
    assert (state.reports[0].capacity_bytes, state.reports[0].available_bytes) == (
        100 * GiB,
        50 * GiB - MiB,
    )
    assert state.digest != before


def test_scan_of_an_unregistered_pool_raises(tmp_path: Path) -> None:
    state = PoolState(PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"])
    with pytest.raises(pools.PoolUnknownError):
        state.scan("nope")


def test_an_unreportable_pool_is_left_out_instead_of_breaking_the_pass(
    tmp_path: Path, caplog
) -> None:
    state = PoolState(PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/"])
    long_name = "n" * 256  # over the heartbeat model's 255-character limit
    state.reconcile([declared(long_name, f"{tmp_path}/long"), declared("ok", f"{tmp_path}/ok")])
    assert [r.name for r in state.reports] == ["ok"]
    assert any(r.getMessage() == "pool cannot be reported" for r in caplog.records)
