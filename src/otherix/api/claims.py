"""In-process bookkeeping of Idempotency-Key claims, one ``Claims`` per server
(``Deps.claims``); ``otherix.api.idempotency`` is its only user.

- ``boot``: every claim this server makes carries a token starting with it.
- ``in_flight``: the (principal, key) pairs whose claiming request is still
  running here. A pending claim with this server's boot that is not in flight
  was abandoned (its request failed and the release could not be written,
  the store being down): the next request with that key takes it over at once.
- ``releases``: claims whose release failed on a store error, retried by the
  ``store-watch`` worker until the store answers again, so that other replicas
  need not wait for ``server.idempotency_claim_timeout`` either.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field


@dataclass
class Claims:
    boot: str = field(default_factory=lambda: f"claimed-by:{uuid.uuid4().hex}")
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    releases: dict[tuple[str, str], str] = field(default_factory=dict)

    def token(self) -> str:
        """A new claim token of this server (fits ``content_type``, 100 chars)."""
        return f"{self.boot}:{uuid.uuid4().hex[:16]}"

    def mine(self, token: str) -> bool:
        return token.startswith(self.boot + ":")

    def enter(self, pk: tuple[str, str]) -> bool:
        """Mark ``pk`` in flight; False when a request of this server already runs it."""
        with self.lock:
            if pk in self.in_flight:
                return False
            self.in_flight.add(pk)
            return True

    def leave(self, pk: tuple[str, str]) -> None:
        with self.lock:
            self.in_flight.discard(pk)

    def running(self, pk: tuple[str, str]) -> bool:
        with self.lock:
            return pk in self.in_flight

    def owe_release(self, pk: tuple[str, str], token: str) -> None:
        with self.lock:
            self.releases[pk] = token

    def forget_release(self, pk: tuple[str, str]) -> None:
        with self.lock:
            self.releases.pop(pk, None)

    def owed(self) -> list[tuple[tuple[str, str], str]]:
        with self.lock:
            return list(self.releases.items())
