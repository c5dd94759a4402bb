"""Which address a request comes from, and whose word on it we take.

Called by the routes that key limits on the client (``routes/auth.py``
login). The peer address is the TCP peer as uvicorn saw it (its own
``proxy_headers`` are turned off in ``api/main.py``, so nothing has rewritten
it). ``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` are believed only when
the peer is one of ``server.trusted_proxies``; then the chain is walked from
the right (the entry the nearest proxy appended) past every trusted proxy,
and the first address that is not one is the client. ``Forwarded`` wins over
``X-Forwarded-For`` when a request carries both. No I/O: table-tested in
``tests/api/test_api_forwarded.py``.

:func:`limit_key` is the form a client address takes in a rate-limit key: an
IPv6 address counts by its /64 (one host usually holds a whole /64, so
rotating inside it must not buy new attempts).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = ["client_address", "client_key", "limit_key", "parse_networks", "trusted_networks"]


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDRs (``10.0.0.1``, ``10.0.0.0/8``, ``::1``); ValueError names a bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from exc
    return tuple(out)


@functools.lru_cache(maxsize=8)
def trusted_networks(values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """``server.trusted_proxies`` parsed once (it was validated at start)."""
    return parse_networks(values)


def _address(text: str) -> IPAddress | None:
    """An address from one chain entry: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _forwarded_for(values: Sequence[str]) -> list[str]:
    """The ``for=`` of each element of ``Forwarded`` headers, in order."""
    out = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, sep, token = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    out.append(token.strip())
    return out


def _xff(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _trusted(addr: IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in trusted)


def client_address(
    peer: str,
    forwarded: Sequence[str],
    x_forwarded_for: Sequence[str],
    trusted: Sequence[IPNetwork],
) -> str:
    """The client's address. ``forwarded`` and ``x_forwarded_for`` are every
    value of those headers in arrival order. Without a trusted peer they are
    ignored; a chain entry that is no address (``unknown``, an obfuscated
    name) ends the walk at the last proxy we trust."""
    peer_addr = _address(peer)
    if not trusted or not _trusted(peer_addr, trusted):
        return str(peer_addr) if peer_addr is not None else peer
    chain = _forwarded_for(forwarded) if forwarded else _xff(x_forwarded_for)
    client = str(peer_addr)
    for entry in reversed(chain):
        addr = _address(entry)
        if addr is None:
            break
        client = str(addr)
        if not _trusted(addr, trusted):
            break
    return client


def limit_key(client: str) -> str:
    """The client as counted by rate limits: an IPv6 address by its /64."""
    try:
        addr = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def client_key(scope: Mapping[str, Any], trusted_proxies: Sequence[str]) -> str:
    """The client of an ASGI request as rate limits count it (:func:`limit_key`)."""
    peer = scope.get("client")
    forwarded: list[str] = []
    xff: list[str] = []
    for name, value in scope.get("headers") or ():
        if name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            xff.append(value.decode("latin-1"))
    client = client_address(
        peer[0] if peer else "-", forwarded, xff, trusted_networks(tuple(trusted_proxies))
    )
    return limit_key(client)
