"""Running a Hypothesis property and recording what it did, for the ``test_fuzz_*`` modules.

``run_property`` calls ``body`` once per generated example, derandomized (so a CI
run is reproducible) and without the example database. ``body`` returns a
label for the example's outcome (``"accepted"``, ``"refused"``...); the counts
are kept as the examples run and go to the ``reliability`` table:
``injected`` = examples run, ``survived`` = examples whose assertions held,
``checked`` = examples with the ``checked`` outcome (the interesting side).
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from otherix.models.pagination import encode_cursor


def run_property(
    reliability: Any,
    name: str,
    strategy: st.SearchStrategy[Any],
    body: Callable[[Any], str],
    *,
    max_examples: int = 300,
    checked: str = "refused",
    detail: str | Callable[[], str] = "",
) -> Counter[str]:
    seen: Counter[str] = Counter()

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(strategy)
    def prop(example: Any) -> None:
        seen["ran"] += 1
        outcome = body(example)
        seen[outcome] += 1
        seen["held"] += 1

    prop()
    outcomes = {k: v for k, v in sorted(seen.items()) if k not in ("ran", "held")}
    extra = detail() if callable(detail) else detail
    reliability.record(
        f"hypothesis: {name}",
        injected=seen["ran"],
        survived=seen["held"],
        checked=seen[checked],
        lost=seen["ran"] - seen["held"],
        detail=", ".join(f"{v} {k}" for k, v in outcomes.items()) + (f"; {extra}" if extra else ""),
    )
    return seen


# strategies shared by the modules ----------------------------------------------------------

#: aware datetimes in a few offsets, as rows' ``created_at`` could be
WHEN = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-3))]),
)


@st.composite
def mutated_cursors(draw: st.DrawFn) -> str:
    """A real cursor with one edit: a character replaced, inserted or dropped, or cut short."""
    cursor = encode_cursor(draw(WHEN), str(draw(st.uuids())))
    i = draw(st.integers(0, len(cursor) - 1))
    char = draw(st.sampled_from(list(string.ascii_letters + string.digits + "-_=+/. ")))
    edit = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    if edit == "replace":
        return cursor[:i] + char + cursor[i + 1 :]
    if edit == "insert":
        return cursor[:i] + char + cursor[i:]
    if edit == "delete":
        return cursor[:i] + cursor[i + 1 :]
    return cursor[:i]
