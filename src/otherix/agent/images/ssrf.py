"""SSRF guard for image downloads: which addresses the agent may connect to.

Owns the address policy and host resolution of ``otherix.agent.images.download``,
which calls :func:`resolve_allowed` for every hop (the first URL and each
redirect) and then connects to exactly the address returned here, so there is
no window between the check and the connect for DNS rebinding.

Refused at once (``image_url_forbidden``, never retried: the address will not
change its class; the message names the agent config key that would open it):

- unspecified (``0.0.0.0/8``, ``::``), broadcast ``255.255.255.255`` and
  multicast (``224.0.0.0/4``, ``ff00::/8``): never a web server;
- loopback (``127.0.0.0/8``, ``::1``) and link-local (``169.254.0.0/16``,
  ``fe80::/10``), unless ``allow_loopback_and_link_local`` is set (development);
- the cloud metadata endpoints ``169.254.169.254`` and ``fd00:ec2::254``, even
  with ``allow_loopback_and_link_local`` (they hold node credentials; only an
  explicit ``allowed_networks`` entry lets them through).

IPv6 addresses that carry an IPv4 address (``::ffff:a.b.c.d``, NAT64
``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by the IPv4 address too.
RFC 1918, CGNAT and ULA addresses are allowed: images often live on a private
mirror. ``allowed_networks`` always wins: operators (and tests) can open one
address or network without opening every loopback or link-local address.

A host whose DNS answer contains any refused address is refused as a whole
(fail closed), rather than silently picking the acceptable addresses. A host
that does not resolve is a ``download_failed`` (retried: DNS may come back).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from otherix.agent.images.errors import ImageError

__all__ = [
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "SsrfPolicy",
    "forbidden",
    "refusal",
    "resolve_allowed",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses`` in preference order; raises OSError when the name does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

_METADATA: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_THIS_NETWORK: Final = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST: Final = ipaddress.ip_address("255.255.255.255")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
#: The agent config keys that open refused addresses (named in every refusal).
ALLOW_KEY: Final = "images.allow_loopback_and_link_local"
NETWORKS_KEY: Final = "images.allowed_networks"
_LOOPBACK: Final = "a loopback address"
_LINK_LOCAL: Final = "a link-local address"


@dataclass(frozen=True)
class SsrfPolicy:
    """Which addresses image downloads may reach (see the module docstring)."""

    allow_loopback_and_link_local: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def with_networks(
        cls, *networks: str, allow_loopback_and_link_local: bool = False
    ) -> SsrfPolicy:
        """Build a policy from network strings such as ``"127.0.0.1/32"``."""
        return cls(
            allow_loopback_and_link_local=allow_loopback_and_link_local,
            allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in networks),
        )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _own_refusal(ip: IPAddress, policy: SsrfPolicy) -> str | None:
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip == _BROADCAST:
        return "a broadcast address"
    if ip.is_multicast:
        return "a multicast address"
    if not policy.allow_loopback_and_link_local:
        if ip.is_loopback:
            return _LOOPBACK
        if ip.is_link_local:
            return _LINK_LOCAL
    return None


def refusal(address: str | IPAddress, policy: SsrfPolicy) -> str | None:
    """Why ``address`` may not be contacted under ``policy``, or None if it may."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    if any(ip in net for net in policy.allowed_networks if net.version == ip.version):
        return None
    reason = _own_refusal(ip, policy)
    if reason is None and isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and not any(
            inner in net for net in policy.allowed_networks if net.version == 4
        ):
            inner_reason = _own_refusal(inner, policy)
            if inner_reason is not None:
                reason = f"{inner_reason} ({inner}) inside an IPv6 address"
    return reason


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses of ``host`` from the system resolver, in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen


def resolve_allowed(host: str, port: int, policy: SsrfPolicy, resolver: Resolver) -> list[str]:
    """The addresses to connect to for ``host``; raises ImageError if any is refused.

    An IP literal is checked as is (no DNS). A name is resolved once, here;
    the caller must connect to one of the returned addresses, never re-resolve.
    """
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addresses: Sequence[str] = [str(ipaddress.ip_address(literal))]
    except ValueError:
        addresses = []
    if not addresses:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise ImageError("download_failed", f"cannot resolve host {host}: {exc}") from exc
        if not addresses:
            raise ImageError("download_failed", f"cannot resolve host {host}: no addresses")
    for address in addresses:
        reason = refusal(address, policy)
        if reason is not None:
            raise forbidden(host if address == literal else f"{host} ({address})", address, reason)
    return list(addresses)


def forbidden(shown: str, address: str, reason: str) -> ImageError:
    """The refusal of ``address`` (shown as ``shown``), naming the key that would open it."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    network = f"{ip}/{ip.max_prefixlen}"
    if reason.startswith((_LOOPBACK, _LINK_LOCAL)):
        keys = [ALLOW_KEY, NETWORKS_KEY]
        how = (
            f"set {ALLOW_KEY}: true in the agent's config (development and tests only), "
            f"or list the address in {NETWORKS_KEY} (e.g. {network})"
        )
    else:
        keys = [NETWORKS_KEY]
        how = f"only {NETWORKS_KEY} in the agent's config can open it (e.g. {network})"
    return ImageError(
        "image_url_forbidden",
        f"refusing to fetch from {shown}: {reason} is not allowed; {how}",
        details={"address": address, "refused_as": reason, "config_keys": keys},
    )
