"""``ApiSettings``: every configuration key of ``otherix-api`` with its default.

Loaded by ``otherix.api.main`` through :func:`otherix.config.load_config`;
``docs/configuration.md`` lists the same keys. Validation happens here, at
start, so a bad value stops the process with the key's name.
"""

from __future__ import annotations

from pathlib import Path

import argon2
from pydantic import Field, field_validator, model_validator

from otherix.api.forwarded import parse_networks
from otherix.config import AllowedPrefixes, Duration, Section, default_prefixes
from otherix.domain.names import validate_pool_name


class ServerSection(Section):
    listen: str = "0.0.0.0:8080"
    shutdown_grace: Duration = 30.0
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    #: PostgreSQL: a pending Idempotency-Key claim older than this belongs to a
    #: request whose replica died, and the next request with the key takes it
    #: over. (SQLite has one process: claims of an earlier process are taken over at once.)
    idempotency_claim_timeout: Duration = 120.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: addresses or CIDRs of reverse proxies whose Forwarded / X-Forwarded-For
    #: headers are believed (default: none, every header is ignored)
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        parse_networks(v)  # raises with the bad entry named
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        for path in (self.tls_cert_file, self.tls_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:8080")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DatabaseSection(Section):
    url: str = ""  # empty: sqlite:///{data_dir}/otherix.db


class AuthSection(Section):
    jwt_secret: str = ""  # empty: generated once into {data_dir}/jwt-secret
    jwt_access_ttl: Duration = 15 * 60.0
    jwt_refresh_ttl: Duration = 30 * 86400.0
    login_rate_per_minute: int = Field(default=10, ge=1)
    #: failed logins a minute from one client address, every username together
    login_rate_per_client_per_minute: int = Field(default=30, ge=1)
    #: failed logins a minute for one username, every client together
    login_rate_per_user_per_minute: int = Field(default=30, ge=1)
    #: argon2 verifications at once (0: the usable cores less one, at least one)
    password_hash_concurrency: int = Field(default=0, ge=0, le=256)
    #: logins that may wait for a verification slot; one more is refused (429)
    password_hash_queue: int = Field(default=16, ge=0, le=10_000)
    #: places one client address may hold in the hash queue (running or waiting)
    login_in_flight_per_client: int = Field(default=2, ge=1)
    #: argon2id cost of new password hashes (and of the dummy an unknown user is
    #: verified against); the defaults are argon2-cffi's (RFC 9106, low memory)
    password_hash_time_cost: int = Field(default=argon2.DEFAULT_TIME_COST, ge=1, le=100)
    password_hash_memory_kib: int = Field(
        default=argon2.DEFAULT_MEMORY_COST, ge=8, le=4 * 1024 * 1024
    )
    password_hash_parallelism: int = Field(default=argon2.DEFAULT_PARALLELISM, ge=1, le=64)

    @field_validator("jwt_secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        if v and len(v.encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return v

    @model_validator(mode="after")
    def _argon2_memory(self) -> AuthSection:
        if self.password_hash_memory_kib < 8 * self.password_hash_parallelism:
            raise ValueError(
                "auth.password_hash_memory_kib must be at least 8 x "
                "auth.password_hash_parallelism (argon2)"
            )
        return self


class StoragePoolsSection(Section):
    allowed_path_prefixes: AllowedPrefixes = Field(default_factory=default_prefixes)
    default_pool_name: str = "default"

    @field_validator("default_pool_name")
    @classmethod
    def _default_name(cls, v: str) -> str:
        if v and (problem := validate_pool_name(v)):
            raise ValueError(problem)
        return v


class HeartbeatWorker(Section):
    interval: Duration = 30.0
    stale_threshold: Duration = 90.0
    gone_grace: Duration = 300.0
    flush_interval: Duration = 1.0

    @model_validator(mode="after")
    def _order(self) -> HeartbeatWorker:
        if self.gone_grace <= self.stale_threshold:
            raise ValueError("gone_grace must exceed stale_threshold")
        return self


class WorkersSection(Section):
    enabled: bool = True
    heartbeat: HeartbeatWorker = HeartbeatWorker()


class DiskPressureSection(Section):
    enabled: bool = True
    threshold_percent: int = Field(default=15, ge=1, le=99)
    consecutive_required: int = Field(default=1, ge=1)


class PressureSection(Section):
    disk: DiskPressureSection = DiskPressureSection()


class PlacementSection(Section):
    pressure: PressureSection = PressureSection()


class AgentApiSection(Section):
    """What the control plane tells agents."""

    heartbeat_interval: Duration = 30.0
    watch_timeout: Duration = 25.0
    #: PostgreSQL only: how often a parked watch re-reads the store, the safety
    #: net for a NOTIFY from another replica that never arrived. On SQLite
    #: (one process) every wake-up is in-process and a watch waits for it.
    watch_recheck: Duration = 5.0
    #: Lifetime of a re-enrol token (``otherix node reset-credentials``) when the
    #: request names none; short, since it stands in for a node's credential.
    rejoin_token_ttl: Duration = 3600.0

    @field_validator("rejoin_token_ttl")
    @classmethod
    def _rejoin_ttl(cls, v: float) -> float:
        if not 60 <= v <= 7 * 86400:
            raise ValueError("must be between 1m and 7d")
        return v


# -- capacity history and time to full (issue 16.6) -------------------------------------


class CapacitySection(Section):
    """``capacity.*``: the samples of each pool instance's used bytes and the
    time-to-full estimate (``api/services/capacity.py``, ``domain/capacity.py``)."""

    #: one sample per pool instance per interval (the bucket a sample is keyed on)
    sample_interval: Duration = 300.0
    #: samples older than this are deleted
    retention: Duration = 14 * 86400.0
    #: the trend is fitted over the samples of this last stretch of time (two days:
    #: agents report available bytes in steps of 1% of capacity or 64 MiB, whichever
    #: is less, so a slow fill moves in steps hours apart, and a short window would
    #: flicker between them)
    trend_window: Duration = 2 * 86400.0
    #: ``pool_filling`` when the estimated time to full is under this many days
    warn_days: float = Field(default=7.0, gt=0, le=3650)

    @model_validator(mode="after")
    def _order(self) -> CapacitySection:
        if self.sample_interval < 1:
            raise ValueError("capacity.sample_interval must be at least 1s")
        if self.retention < 2 * self.sample_interval:
            raise ValueError("capacity.retention must be at least 2 x capacity.sample_interval")
        if self.trend_window < 2 * self.sample_interval:
            raise ValueError("capacity.trend_window must be at least 2 x capacity.sample_interval")
        return self


class DebugSection(Section):
    """Fault-test hooks; empty, so off, by default. ``pause_at``: point name ->
    seconds; the points are ``migrate.step`` and ``migrate.step.REVISION``
    (``otherix.store.migrate``)."""

    pause_at: dict[str, Duration] = Field(default_factory=dict)


class ApiSettings(Section):
    data_dir: Path = Path("/var/lib/otherix/api")
    server: ServerSection = ServerSection()
    database: DatabaseSection = DatabaseSection()
    auth: AuthSection = AuthSection()
    storage_pools: StoragePoolsSection = StoragePoolsSection()
    workers: WorkersSection = WorkersSection()
    agents: AgentApiSection = AgentApiSection()
    placement: PlacementSection = PlacementSection()
    capacity: CapacitySection = CapacitySection()
    debug: DebugSection = DebugSection()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir}/otherix.db"
