"""Secret material: password hashing, opaque tokens and their stored digests.

Called by ``api.services.auth`` and ``api.services.users``. A login for an
unknown username verifies against a dummy hash made with the current hasher's
own parameters, so it costs what a wrong password costs (no enumeration of
usernames by timing). Verification is CPU-heavy (argon2id: 64 MiB, 3 passes,
4 lanes by default) and must run through ``LoginGuard.run_hash``, never on the
event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's current defaults
_dummy: tuple[PasswordHasher, str] | None = (_hasher, _hasher.hash(secrets.token_urlsafe(16)))

API_TOKEN_PREFIX = "otx_"
JOIN_TOKEN_PREFIX = "otxj_"
NODE_CREDENTIAL_PREFIX = "otxn_"
REJOIN_TOKEN_PREFIX = "otxr_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _dummy_hash() -> str:
    """A hash with the current hasher's parameters (tests swap the hasher for a cheap one)."""
    global _dummy
    hasher = _hasher
    if _dummy is None or _dummy[0] is not hasher:
        _dummy = (hasher, hasher.hash(secrets.token_urlsafe(16)))
    return _dummy[1]


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-ish time: a missing user pays for one verification with the
    same parameters as a real one, and gets the same False."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
