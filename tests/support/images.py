"""The test suite's one HTTP image origin: an ``http.server`` on loopback that tests steer.

``ImageOrigin`` answers every GET (HTTP/1.0; the query string is ignored) from
``files`` (request path -> bytes) or, for any other path, from ``default`` (a
file's bytes served at every path; without one, ``404``). ``url_for(path)``
names a path on it, ``url`` the path ``/tiny-cloudimg-amd64.img`` (``IMAGE``).
What a test can set, each optional and all combinable:

- ``drip=S``: the body goes one byte every ``S`` seconds; ``stall=True``: the
  headers, then nothing (for at most 600 s);
- ``delay[path] = S``: a pause of ``S`` seconds after each 64 KiB of that
  path's body (read at each chunk, so a test may change it mid-download);
- ``gate``: while it is clear, new GETs wait (at most 30 s) before their headers;
- ``hold(path, offset)``: the next GET of ``path`` sends exactly ``offset``
  bytes of the body, then waits (at most 60 s) until its ``release`` is set;
  not released in time, or the client gone, or the origin closing, the
  response ends there. That is how a test keeps a download at a chosen byte
  while it kills the agent or fills the disk;
- ``no_length``: paths served without ``Content-Length`` (the body ends when
  the connection closes), so the client cannot check room up front.

Wherever the origin waits, a client that hangs up is noticed within 20 ms and
the response ends; ``__exit__`` ends every waiting response at once. What it
counts: every GET as a :class:`Get` in ``requests`` (``gets(path)``,
``held(path)``, ``sent(path)`` bytes); ``hits`` all GETs, ``served`` the
complete bodies, ``active`` the responses in flight right now, and ``peak`` the
most requests clients had open at once (checked at each new request: a
response whose client has already hung up does not count, however late its
thread sees it).

Used by the agent, fault, security and e2e tests that download images.
"""

from __future__ import annotations

import http.server
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IMAGE = "tiny-cloudimg-amd64.img"
CHUNK = 64 * 1024
GATE_LIMIT = 30.0
HOLD_LIMIT = 60.0
STALL_LIMIT = 600.0
#: how a wait ended: its time is up (or its event was set), the client hung up, we close
Outcome = Literal["done", "gone", "closed"]


def _hung_up(conn: socket.socket, wait: float) -> bool:
    """True if the client closed ``conn`` (it sends nothing after its request, so a
    readable socket means EOF or a reset); waits at most ``wait`` seconds to see."""
    try:
        readable, _, _ = select.select([conn], [], [], wait)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


@dataclass(eq=False)
class Get:
    """One GET the origin answered."""

    path: str
    length: int | None  # the Content-Length sent (None: close-delimited or 404)
    hold_at: int | None
    sent: int = 0
    held: bool = False  # reached hold_at and waits for release
    finished: bool = False  # the whole body was written
    client_gone: bool = False  # the client disconnected while the body was held
    release: threading.Event = field(default_factory=threading.Event)


class ImageOrigin:
    """An image server on 127.0.0.1 that tests steer and that counts (module docstring)."""

    def __init__(
        self, default: Path | bytes | None = None, *, drip: float | None = None, stall: bool = False
    ) -> None:
        self.default = default.read_bytes() if isinstance(default, Path) else default
        self.drip = drip
        self.stall = stall
        self.files: dict[str, bytes] = {}
        self.no_length: set[str] = set()
        self.delay: dict[str, float] = {}
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
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # the test's side -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url_for(self, path: str) -> str:
        """The URL of ``path`` on this origin (``name`` and ``/name`` are the same)."""
        return f"http://127.0.0.1:{self.port}/{path.removeprefix('/')}"

    @property
    def url(self) -> str:
        return self.url_for(IMAGE)

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

    def sent(self, path: str) -> int:
        """Body bytes sent for ``path``, over all its GETs."""
        return sum(r.sent for r in self.gets(path))

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

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
        body = self.files.get(path, self.default)
        conn = h.connection
        with self._lock:
            holds = self._holds.get(path)
            hold_at = holds.pop(0) if holds else None
            length = None if path in self.no_length else len(body or b"")
            get = Get(path, length, hold_at)
            self.requests.append(get)
            self.active += 1
            others = [c for c in self._open if not _hung_up(c, 0.0)]
            self.peak = max(self.peak, 1 + len(others))
            self._open.add(conn)
        try:
            self.gate.wait(GATE_LIMIT)
            if body is None:
                h.send_response(404)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(200)
            if get.length is not None:
                h.send_header("Content-Length", str(get.length))
            h.end_headers()
            h.wfile.flush()
            if self.stall:
                self._wait(conn, STALL_LIMIT)
                return
            self._send(h, get, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (too slow, cancelled, killed)
        finally:
            with self._lock:
                self.active -= 1
                self._open.discard(conn)

    def _send(self, h: http.server.BaseHTTPRequestHandler, get: Get, body: bytes) -> None:
        chunk = CHUNK if self.drip is None else 1
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
            pause = self.drip if self.drip is not None else self.delay.get(get.path, 0.0)
            if self._wait(h.connection, pause) != "done":
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
