"""Dry runs of the create endpoints: the same create, rolled back.

``POST /v1/storage-pools?dry_run=true`` and ``POST /v1/vms?dry_run=true``
run the service's create unchanged up to and including its inserts, so every
check decides exactly as it would for a real create (validation, lookups,
the allowlist, the store's own unique constraints, the default-pool
substitution), and then raise :class:`Rehearsal` inside the write
transaction: the transaction rolls back and the service returns the answer
the exception carries. Nothing that happens after the commit of a real
create (a watch wake-up, a placement, a task) happens. The Idempotency-Key
middleware keeps no record of a dry run (``api.idempotency``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Rehearsal"]


class Rehearsal(Exception):
    """Raised inside a write transaction to roll a dry run back; holds the answer."""

    def __init__(self, answer: Any) -> None:
        super().__init__("dry run")
        self.answer = answer
