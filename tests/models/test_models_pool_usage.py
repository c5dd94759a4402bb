"""The heartbeat's pool ``usage`` (models.heartbeat.PoolUsage): optional, four
non-negative 64-bit byte counts, nothing else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from otherix.models.heartbeat import PoolReport
from otherix.models.strictjson import INT64_MAX

USAGE = {
    "vm_disk_bytes": 1,
    "vm_provisioned_bytes": 2,
    "image_cache_bytes": 3,
    "scratch_bytes": 0,
}
BASE = {"name": "p", "reconciliation_status": "ready"}


def test_usage_is_optional_and_round_trips() -> None:
    assert PoolReport.model_validate(BASE).usage is None
    report = PoolReport.model_validate({**BASE, "usage": USAGE})
    assert report.model_dump(mode="json")["usage"] == USAGE
    top = PoolReport.model_validate({**BASE, "usage": {**USAGE, "vm_disk_bytes": INT64_MAX}})
    assert top.usage is not None
    assert top.usage.vm_disk_bytes == INT64_MAX


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({**USAGE, "scratch_bytes": -1}, id="negative"),
        pytest.param({**USAGE, "vm_disk_bytes": INT64_MAX + 1}, id="over-int64"),
        pytest.param({k: v for k, v in USAGE.items() if k != "image_cache_bytes"}, id="missing"),
        pytest.param({**USAGE, "other_bytes": 5}, id="unknown-key"),
    ],
)
def test_bad_usage_is_refused(usage) -> None:
    with pytest.raises(ValidationError):
        PoolReport.model_validate({**BASE, "usage": usage})
