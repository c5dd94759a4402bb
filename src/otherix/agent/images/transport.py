"""HTTP(S) for image downloads: URL parsing and one GET to one approved address.

Owns the wire: :func:`parse_url` (what an image URL may look like) and
:func:`open_get`, which connects to exactly the IP address the SSRF guard
approved while the request and TLS keep the real host name (``Host`` header,
SNI and certificate check against the name), so DNS cannot change its answer
between the check and the connect. Built on the standard library's
``http.client`` rather than httpx: it reads a body straight into the
caller's buffer (``readinto``), which keeps a cache fill near curl's speed,
and it gives plain sockets whose timeouts are exactly "no byte for N
seconds". No proxy is ever used. Called by ``download`` only, which turns
the exceptions raised here (``OSError``, ``ssl.SSLError``,
``http.client.HTTPException``) into ``ImageError``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from otherix.agent.images.errors import ImageError
from otherix.agent.images.rate import RateFloor, TooSlow

__all__ = ["ConnectFailed", "Deadline", "Target", "open_get", "parse_url", "redact"]

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def redact(url: str) -> str:
    """``url`` without a password (``https://user:***@host/…``), for messages and ``.source``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class ConnectFailed(Exception):
    """No connection to the address could be made (``cause``); another address may work."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class Target:
    """One absolute http(s) URL, taken apart for a request."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA), lowercase, no brackets, no trailing dot
    port: int
    request_target: str  # path and query, percent-encoded
    host_header: str
    authorization: str | None

    @property
    def shown(self) -> str:
        return redact(self.url)


def parse_url(url: str) -> Target:
    """``url`` as a :class:`Target`; ``image_unavailable`` unless absolute http(s) with a host."""
    shown = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImageError("image_unavailable", f"invalid URL {shown!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageError(
            "image_unavailable", f"unsupported URL scheme {scheme!r} (only http and https)"
        )
    name = (parts.hostname or "").rstrip(".")
    if not name:
        raise ImageError("image_unavailable", f"URL {shown!r} has no host")
    try:
        host = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ImageError("image_unavailable", f"URL {shown!r} has an invalid host") from exc
    default = 443 if scheme == "https" else 80
    port = port or default
    shown_host = f"[{host}]" if ":" in host else host
    path = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    query = urllib.parse.quote(parts.query, safe=_QUERY_SAFE)
    authorization = None
    if parts.username is not None:
        creds = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        authorization = "Basic " + base64.b64encode(creds.encode()).decode("ascii")
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        request_target=f"{path}?{query}" if query else path,
        host_header=shown_host if port == default else f"{shown_host}:{port}",
        authorization=authorization,
    )


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed address; the request still names the real host."""

    def __init__(self, address: str, port: int, connect_timeout: float, read_timeout: float):
        super().__init__(address, port, timeout=connect_timeout)
        self._address = address
        self._read_timeout = read_timeout
        #: The socket, kept here even after the response takes it over (for ``Deadline``).
        self.pinned_sock: socket.socket | None = None

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._read_timeout)
        self.sock = self.pinned_sock = sock


class _PinnedTLSConnection(_PinnedConnection):
    """HTTPS to a fixed address, with SNI and certificate check against ``server_hostname``."""

    def __init__(
        self,
        address: str,
        port: int,
        connect_timeout: float,
        read_timeout: float,
        context: ssl.SSLContext,
        server_hostname: str,
    ):
        super().__init__(address, port, connect_timeout, read_timeout)
        self._context = context
        self._server_hostname = server_hostname

    def connect(self) -> None:
        super().connect()
        self.start_tls()

    def start_tls(self) -> None:
        self.sock = self.pinned_sock = self._context.wrap_socket(
            self.sock, server_hostname=self._server_hostname
        )


class Deadline:
    """A whole-download time limit and rate floor that also interrupt a read in progress.

    Socket timeouts only bound the wait for the *next* byte; a server that
    drips one byte a minute would never trip them. A watchdog thread wakes
    at the limit (and, with a ``floor``, every ``floor.tick`` to sample the
    bytes the reader reported with :meth:`received`). When the limit passes
    (``expired``) or the source falls below the floor (``too_slow``, the
    verdict), it shuts the attached connection's socket down, so the blocked
    read returns; the caller then sees which one and reports it. Each
    :meth:`attach` (one per hop) re-arms the floor, so its first check comes
    one window after the connection is up; the response head counts as no
    body bytes, so a source that holds its headers a whole window is too slow.
    """

    def __init__(
        self,
        seconds: float,
        *,
        floor: RateFloor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.expired = False
        self.too_slow: TooSlow | None = None
        self._clock = clock
        self._end = clock() + seconds
        self._floor = floor
        self._armed = False
        self._received = 0  # body bytes so far, written by the reader thread only
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="image-deadline", daemon=True)
        self._thread.start()

    def attach(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            self._received = 0
            if self._floor is not None:
                self._floor.start(self._clock())
                self._armed = True
            if self.expired or self.too_slow is not None:
                self._abort(conn)

    def received(self, size: int) -> None:
        """The body bytes received so far on the attached connection (cheap: no lock)."""
        self._received = size

    @property
    def received_bytes(self) -> int:
        return self._received

    def cancel(self) -> None:
        self._stop.set()

    @property
    def tripped(self) -> bool:
        return self.expired or self.too_slow is not None

    def _watch(self) -> None:
        while True:
            now = self._clock()
            wait = self._end - now
            if self._floor is not None:
                wait = min(wait, self._floor.tick)
            if self._stop.wait(max(0.0, wait)):
                return
            with self._lock:
                now = self._clock()
                if now >= self._end:
                    self.expired = True
                elif self._floor is not None and self._armed:
                    self.too_slow = self._floor.check(now, self._received)
                if self.tripped:
                    if self._conn is not None:
                        self._abort(self._conn)
                    return

    @staticmethod
    def _abort(conn: http.client.HTTPConnection) -> None:
        sock = getattr(conn, "pinned_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def open_get(
    target: Target,
    address: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    ssl_context: ssl.SSLContext | None,
    user_agent: str,
    deadline: Deadline | None = None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Connect to ``address`` and send ``GET target``; the caller closes the connection.

    Raises :class:`ConnectFailed` if the TCP connection could not be made, so
    the caller can try the host's next address; anything raised later (TLS,
    the request, the response head) propagates unchanged.
    """
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        if ssl_context is None:
            raise ValueError("https needs an ssl_context")
        conn = _PinnedTLSConnection(
            address, target.port, connect_timeout, read_timeout, ssl_context, target.host
        )
    else:
        conn = _PinnedConnection(address, target.port, connect_timeout, read_timeout)
    try:
        try:
            _PinnedConnection.connect(conn)  # TCP only: a failure here may be per address
        except OSError as exc:
            raise ConnectFailed(exc) from exc
        if deadline is not None:
            deadline.attach(conn)
        if isinstance(conn, _PinnedTLSConnection):
            conn.start_tls()
        headers = {
            "Host": target.host_header,
            "User-Agent": user_agent,
            "Accept-Encoding": "identity",
            "Accept": "*/*",
            "Connection": "close",
        }
        if target.authorization is not None:
            headers["Authorization"] = target.authorization
        conn.request("GET", target.request_target, headers=headers)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise
