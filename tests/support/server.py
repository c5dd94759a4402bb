"""A real control plane (uvicorn) on a free loopback port, in a thread."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from otherix.api.app import create_app
from otherix.api.bootstrap import close_deps, open_deps
from otherix.api.clock import Clock
from otherix.api.compose import Services, build_services
from otherix.api.deps import Deps
from otherix.api.settings import ApiSettings
from otherix.config import load_config
from otherix.models.auth import UserCreate
from otherix.rbac import Role
from support.clock import ClockSeat

ADMIN = ("admin", "admin-password-1")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> ApiSettings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "database.url": database_url,
        "storage_pools.allowed_path_prefixes": [f"{data_dir}/pools/", "/var/lib/otherix/pools/"],
        # argon2id with minimal cost in tests (production keeps the library defaults):
        # the code path is the same, only the work factor drops
        **CHEAP_PASSWORD_HASHING,
    }
    base.update(overrides)
    return load_config(ApiSettings, overrides=base)


#: the ``auth.password_hash_*`` settings of test servers
CHEAP_PASSWORD_HASHING: dict[str, Any] = {
    "auth.password_hash_time_cost": 1,
    "auth.password_hash_memory_kib": 64,
    "auth.password_hash_parallelism": 1,
}


@dataclass
class ApiServer:
    settings: ApiSettings
    host: str = "127.0.0.1"
    run_workers: bool = True
    port: int = 0  # 0: pick a free port at start; set it to restart on the same port
    deps: Deps = field(init=False)
    services: Services = field(init=False)
    _server: uvicorn.Server = field(init=False)
    _thread: threading.Thread = field(init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ApiServer:
        self.deps = open_deps(self.settings)
        if not self.port:
            self.port = free_port(self.host)
        # one seat for the clock every service is built with: set_clock swaps what it reads
        self.deps.clock = ClockSeat(self.deps.clock)
        self.services = build_services(self.deps)
        app = create_app(self.deps, services=self.services, run_workers=self.run_workers)
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("API server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.deps.hub.close()
        self._server.should_exit = True
        self._thread.join(timeout=15)
        close_deps(self.deps)

    # helpers ---------------------------------------------------------------
    def set_clock(self, clock: Clock) -> None:
        """Seat ``clock`` in the running server: every service reads it from now on."""
        seat = self.deps.clock
        assert isinstance(seat, ClockSeat)
        seat.seated = clock

    def swap_settings(self, monkeypatch: pytest.MonkeyPatch, settings: ApiSettings) -> None:
        """Run the rest of the test with ``settings`` in ``Deps`` and in every service
        that holds them (undone by ``monkeypatch`` at the end of the test)."""
        monkeypatch.setattr(self.deps, "settings", settings)
        for f in dataclasses.fields(self.services):
            service = getattr(self.services, f.name)
            if hasattr(service, "settings"):
                monkeypatch.setattr(service, "settings", settings)

    def add_user(self, username: str, password: str, role: Role) -> None:
        self.services.user_service.create_user(
            UserCreate(username=username, password=password, role=role)
        )

    def login(self, username: str, password: str) -> str:
        r = httpx.post(
            f"{self.url}/v1/auth/login", json={"username": username, "password": password}
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)
