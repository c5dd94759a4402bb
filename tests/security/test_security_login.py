"""Login brute force: the failed-login limit with its default setting, and under concurrency.

``tests/api/test_api_auth.py`` checks the limit with ``login_rate_per_minute: 3``,
one attempt at a time. Here the default (10 a minute per username and client)
is counted out, and the same limit is tried by an attacker who sends the
attempts in parallel: the number of passwords actually checked (answers 401
rather than 429) must not exceed the limit either way.

The target user's password hash has production cost (argon2id library
defaults), as a real one would: the suite otherwise hashes cheaply, which
would hide how long each check keeps the door open.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from argon2 import PasswordHasher

from otherix.store import schema
from otherix.store.tx import sql
from support.server import ADMIN, ApiServer, make_settings

pytestmark = pytest.mark.security


def start(tmp_path, **overrides) -> ApiServer:
    server = ApiServer(make_settings(tmp_path / "api", **overrides)).start()
    server.services.user_service.ensure_bootstrap_admin(*ADMIN)
    with server.deps.db.write() as conn:  # a production-cost hash, as a real user has
        sql(conn).execute(
            schema.users.update()
            .where(schema.users.c.username == ADMIN[0])
            .values(password_hash=PasswordHasher().hash(ADMIN[1]))
        )
    return server


def attempt(url: str, password: str, username: str = ADMIN[0]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/auth/login", json={"username": username, "password": password}, timeout=60
    )


@pytest.mark.slow
def test_the_default_limit_is_ten_failed_logins_a_minute(tmp_path, reliability):
    server = start(tmp_path)
    try:
        answers = [attempt(server.url, f"guess-{i}") for i in range(25)]
        right = attempt(server.url, ADMIN[1])
        other = attempt(server.url, "x", username="someone-else")
    finally:
        server.stop()
    codes = [r.status_code for r in answers]
    reliability.record(
        "login brute force, one at a time (default limit)",
        injected=len(answers),
        survived=codes.count(429),
        checked=codes.count(401),
        lost=max(0, codes.count(401) - 10),
        detail="25 wrong passwords for one user; 401 = a password was checked",
    )
    assert codes == [401] * 10 + [429] * 15
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert answers[-1].json()["error"]["details"] == {"retry_after_seconds": 60}
    assert right.status_code == 429  # even the right password waits
    assert other.status_code == 401  # per username: others are not locked out


def test_parallel_attempts_do_not_get_past_the_limit(tmp_path, reliability):
    server = start(tmp_path, **{"auth.login_rate_per_minute": 3})
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            codes = Counter(
                r.status_code for r in pool.map(lambda i: attempt(server.url, f"p-{i}"), range(20))
            )
        after = attempt(server.url, ADMIN[1]).status_code
    finally:
        server.stop()
    reliability.record(
        "login brute force, 20 in parallel (limit 3)",
        injected=sum(codes.values()),
        survived=codes[429],
        checked=codes[401],
        lost=max(0, codes[401] - 3),
        detail="401 = a password was checked; more than 3 is a bypass",
    )
    assert set(codes) <= {401, 429}, codes
    assert after == 429
    assert codes[401] <= 3, codes
