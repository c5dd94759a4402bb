"""Fixtures for the image cache tests: a real HTTP origin on 127.0.0.1, pools, images.

``origin`` (and ``tls_origin``, https with a self-signed certificate) is the
suite's image origin, ``support.images.ImageOrigin``, whose routes the test
sets: bytes (with or without Content-Length), status codes, redirects, a hang,
truncated bodies, a drip, a stall mid-body, a late first byte; it counts the
GETs per path and records request headers.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, KeyedLocks
from otherix.agent.images.ssrf import Resolver
from support.images import ImageOrigin
from support.tls import self_signed


@pytest.fixture
def origin() -> Iterator[ImageOrigin]:
    with ImageOrigin() as o:
        yield o


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
def tls_origin(tls_cert) -> Iterator[ImageOrigin]:
    """An https origin on 127.0.0.1 presenting the ``images.example`` certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_cert.ca_file, tls_cert.ca_file.parent / "key.pem")
    with ImageOrigin(tls=ctx) as o:
        yield o


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
