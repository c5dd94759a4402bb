"""Secret material: password hashing, opaque tokens and their stored digests.

:class:`Passwords` hashes and verifies passwords with the argon2id cost the
composition root gives it (``auth.password_hash_*``, ``api/compose.py``); it is
handed to ``AuthService`` and ``UserService``. A login for an unknown username
verifies against a dummy hash made once with the same hasher, so it costs what
a wrong password costs (no enumeration of usernames by timing). Verification is
CPU-heavy (argon2id: 64 MiB, 3 passes, 4 lanes by default) and must run through
``LoginGuard.run_hash``, never on the event loop.

The token helpers below are pure functions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

API_TOKEN_PREFIX = "otx_"
JOIN_TOKEN_PREFIX = "otxj_"
NODE_CREDENTIAL_PREFIX = "otxn_"
REJOIN_TOKEN_PREFIX = "otxr_"


class Passwords:
    """argon2id hashing with one cost, and a dummy hash of that cost."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher
        self._dummy = hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant-ish time: a missing user pays for one verification with the
        same parameters as a real one, and gets the same False."""
        try:
            ok = self._hasher.verify(stored_hash or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and stored_hash is not None


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def transfer_secret(key: str, ticket: str) -> str:
    """The secret of a disk transfer ticket (a move across nodes): derived from the
    control plane's own key, so it is never stored; only the target node is given it
    (in its desired state) and the source node only its sha256."""
    return hmac.new(key.encode(), b"otherix-transfer:" + ticket.encode(), "sha256").hexdigest()


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
