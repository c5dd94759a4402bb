"""Figures for README's "Reliability" section, recorded by the tests that earn them.

A fault, fuzz or security test takes the ``reliability`` fixture and records
what it actually did, counted as it happened (never a constant)::

    def test_x(reliability):
        ...
        reliability.record(
            "kill -9 agent mid-download",
            injected=len(kill_points),      # faults injected (kills, partitions, ...)
            survived=survived,              # of those, how many the system came through
            checked=len(acked),             # records checked afterwards (pools, entries, ...)
            lost=len(missing),              # of those, how many were lost (must be 0)
            detail="12 kill points between 1% and 97% of a 24 MiB image",
        )

Rows add up per name across a session (a test parametrised over SQLite and
PostgreSQL contributes twice). A record travels in the test's report
(``user_properties``), so the figures add up the same with pytest-xdist
workers. At the end of the run the table is printed in the terminal summary
and written to ``tests/results/reliability.json`` (git-ignored), which is
where the README's figures come from.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "results" / "reliability.json"


@dataclass
class Row:
    suite: str
    name: str
    injected: int = 0
    survived: int = 0
    checked: int = 0
    lost: int = 0
    runs: int = 0
    detail: str = ""


class Recorder:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    def add(
        self,
        suite: str,
        name: str,
        *,
        injected: int = 0,
        survived: int = 0,
        checked: int = 0,
        lost: int = 0,
        detail: str = "",
    ) -> None:
        row = self.rows.setdefault((suite, name), Row(suite, name))
        row.injected += injected
        row.survived += survived
        row.checked += checked
        row.lost += lost
        row.runs += 1
        if detail and detail not in row.detail:
            row.detail = f"{row.detail}; {detail}" if row.detail else detail


_RECORDER = Recorder()
_KEY = "otherix_reliability"


class ReliabilityLog:
    """What a test sees: ``record`` files under the test's suite (its folder)."""

    def __init__(self, node: pytest.Item, suite: str) -> None:
        self.node = node
        self.suite = suite

    def record(
        self,
        name: str,
        *,
        injected: int = 0,
        survived: int = 0,
        checked: int = 0,
        lost: int = 0,
        detail: str = "",
    ) -> None:
        self.node.user_properties.append(
            (
                _KEY,
                {
                    "suite": self.suite,
                    "name": name,
                    "injected": injected,
                    "survived": survived,
                    "checked": checked,
                    "lost": lost,
                    "detail": detail,
                },
            )
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The teardown report carries everything the test recorded, once.
    if report.when != "teardown":
        return
    for key, value in report.user_properties:
        if key == _KEY:
            fields = dict(cast(dict[str, Any], value))
            _RECORDER.add(fields.pop("suite"), fields.pop("name"), **fields)


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> ReliabilityLog:
    item = request.node
    assert isinstance(item, pytest.Item)
    return ReliabilityLog(item, Path(str(item.path)).parent.name)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| suite | what | runs | injected | survived | records checked | lost | detail |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.suite} | {r.name} | {r.runs} | {r.injected:,} | {r.survived:,} "
            f"| {r.checked:,} | {r.lost:,} | {r.detail} |"
        )
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = sorted(_RECORDER.rows.values(), key=lambda r: (r.suite, r.name))
    if not rows or hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "written_at": datetime.now(UTC).isoformat(),
                "machine": f"{platform.node()} | Python {platform.python_version()}",
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(markdown(rows))
    terminalreporter.write_line(f"(written to {RESULTS})")
