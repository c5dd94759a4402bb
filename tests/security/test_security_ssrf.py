"""Image downloads aimed at forbidden addresses: a sweep through ``ImageCache.ensure_image``.

Every forbidden address class of ``otherix.agent.images.ssrf`` (loopback,
link-local, the cloud metadata endpoints, unspecified, multicast, broadcast,
and IPv6 spellings that carry one of them: mapped, NAT64, 6to4) is tried five
ways: as an IP literal, as a DNS name resolving to it, as a DNS name whose
answers mix a public address with it, and as a redirect (to the literal and to
such a name) from an origin the agent may reach. Each attempt must fail
(``image_url_forbidden``, not retryable), leave the pool's ``images/`` and
``scratch/`` empty, and never open a connection to anything but that origin:
``socket.create_connection`` is watched.

RFC 1918, CGNAT and ULA addresses are allowed on purpose (``ssrf.py``: images
often live on a private mirror), so they are not in the sweep;
``tests/agent_images/test_images_ssrf.py`` pins that policy.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator

import pytest

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import ImageCache, ImageCacheSettings, ImageError, KeyedLocks
from support.images import ImageOrigin

pytestmark = pytest.mark.security

FORBIDDEN = [
    "127.0.0.2",
    "::1",
    "169.254.1.1",
    "fe80::1",
    "169.254.169.254",
    "fd00:ec2::254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "::ffff:127.0.0.2",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:2::",
]
PUBLIC = "93.184.216.34"


def url_host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def redirect_to(redirector: ImageOrigin, target: str) -> str:
    """A URL on ``redirector`` (``/to/<n>/x.img``) that answers ``302`` to ``target``."""
    return redirector.redirect(f"/to/{len(redirector.routes)}/x.img", target)


@pytest.fixture
def redirector() -> Iterator[ImageOrigin]:
    """An origin on 127.0.0.1 whose every route is a redirect (``redirect_to``)."""
    with ImageOrigin() as r:
        yield r


@pytest.fixture
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Every address the process connects to with ``socket.create_connection``."""
    seen: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        seen.append((str(address[0]), int(address[1])))
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return seen


def attempts(redirector: ImageOrigin) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    """(address, way, url) for every forbidden address and way, and the DNS table they use."""
    dns: dict[str, list[str]] = {}
    out = []
    for i, address in enumerate(FORBIDDEN):
        name, mixed, hop = f"img{i}.example", f"mixed{i}.example", f"hop{i}.example"
        dns[name] = [address]
        dns[mixed] = [PUBLIC, address]
        dns[hop] = [address]
        literal = f"http://{url_host(address)}/x.img"
        out += [
            (address, "literal", literal),
            (address, "dns name", f"http://{name}/x.img"),
            (address, "dns name, mixed answers", f"http://{mixed}/x.img"),
            (address, "redirect to literal", redirect_to(redirector, literal)),
            (address, "redirect to dns name", redirect_to(redirector, f"http://{hop}:8080/x.img")),
        ]
    return out, dns


def test_every_forbidden_address_is_refused_every_way(
    tmp_path, redirector, connections, reliability
):
    plan, dns = attempts(redirector)
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return dns[host]

    cache = ImageCache(
        ImageCacheSettings(
            allowed_networks=("127.0.0.1/32",),  # the redirector only
            connect_timeout=2.0,
            read_timeout=2.0,
            progress_interval=0.0,
        ),
        locks=KeyedLocks(),
        protected=ProtectedRoots(),
        resolver=resolver,
    )
    pool = tmp_path / "pool"
    for sub in ("images", "scratch", "vms"):
        (pool / sub).mkdir(parents=True)
    refused = 0
    for address, way, url in plan:
        with pytest.raises(ImageError) as err:
            cache.ensure_image(pool, url)
        assert err.value.code == "image_url_forbidden", (address, way, err.value)
        assert not err.value.retryable, (address, way)
        assert "is not allowed" in err.value.message, (address, way, err.value.message)
        assert os.listdir(pool / "images") == [], (address, way)
        assert os.listdir(pool / "scratch") == [], (address, way)
        refused += 1
    reached = [c for c in connections if c != ("127.0.0.1", redirector.port)]
    redirects = sum(1 for _, way, _ in plan if way.startswith("redirect"))
    reliability.record(
        "SSRF: forbidden addresses x ways to reach them",
        injected=len(plan),
        survived=refused,
        checked=len(FORBIDDEN),
        lost=len(reached),
        detail="literal, DNS name, mixed DNS answers, redirect to literal, redirect to name; "
        "connections watched",
    )
    assert reached == [], reached
    assert redirector.hits.total() == redirects  # each redirect was fetched once, its target never
    assert sorted(set(resolved)) == sorted(dns)  # every name was asked, so the guard saw it


def test_metadata_stays_refused_in_development_mode(tmp_path, connections, reliability):
    """``allow_loopback_and_link_local`` opens loopback and link-local, never metadata."""
    cache = ImageCache(
        ImageCacheSettings(allow_loopback_and_link_local=True, connect_timeout=2.0),
        locks=KeyedLocks(),
        protected=ProtectedRoots(),
        resolver=lambda host, port: ["169.254.169.254"],
    )
    pool = tmp_path / "pool"
    for sub in ("images", "scratch", "vms"):
        (pool / sub).mkdir(parents=True)
    urls = [
        "http://169.254.169.254/latest/meta-data/x.img",
        "http://[fd00:ec2::254]/x.img",
        "http://[::ffff:169.254.169.254]/x.img",
        "http://metadata.example/x.img",
    ]
    for url in urls:
        with pytest.raises(ImageError, match="metadata") as err:
            cache.ensure_image(pool, url)
        assert not err.value.retryable
    reliability.record(
        "SSRF: metadata endpoints in development mode",
        injected=len(urls),
        survived=len(urls),
        lost=len(connections),
        detail="allow_loopback_and_link_local on; IPv4, IPv6, mapped IPv6 and a DNS name",
    )
    assert connections == []


def test_the_spy_sees_a_real_download(tmp_path, redirector, connections):
    """The watch on ``create_connection`` is live: an allowed fetch shows up in it."""
    cache = ImageCache(
        ImageCacheSettings(allowed_networks=("127.0.0.1/32",)),
        locks=KeyedLocks(),
        protected=ProtectedRoots(),
    )
    pool = tmp_path / "pool"
    for sub in ("images", "scratch", "vms"):
        (pool / sub).mkdir(parents=True)
    url = redirect_to(redirector, "http://127.0.0.1:9/x.img")  # port 9: nothing listens
    with pytest.raises(ImageError):
        cache.ensure_image(pool, url)
    assert ("127.0.0.1", redirector.port) in connections
    assert ("127.0.0.1", 9) in connections
    assert os.listdir(pool / "images") == []
