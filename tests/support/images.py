"""A local image server for tests: one file on loopback, downloads counted."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

IMAGE = "tiny-cloudimg-amd64.img"


class ImageServer:
    """Serves one qcow2 file on loopback and counts the downloads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hits = 0
        data = path.read_bytes()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{IMAGE}"

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
