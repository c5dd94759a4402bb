"""Logins that cannot starve the server (issue 13.5), on the production server.

The server here is built by ``otherix.api.server.make_server``, the uvicorn
configuration ``otherix-api serve`` runs (the test suite's ``ApiServer``
leaves uvicorn's defaults, which believe ``X-Forwarded-For`` from
127.0.0.1). An attacker on one client sends parallel wrong-password logins
for 50 user names, rotates ``X-Forwarded-For`` and ``Forwarded`` to look like
many clients, spreads guesses for one user over many (trusted) addresses, and
fills the password-hash queue. ``checked`` counts passwords actually verified
(401); ``lost`` counts what got past a limit.

Timing (``/healthz`` p99 during a flood) is a benchmark, not a test:
``python -m bench --only login_flood``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import argon2
import httpx
import pytest
from argon2 import PasswordHasher, extract_parameters

from otherix.api.bootstrap import open_deps
from otherix.api.compose import build_services
from otherix.api.deps import Deps
from otherix.api.server import make_server
from otherix.api.services.secrets import Passwords
from support.reliability import ReliabilityLog
from support.server import ADMIN, free_port, make_settings

pytestmark = pytest.mark.security

CLIENT_LIMIT = "too many failed login attempts from this address; retry in a minute"
USER_LIMIT = "too many failed login attempts for this user; retry in a minute"
USER_CLIENT_LIMIT = "too many failed login attempts; retry in a minute"


@dataclass
class Served:
    url: str
    deps: Deps


@contextmanager
def production_server(tmp_path, **overrides: Any) -> Iterator[Served]:
    listen = f"127.0.0.1:{free_port()}"
    deps = open_deps(make_settings(tmp_path / "api", **{"server.listen": listen, **overrides}))
    services = build_services(deps)
    services.user_service.ensure_bootstrap_admin(*ADMIN)
    server = make_server(deps, services)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://{listen}", deps)
    finally:
        deps.hub.close()
        server.should_exit = True
        thread.join(timeout=15)
        deps.db.close()


def attempt(
    url: str, username: str, password: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"username": username, "password": password}
    return httpx.post(f"{url}/v1/auth/login", json=body, headers=headers or {}, timeout=60)


def parallel(n: int, fn) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


def messages(answers: list[httpx.Response]) -> Counter[str]:
    return Counter(r.json()["error"]["message"] for r in answers if r.status_code == 429)


def tally(
    reliability: ReliabilityLog,
    what: str,
    answers: list[httpx.Response],
    *,
    limit: int,
    detail: str,
) -> Counter[int]:
    """The answers' status codes, recorded: a 429 survived, a 401 is a password checked,
    and lost are the 401s past ``limit`` and any answer that is neither."""
    codes = Counter(r.status_code for r in answers)
    reliability.record(
        what,
        injected=len(answers),
        survived=codes[429],
        checked=codes[401],
        lost=max(0, codes[401] - limit) + sum(c for s, c in codes.items() if s not in (401, 429)),
        detail=detail,
    )
    return codes


def test_parallel_logins_for_50_user_names_from_one_client_hit_the_client_limit(
    tmp_path, reliability
):
    with production_server(tmp_path) as srv:  # every limit at its default
        answers = parallel(50, lambda i: attempt(srv.url, f"user-{i}", "guess"))
        right = attempt(srv.url, *ADMIN)
        # refused before the body is read: even a malformed one, on a kept-alive connection
        with httpx.Client(base_url=srv.url, timeout=30) as keep_alive:
            shielded = [
                keep_alive.post("/v1/auth/login", content=b"{not json" * 1000) for _ in range(3)
            ]
            health = keep_alive.get("/healthz").status_code
    codes = tally(
        reliability,
        "login flood: 50 user names in parallel from one client",
        answers,
        limit=30,
        detail="default limits: 30 failed a minute and 2 in flight per client; 401 = checked",
    )
    reasons = Counter(
        (r.json()["error"]["details"].get("reason"), r.json()["error"]["message"])
        for r in answers
        if r.status_code == 429
    )
    assert set(codes) <= {401, 429}, codes
    assert codes[401] <= 30, codes
    assert set(reasons) <= {
        (None, CLIENT_LIMIT),
        ("login_client_busy", "too many logins in progress from this address; retry shortly"),
    }, reasons
    assert all(r.headers["retry-after"].isdigit() for r in answers if r.status_code == 429)
    # every attempt counted, refused or not: the address is blocked for every name now
    assert (right.status_code, right.json()["error"]["message"]) == (429, CLIENT_LIMIT)
    assert right.headers["retry-after"] == "60"
    assert [(r.status_code, r.json()["error"]["message"]) for r in shielded] == [
        (429, CLIENT_LIMIT)
    ] * 3
    assert health == 200


def test_the_client_window_counts_exactly(tmp_path, reliability):
    # no in-flight cap and a long queue, so that only the window refuses: the count is exact
    settings = {"auth.password_hash_queue": 100, "auth.login_in_flight_per_client": 100}
    with production_server(tmp_path, **settings) as srv:
        answers = parallel(50, lambda i: attempt(srv.url, f"user-{i}", "guess"))
    codes = tally(
        reliability,
        "login flood: 50 user names in parallel, window only",
        answers,
        limit=30,
        detail="auth.login_rate_per_client_per_minute 30 (default)",
    )
    assert codes == {401: 30, 429: 20}, codes
    assert messages(answers) == {CLIENT_LIMIT: 20}


def test_rotating_forwarded_headers_without_trusted_proxies_gets_nothing(tmp_path, reliability):
    def spoofed(i: int) -> dict[str, str]:
        if i % 2:
            return {"X-Forwarded-For": f"198.51.100.{i}"}
        return {"Forwarded": f"for=198.51.100.{i}", "X-Forwarded-For": f"203.0.113.{i}"}

    with production_server(tmp_path) as srv:  # server.trusted_proxies: none (default)
        answers = [attempt(srv.url, ADMIN[0], f"guess-{i}", spoofed(i)) for i in range(30)]
    codes = tally(
        reliability,
        "login limit vs rotated X-Forwarded-For / Forwarded from 127.0.0.1",
        answers,
        limit=10,
        detail="30 guesses for one user, each with another forwarded address; no trusted proxies",
    )
    assert codes == {401: 10, 429: 20}, codes
    assert messages(answers) == {USER_CLIENT_LIMIT: 20}


def test_behind_a_trusted_proxy_the_forwarded_address_counts(tmp_path, reliability):
    settings = {"server.trusted_proxies": ["127.0.0.1"]}
    with production_server(tmp_path, **settings) as srv:
        one = {"X-Forwarded-For": "203.0.113.5"}
        first = [attempt(srv.url, ADMIN[0], f"g-{i}", one) for i in range(10)]
        blocked = attempt(srv.url, ADMIN[0], "g", one)
        # a client cannot escape by writing its own chain: the proxy appends the real one
        prepended = attempt(srv.url, ADMIN[0], "g", {"X-Forwarded-For": "1.2.3.4, 203.0.113.5"})
        other = attempt(srv.url, ADMIN[0], "g", {"X-Forwarded-For": "203.0.113.6"})
        v6 = {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}
        v6_answers = [attempt(srv.url, ADMIN[0], f"g-{i}", v6) for i in range(10)]
        # the same /64: one client
        v6_neighbour = attempt(srv.url, ADMIN[0], "g", {"Forwarded": 'for="[2001:db8::2]"'})
        ok = attempt(srv.url, *ADMIN, {"X-Forwarded-For": "203.0.113.7"})
    refused = [blocked, prepended, v6_neighbour]
    reliability.record(
        "forwarded address behind a trusted proxy",
        injected=len(refused),
        survived=sum(r.status_code == 429 for r in refused),
        checked=len(first) + len(v6_answers) + 2,
        lost=sum(r.status_code != 429 for r in refused),
        detail="server.trusted_proxies [127.0.0.1]; X-Forwarded-For and Forwarded, IPv6 by /64",
    )
    assert [r.status_code for r in first] == [401] * 10
    assert [r.status_code for r in refused] == [429, 429, 429]
    assert other.status_code == 401
    assert [r.status_code for r in v6_answers] == [401] * 10
    assert ok.status_code == 200, ok.text


def test_guesses_for_one_user_from_many_addresses_hit_the_user_limit(tmp_path, reliability):
    settings = {"server.trusted_proxies": ["127.0.0.0/8"], "auth.password_hash_queue": 100}
    # (40 addresses: one attempt each, so the per-client in-flight cap never applies)
    with production_server(tmp_path, **settings) as srv:
        answers = parallel(
            40,
            lambda i: attempt(
                srv.url, ADMIN[0], f"g-{i}", {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            ),
        )
    codes = tally(
        reliability,
        "login guesses for one user from 40 addresses",
        answers,
        limit=30,
        detail="auth.login_rate_per_user_per_minute 30 (default)",
    )
    assert codes == {401: 30, 429: 10}, codes
    assert messages(answers) == {USER_LIMIT: 10}


@pytest.mark.slow
def test_a_full_hash_queue_refuses_at_once_with_retry_after(tmp_path, reliability):
    # one verification at a time, nobody waiting, and a slow hash: parallel logins overlap
    settings = {
        "auth.password_hash_time_cost": 12,
        "auth.password_hash_memory_kib": argon2.DEFAULT_MEMORY_COST,
        "auth.password_hash_parallelism": 1,
        "auth.password_hash_concurrency": 1,
        "auth.password_hash_queue": 0,
        "server.trusted_proxies": ["127.0.0.1"],
    }
    with production_server(tmp_path, **settings) as srv:  # six clients, one login each
        answers = parallel(
            6,
            lambda i: attempt(srv.url, f"user-{i}", "guess", {"X-Forwarded-For": f"10.0.0.{i}"}),
        )
        after = attempt(srv.url, ADMIN[0], "guess")  # the queue drained: checked again
    full = [r for r in answers if r.status_code == 429]
    clean = [
        r
        for r in full
        if r.json()["error"]["details"]["reason"] == "login_queue_full"
        and r.headers["retry-after"] == str(r.json()["error"]["details"]["retry_after_seconds"])
        and int(r.headers["retry-after"]) >= 1
    ]
    reliability.record(
        "login hash queue full",
        injected=len(answers),
        survived=len(full),
        checked=sum(r.status_code == 401 for r in answers),
        lost=len(full) - len(clean) + sum(r.status_code not in (401, 429) for r in answers),
        detail="password_hash_concurrency 1, password_hash_queue 0, 6 parallel logins",
    )
    assert {r.status_code for r in answers} == {401, 429}, [r.text for r in answers]
    assert clean == full
    assert after.status_code == 401


class SpyHasher(PasswordHasher):
    """Counts verifications and the parameters of each hash verified."""

    def __init__(self) -> None:
        super().__init__(time_cost=2, memory_cost=1024, parallelism=2)
        self.verified: list[Any] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(extract_parameters(hash if isinstance(hash, str) else hash.decode()))
        return super().verify(hash, password)


def test_an_unknown_user_costs_the_same_verification_as_a_wrong_password():
    spy = SpyHasher()
    passwords = Passwords(spy)
    real = passwords.hash("the-right-password")
    assert passwords.verify(real, "wrong") is False
    assert passwords.verify(None, "wrong") is False
    assert passwords.verify(None, "the-right-password") is False
    wrong, unknown, unknown_right = spy.verified
    assert wrong == unknown == unknown_right == extract_parameters(real)
