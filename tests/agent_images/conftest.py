"""Fixtures for the image cache tests: a real HTTP origin on 127.0.0.1, pools, images.

``Origin`` is an ``http.server`` in a thread whose routes the test sets:
bytes (with or without Content-Length), status codes, redirects, a hang,
truncated bodies, a drip, a stall mid-body, a late first byte; it counts the
GETs per path and records request headers.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.images.ssrf import Resolver
from support.tls import self_signed


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    location: str | None = None
    content_length: bool = True  # False: HTTP/1.0 body delimited by close
    truncate_to: int | None = None  # send only this many bytes of the body
    hang: bool = False  # send headers, then nothing
    stall_after: int | None = None  # send this many body bytes, then nothing (held open)
    first_byte_delay: float = 0.0  # seconds between the headers and the body
    chunk_delay: float = 0.0  # seconds between 64 KiB chunks
    drip: float = 0.0  # send the body one byte at a time, this many seconds apart
    headers: dict[str, str] = field(default_factory=dict)


class Origin:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if tls is not None else "http"
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.request_headers: list[dict[str, str]] = []
        self.stop = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                origin.hits[path] += 1
                origin.request_headers.append(dict(self.headers.items()))
                route = origin.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.location is not None:
                    self.send_header("Location", route.location)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                if route.content_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if route.hang:
                    origin.stop.wait(30)
                    return
                body = route.body
                if route.truncate_to is not None:
                    body = body[: route.truncate_to]
                try:
                    if route.first_byte_delay and origin.stop.wait(route.first_byte_delay):
                        return
                    if route.stall_after is not None:
                        self.wfile.write(body[: route.stall_after])
                        self.wfile.flush()
                        origin.stop.wait(30)
                        return
                    if route.drip:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            if origin.stop.wait(route.drip):
                                return
                    for i in range(0, len(body), 65536):
                        self.wfile.write(body[i : i + 65536])
                        if route.chunk_delay:
                            time.sleep(route.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def serve(self, path: str, body: bytes, **kw) -> str:
        self.routes[path] = Route(body=body, **kw)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = Route(status=status, location=location)
        return self.url(path)


def _run(o: Origin) -> Iterator[Origin]:
    o.thread.start()
    try:
        yield o
    finally:
        o.stop.set()
        o.server.shutdown()
        o.server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    yield from _run(Origin())


@dataclass
class Tls:
    ca_file: Path  # the self-signed certificate, to trust
    name: str  # the DNS name it is valid for


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> Tls:
    """A self-signed certificate for ``images.example`` (and nothing else)."""
    cert, _key = self_signed(tmp_path_factory.mktemp("tls"), "images.example", dns="images.example")
    return Tls(cert, "images.example")


@pytest.fixture
def tls_origin(tls_cert) -> Iterator[Origin]:
    """An https origin on 127.0.0.1 presenting the ``images.example`` certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_cert.ca_file, tls_cert.ca_file.parent / "key.pem")
    yield from _run(Origin(tls=ctx))


def _make_pool(root: Path) -> Path:
    for sub in ("images", "scratch", "vms"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def make_pool():
    """``make_pool(root)``: create ``images/``, ``scratch/``, ``vms/`` under ``root``."""
    return _make_pool


@pytest.fixture
def pool(tmp_path) -> Path:
    return _make_pool(tmp_path / "pool")


def _settings(**kw) -> ImageCacheSettings:
    base: dict[str, Any] = {
        "allowed_networks": ("127.0.0.1/32",),
        "read_timeout": 5.0,
        "connect_timeout": 5.0,
        "progress_interval": 0.0,
    }
    base.update(kw)
    return ImageCacheSettings(**base)


@pytest.fixture
def make_cache() -> Callable[..., ImageCache]:
    """``make_cache(resolver=None, **settings)``: an ImageCache allowed to reach 127.0.0.1 only.

    The caches one test makes share one lock table and one set of protected
    roots, as everything in one agent process does.
    """
    locks, protected = KeyedLocks(), ProtectedRoots()

    def make(resolver: Resolver | None = None, **kw: Any) -> ImageCache:
        if resolver is None:
            return ImageCache(_settings(**kw), locks=locks, protected=protected)
        return ImageCache(_settings(**kw), locks=locks, protected=protected, resolver=resolver)

    return make


@pytest.fixture
def cache(make_cache: Callable[..., ImageCache]) -> ImageCache:
    return make_cache()


@pytest.fixture
def make_qcow2(tmp_path: Path) -> Callable[..., bytes]:
    """``make_qcow2(size="16M") -> bytes`` of a real, empty qcow2 image from qemu-img."""
    counter = iter(range(1_000_000))

    def make(size: str = "16M") -> bytes:
        path = tmp_path / f"made-{next(counter)}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(path), size],
            check=True,
            capture_output=True,
        )
        data = path.read_bytes()
        path.unlink()
        return data

    return make


@pytest.fixture
def qcow2(make_qcow2: Callable[..., bytes]) -> bytes:
    """A small real qcow2 image (16 MiB virtual)."""
    return make_qcow2()
