"""A local image server for tests: one file on loopback, downloads counted.

``ImageServer(path)`` serves the file's bytes at every path. Hostile modes
for the fair-download tests: ``drip=S`` sends the body one byte every ``S``
seconds; ``stall=True`` sends the headers and then nothing. Either way the
connection is held until the client gives up or the server is closed
(``__exit__`` ends every held response at once); a client that hangs up is
noticed within 20 ms. ``hits`` counts requests, ``active`` the responses in
flight right now, ``served`` the complete ones, ``peak`` the most requests
the clients had open at once (checked at each new request: a response whose
client has already hung up does not count, however late its thread sees it).
"""

from __future__ import annotations

import http.server
import select
import socket
import threading
import time
from pathlib import Path

IMAGE = "tiny-cloudimg-amd64.img"


def _hung_up(conn: socket.socket, wait: float) -> bool:
    """True if the client closed ``conn`` (it sends nothing after its request, so a
    readable socket means EOF or a reset); waits at most ``wait`` seconds to see."""
    try:
        readable, _, _ = select.select([conn], [], [], wait)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class ImageServer:
    """Serves one file on loopback and counts the downloads (module docstring)."""

    def __init__(self, path: Path, *, drip: float | None = None, stall: bool = False) -> None:
        self.path = path
        self.hits = 0
        self.active = 0
        self.served = 0
        #: most downloads the clients had open at once (one that hung up no longer counts)
        self.peak = 0
        self.open: set[socket.socket] = set()
        self.closing = threading.Event()
        lock = threading.Lock()
        data = path.read_bytes()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    outer.hits += 1
                    outer.active += 1
                    others = [c for c in outer.open if not _hung_up(c, 0.0)]
                    outer.peak = max(outer.peak, 1 + len(others))
                    outer.open.add(self.connection)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if stall:
                        self.wfile.flush()
                        outer.hold(self.connection, 600)
                        return
                    if drip is None:
                        self.wfile.write(data)
                    else:
                        for i in range(len(data)):
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                            if outer.hold(self.connection, drip):
                                return
                    with lock:
                        outer.served += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (too slow, cancelled)
                finally:
                    with lock:
                        outer.active -= 1
                        outer.open.discard(self.connection)

            def log_message(self, *_args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def hold(self, conn: socket.socket, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as the client hung up or the server closes."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.closing.is_set() or _hung_up(conn, min(left, 0.02)):
                return True
        return self.closing.is_set()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return self.url_for(IMAGE)

    def url_for(self, name: str) -> str:
        """A URL on this server whose basename is ``name`` (every path serves the file)."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
