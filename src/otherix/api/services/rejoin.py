"""Re-enrolment: a node that lost its credential comes back as itself.

A node whose ``{data_dir}/node.json`` is lost or damaged has no credential,
and deleting and re-joining it would orphan its pools. Instead an admin runs
``otherix node reset-credentials NODE``: :func:`reset_credentials` makes a
one-time, short-lived re-enrol token (``otxr_…``, stored as its sha256 like
join tokens, at most one per node: a newer one replaces an older one). On the
node, ``otherix-agent bootstrap --rejoin-token`` calls the anonymous
``POST /v1/nodes/rejoin`` (:func:`rejoin`; the token is the proof): the same
node row (same id, same pools) gets a new credential and the old one stops
working, in one transaction. Every refusal (unknown, used, expired, another
node's token, a deleted node's) raises before anything is written.

Called by ``api/routes/nodes.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from otherix.api.clock import Clock
from otherix.api.services import secrets
from otherix.api.services.nodes import NodeService
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.errors import Conflict, Unauthenticated
from otherix.models.nodes import NodeCredentialReset, NodeJoined, NodeRejoin, NodeRejoinToken
from otherix.store import Database
from otherix.store.ports.nodes import NewRejoinToken, NodeStore

log = logging.getLogger(__name__)


@dataclass(kw_only=True, eq=False)
class RejoinService:
    """The rejoin service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    node_service: NodeService

    def reset_credentials(
        self, name: str, created_by: str, body: NodeCredentialReset
    ) -> NodeRejoinToken:
        """A one-time re-enrol token for the node (shown once).

        The node's current credential keeps working until the token is redeemed,
        so asking for a token by mistake locks nobody out."""
        row = self.node_service.get_node_row(name)
        now = self.clock.now()
        ttl = body.ttl_seconds or self.settings.agents.rejoin_token_ttl
        token = secrets.new_token(secrets.REJOIN_TOKEN_PREFIX)
        stored = NewRejoinToken(
            node_id=row.id,
            token_hash=secrets.digest(token),
            prefix=token[:12],
            created_by=created_by,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        with self.db.write() as conn:
            self.node_store.put_rejoin_token(conn, stored)
        log.info("re-enrol token made for node %s by user %s", row.name, created_by)
        return NodeRejoinToken(
            node_id=stored.node_id,
            node=row.name,
            token=token,
            prefix=stored.prefix,
            created_at=stored.created_at,
            expires_at=stored.expires_at,
        )

    def rejoin(self, body: NodeRejoin) -> NodeJoined:
        """Redeem a re-enrol token: a new credential for the token's node, the old
        one revoked in the same transaction; the credential is shown once."""
        now = self.clock.now()
        credential = secrets.new_token(secrets.NODE_CREDENTIAL_PREFIX)
        token_hash = secrets.digest(body.rejoin_token)
        with self.db.write() as conn:
            tok = None
            if body.rejoin_token.startswith(secrets.REJOIN_TOKEN_PREFIX):
                tok = self.node_store.get_rejoin_token_by_hash(conn, token_hash)
            if tok is None:
                raise _refused(
                    "unknown re-enrol token (a newer one replaces an older one)",
                    "rejoin_token_unknown",
                )
            if tok.used_at is not None:
                raise _refused("re-enrol token has been used already", "rejoin_token_used")
            if tok.expires_at <= now:
                raise _refused("re-enrol token has expired", "rejoin_token_expired")
            node = self.node_store.get_node(conn, tok.node_id, include_deleted=True)
            if node is None or node.deleted_at is not None:
                raise _refused("the node of this re-enrol token has been deleted", "node_deleted")
            if body.name is not None and body.name.lower() != node.name.lower():
                raise _refused(
                    f"this re-enrol token is for node {node.name!r}, not {body.name!r}",
                    "rejoin_token_node_mismatch",
                    node=node.name,
                )
            registered = node.architecture
            if registered and body.architecture and registered != body.architecture:
                raise Conflict(
                    "architecture mismatch",
                    {
                        "reason": "architecture_mismatch",
                        "registered": registered,
                        "reported": body.architecture,
                    },
                )
            # Both compare-and-set: a concurrent redemption of the same token wins once.
            if not self.node_store.use_rejoin_token(
                conn, token_hash, now
            ) or not self.node_store.replace_credential(
                conn, node.id, node.credential_hash, secrets.digest(credential), now
            ):
                raise _refused("re-enrol token has been used already", "rejoin_token_used")
        log.warning("node %s re-enrolled with a new credential; the old one is revoked", node.name)
        self.hub.publish([node.id])  # a watch held with the old credential answers now
        return NodeJoined(
            node_id=node.id,
            name=node.name,
            credential=credential,
            heartbeat_interval_seconds=self.settings.agents.heartbeat_interval,
        )


def _refused(message: str, reason: str, **details: Any) -> Unauthenticated:
    return Unauthenticated(message, {"reason": reason, **details})
