"""``api.loginguard``: the failed-login windows and the hash queue, on a fake clock."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from otherix.api.loginguard import LoginGuard, default_concurrency
from otherix.errors import RateLimited
from support.clock import FakeClock


def guard(clock: FakeClock, **limits: int) -> LoginGuard:
    values = {"per_user_client": 3, "per_client": 5, "per_user": 4, "concurrency": 1, "queue": 0}
    values.update(limits)
    return LoginGuard(clock=clock, **values)


def refused(g: LoginGuard, user: str, client: str) -> str:
    with pytest.raises(RateLimited) as info:
        g.admit(user, client)
    assert info.value.details == {"retry_after_seconds": 60}
    return info.value.message


def test_each_window_refuses_with_its_own_message():
    clock = FakeClock(monotonic_start=1000.0)
    g = guard(clock)
    for _ in range(3):
        g.admit("Alice", "c1")
    assert refused(g, "alice", "c1") == "too many failed login attempts; retry in a minute"
    g.admit("bob", "c1")
    g.admit("carol", "c1")
    assert "from this address" in refused(g, "dave", "c1")
    g.admit("alice", "c2")  # 4th failure for alice, from another client
    assert "for this user" in refused(g, "alice", "c3")


def test_a_window_slides():
    clock = FakeClock(monotonic_start=1000.0)
    g = guard(clock)
    for _ in range(3):
        g.admit("alice", "c1")
    clock.advance(59.9)
    refused(g, "alice", "c1")
    clock.advance(0.2)
    g.admit("alice", "c1")


def test_success_clears_its_user_client_window_and_takes_back_its_own_entry():
    clock = FakeClock(monotonic_start=1000.0)
    g = guard(clock, per_client=3)
    g.admit("alice", "c1")
    g.admit("alice", "c1")
    right = g.admit("alice", "c1")
    g.succeeded(right)
    g.admit("alice", "c1")  # the user+client window is empty again
    # the client window holds the two failures and this one: full at 3
    assert "from this address" in refused(g, "bob", "c1")


def test_a_refund_gives_every_window_its_entry_back():
    clock = FakeClock(monotonic_start=1000.0)
    g = guard(clock, per_user_client=1)
    g.refund(g.admit("alice", "c1"))
    g.admit("alice", "c1")


def test_stale_keys_are_swept():
    clock = FakeClock(monotonic_start=1000.0)
    g = guard(clock, per_client=10**6, per_user=10**6)
    for i in range(5000):
        g.admit(f"user-{i}", "c1")
        clock.advance(0.1)  # 500 s in all: old keys fall out of their window
    assert g.tracked_keys() < 2 * 5000


def test_the_hash_queue_refuses_when_full_and_says_when_to_retry():
    g = guard(FakeClock(monotonic_start=1000.0), concurrency=1, queue=1)
    release = threading.Event()
    outcomes: list[object] = []

    async def main() -> None:
        async def one(client: str) -> None:
            try:
                outcomes.append(await g.run_hash(release.wait, client))
            except RateLimited as exc:
                outcomes.append(exc.details)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, f"c{i}")
            await anyio.sleep(0.2)
            assert len(outcomes) == 1  # the third, refused at once
            release.set()

    anyio.run(main)
    assert outcomes[0] == {"retry_after_seconds": 1, "reason": "login_queue_full"}
    assert outcomes[1:] == [True, True]


def test_one_client_holds_at_most_its_share_of_the_queue():
    g = guard(FakeClock(monotonic_start=1000.0), concurrency=1, queue=10, in_flight_per_client=2)
    release = threading.Event()
    outcomes: list[tuple[str, Any]] = []

    async def main() -> None:
        async def one(client: str) -> None:
            try:
                outcomes.append((client, await g.run_hash(release.wait, client)))
            except RateLimited as exc:
                outcomes.append((client, exc.details))

        async with anyio.create_task_group() as tg:
            for client in ("a", "a", "a", "b"):
                tg.start_soon(one, client)
            await anyio.sleep(0.2)
            release.set()

    anyio.run(main)
    assert outcomes[0] == ("a", {"retry_after_seconds": 1, "reason": "login_client_busy"})
    assert sorted(outcomes[1:]) == [("a", True), ("a", True), ("b", True)]
    assert g._client_in_flight == {}  # every place given back


def test_default_concurrency_leaves_a_core():
    assert default_concurrency() >= 1
