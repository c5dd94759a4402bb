"""A real control plane (uvicorn) on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from otherix.api.app import create_app
from otherix.api.bootstrap import open_deps
from otherix.api.deps import Deps
from otherix.api.services import users
from otherix.api.settings import ApiSettings
from otherix.config import load_config
from otherix.models.auth import UserCreate
from otherix.rbac import Role

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
    }
    base.update(overrides)
    return load_config(ApiSettings, overrides=base)


@dataclass
class ApiServer:
    settings: ApiSettings
    host: str = "127.0.0.1"
    run_workers: bool = True
    port: int = 0  # 0: pick a free port at start; set it to restart on the same port
    deps: Deps = field(init=False)
    _server: uvicorn.Server = field(init=False)
    _thread: threading.Thread = field(init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ApiServer:
        self.deps = open_deps(self.settings)
        if not self.port:
            self.port = free_port(self.host)
        app = create_app(self.deps, run_workers=self.run_workers)
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
        self.deps.db.close()

    # helpers ---------------------------------------------------------------
    def add_user(self, username: str, password: str, role: Role) -> None:
        users.create_user(self.deps, UserCreate(username=username, password=password, role=role))

    def login(self, username: str, password: str) -> str:
        r = httpx.post(
            f"{self.url}/v1/auth/login", json={"username": username, "password": password}
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)
