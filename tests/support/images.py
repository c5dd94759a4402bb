"""The test suite's one HTTP image origin: an ``http.server`` on loopback that tests steer.

``ImageOrigin`` answers every GET (HTTP/1.0; the query string is ignored) from
its ``routes`` (request path -> :class:`Route`, set with ``serve(path, body,
...)`` and ``redirect(path, location)``, both returning the URL) or, for any
other path, from its default route (``ImageOrigin(file_or_bytes)``: one body
at every path; without one, ``404``). ``tls=`` makes it https.
``url_for(path)`` names a path on it, ``url`` the path ``/tiny-cloudimg-amd64.img``
(``IMAGE``). A route answers with its ``status``, ``location`` and ``headers``,
and can misbehave:

- ``content_length=False``: no ``Content-Length`` (the body ends when the
  connection closes), so the client cannot check room up front;
  ``truncate_to=N``: only N bytes of the body, though the length says all;
- ``hang=True``: the headers, then nothing (for at most 600 s);
  ``stall_after=N``: N bytes of the body, then nothing (at most 60 s);
- ``first_byte_delay=S``: S seconds between the headers and the body;
  ``chunk_delay=S``: a pause of S seconds after each 64 KiB (read at each
  chunk, so a test may change it mid-download); ``drip=S``: the body one byte
  every S seconds.

And across routes: while ``gate`` is clear, new GETs wait (at most 30 s) before
their headers; ``hold(path, offset)``: the next GET of ``path`` sends exactly
``offset`` bytes of the body, then waits (at most 60 s) until its ``release``
is set; not released in time, or the client gone, or the origin closing, the
response ends there. That is how a test keeps a download at a chosen byte while
it kills the agent or fills the disk.

Wherever the origin waits, a client that hangs up is noticed within 20 ms and
the response ends; ``__exit__`` ends every waiting response at once. What it
counts: every GET as a :class:`Get` in ``requests`` (``gets(path)``,
``held(path)``), ``hits`` and ``sent`` per path (``Counter``s; ``hits.total()``
is every GET), ``request_headers`` in order, ``served`` the complete bodies,
``active`` the responses in flight right now, and ``peak`` the most requests
clients had open at once (checked at each new request: a response whose client
has already hung up does not count, however late its thread sees it).

``qcow2(tmp, name)`` makes the bytes of a real qcow2 image to serve.

Used by every test that downloads an image: the agent and image-cache tests,
the fault, security and e2e suites.
"""

from __future__ import annotations

import http.server
import os
import select
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IMAGE = "tiny-cloudimg-amd64.img"
MiB = 1 << 20
CHUNK = 64 * 1024
GATE_LIMIT = 30.0
HOLD_LIMIT = 60.0
HANG_LIMIT = 600.0
#: how a wait ended: its time is up (or its event was set), the client hung up, we close
Outcome = Literal["done", "gone", "closed"]


def qcow2(tmp: Path, name: str, *, virtual: str = "64M", data_mib: float = 0) -> bytes:
    """The bytes of a real qcow2 image made as ``tmp/name`` with ``qemu-img``: empty and
    ``virtual`` in size, or holding ``data_mib`` MiB of random data (about that big)."""
    out = tmp / name
    if data_mib:
        raw = tmp / f"{name}.raw"
        raw.write_bytes(os.urandom(int(data_mib * MiB)))
        cmd = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)]
    else:
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(out), virtual]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    if data_mib:
        raw.unlink()
    return out.read_bytes()


def _hung_up(conn: socket.socket, wait: float) -> bool:
    """True if the client closed ``conn`` (it sends nothing after its request, so a
    readable socket means EOF or a reset); waits at most ``wait`` seconds to see."""
    try:
        readable, _, _ = select.select([conn], [], [], wait)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # ValueError: a TLS socket that has data (close_notify)
        return True


@dataclass
class Route:
    """How the origin answers the GETs of one path (module docstring)."""

    body: bytes = b""
    status: int = 200
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True
    truncate_to: int | None = None
    hang: bool = False
    stall_after: int | None = None
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    drip: float = 0.0


@dataclass(eq=False)
class Get:
    """One GET the origin answered."""

    path: str
    headers: dict[str, str]
    length: int | None  # the Content-Length sent (None: close-delimited)
    hold_at: int | None
    sent: int = 0
    held: bool = False  # reached hold_at and waits for release
    finished: bool = False  # the whole body was written
    client_gone: bool = False  # the client disconnected while the body was held
    release: threading.Event = field(default_factory=threading.Event)


class ImageOrigin:
    """An image server on 127.0.0.1 that tests steer and that counts (module docstring)."""

    def __init__(
        self,
        default: Path | bytes | None = None,
        *,
        drip: float = 0.0,
        stall: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        body = default.read_bytes() if isinstance(default, Path) else default
        self.default = None if body is None else Route(body, drip=drip, hang=stall)
        self.routes: dict[str, Route] = {}
        self.scheme = "https" if tls is not None else "http"
        self.gate = threading.Event()
        self.gate.set()
        self.requests: list[Get] = []
        self.active = 0
        #: most downloads the clients had open at once (one that hung up no longer counts)
        self.peak = 0
        self._holds: dict[str, list[int]] = {}
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                origin._serve(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # the test's side -------------------------------------------------------------------
    def url_for(self, path: str, host: str = "127.0.0.1") -> str:
        """The URL of ``path`` on this origin (``name`` and ``/name`` are the same)."""
        return f"{self.scheme}://{host}:{self.port}/{path.removeprefix('/')}"

    @property
    def url(self) -> str:
        return self.url_for(IMAGE)

    def serve(self, path: str, body: bytes, **route: Any) -> str:
        """Answer GETs of ``path`` with ``body`` (and the :class:`Route` fields given)."""
        self.routes[path] = Route(body, **route)
        return self.url_for(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = Route(status=status, location=location)
        return self.url_for(path)

    def hold(self, path: str, offset: int) -> None:
        """The next GET of ``path`` stops after ``offset`` bytes of the body."""
        with self._lock:
            self._holds.setdefault(path, []).append(offset)

    def gets(self, path: str) -> list[Get]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def held(self, path: str) -> Get | None:
        """The GET of ``path`` currently held at its offset, if any."""
        return next((r for r in self.gets(path) if r.held and not r.release.is_set()), None)

    @property
    def hits(self) -> Counter[str]:
        """GETs per path."""
        with self._lock:
            return Counter(r.path for r in self.requests)

    @property
    def sent(self) -> Counter[str]:
        """Body bytes sent per path, over all its GETs."""
        out: Counter[str] = Counter()
        with self._lock:
            for r in self.requests:
                out[r.path] += r.sent
        return out

    @property
    def request_headers(self) -> list[dict[str, str]]:
        with self._lock:
            return [r.headers for r in self.requests]

    @property
    def served(self) -> int:
        with self._lock:
            return sum(r.finished for r in self.requests)

    def __enter__(self) -> ImageOrigin:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closing.set()
        self.gate.set()
        with self._lock:
            for r in self.requests:
                r.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # the server's side -----------------------------------------------------------------
    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        route = self.routes.get(path, self.default)
        conn = h.connection
        with self._lock:
            holds = self._holds.get(path)
            hold_at = holds.pop(0) if holds else None
            if route is None:
                length: int | None = 0
            else:
                length = len(route.body) if route.content_length else None
                hold_at = route.stall_after if hold_at is None else hold_at
            get = Get(path, dict(h.headers.items()), length, hold_at)
            self.requests.append(get)
            self.active += 1
            others = [c for c in self._open if not _hung_up(c, 0.0)]
            self.peak = max(self.peak, 1 + len(others))
            self._open.add(conn)
        try:
            self.gate.wait(GATE_LIMIT)
            if route is None:
                h.send_response(404)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            self._answer(h, get, route)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (too slow, cancelled, killed)
        finally:
            with self._lock:
                self.active -= 1
                self._open.discard(conn)

    def _answer(self, h: http.server.BaseHTTPRequestHandler, get: Get, route: Route) -> None:
        h.send_response(route.status)
        if route.location is not None:
            h.send_header("Location", route.location)
        for k, v in route.headers.items():
            h.send_header(k, v)
        if get.length is not None:
            h.send_header("Content-Length", str(get.length))
        h.end_headers()
        h.wfile.flush()
        if route.hang:
            self._wait(h.connection, HANG_LIMIT)
            return
        if route.first_byte_delay and self._wait(h.connection, route.first_byte_delay) != "done":
            return
        body = route.body if route.truncate_to is None else route.body[: route.truncate_to]
        self._send(h, get, route, body)

    def _send(
        self, h: http.server.BaseHTTPRequestHandler, get: Get, route: Route, body: bytes
    ) -> None:
        chunk = 1 if route.drip else CHUNK
        stop_at = len(body) if get.hold_at is None else min(get.hold_at, len(body))
        while get.sent < len(body):
            if get.sent == stop_at and get.hold_at is not None and not get.release.is_set():
                get.held = True
                outcome = self._wait(h.connection, HOLD_LIMIT, get.release)
                get.client_gone = outcome == "gone"
                if outcome != "done" or not get.release.is_set():
                    return
                stop_at = len(body)
            end = min(get.sent + chunk, stop_at)
            h.wfile.write(body[get.sent : end])
            h.wfile.flush()
            get.sent = end
            if self._wait(h.connection, route.drip or route.chunk_delay) != "done":
                return
        get.finished = True

    def _wait(
        self, conn: socket.socket, seconds: float, until: threading.Event | None = None
    ) -> Outcome:
        """Wait ``seconds`` (or until ``until`` is set), watching the client and the origin."""
        end = time.monotonic() + seconds
        while not self._closing.is_set():
            left = end - time.monotonic()
            if left <= 0 or (until is not None and until.is_set()):
                return "done"
            if _hung_up(conn, min(left, 0.02)):
                return "gone"
        return "closed"
