"""The agent's disk transfer endpoint: another node's agent pulls a VM disk from here
during a move across nodes (``otherix vm move NAME --pool P --node OTHER``, issue 16).

Owns :class:`TransferServer`, an HTTP server on the agent setting
``transfer.listen`` (``host:port``; port 0 picks a free port, so tests run
several agents on one host; an empty value turns it off). It serves nothing
but the disks the control plane has asked this node to export:

- A ``vm.export`` task (args ``{vm_id, format, pool_name, pool_path, ticket,
  token_sha256}``) registers a *ticket* while the task is in the node's
  desired state (``TaskRunner`` calls :meth:`TransferServer.sync` on each
  step); the control plane finishes the task when the move ends, which
  revokes the ticket. The control plane keeps no secret: the target agent's
  ``vm.move`` carries ``ticket`` and a ``secret`` the control plane derives
  for that ticket with its own key when it builds the target's desired state
  (never stored, never in a task view); this node knows only the secret's
  sha256.
- ``GET /v1/transfers/{ticket}/sha256`` answers ``{sha256, size}`` of the disk
  (hashed once per file version, at the agent's move rate).
- ``GET /v1/transfers/{ticket}`` streams the disk; a ``Range: bytes=N-``
  header resumes from byte N (206), so a dropped connection costs only what
  was not received.
- Every request needs ``Authorization: Bearer <secret>``; an unknown ticket and a
  wrong secret get the same 403 (compared in constant time), so the endpoint
  says nothing about which tickets exist.

The file is derived from the registry (the pool's root, the VM id and the
format; ``vms/{vm}/disk.{format}``), never from the request, and opened
without following symlinks. The transfer is authenticated but not
encrypted: run it on the nodes' private network (docs/pool-contract.md §7.6).
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import ipaddress
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from otherix.agent import fs
from otherix.agent.images.disks import VMS_DIR
from otherix.agent.vmwork import PoolResolver
from otherix.domain.scrub import pace
from otherix.models.heartbeat import AgentTask

__all__ = ["VM_EXPORT", "TransferServer", "advertised_host"]

_log = logging.getLogger(__name__)

VM_EXPORT: Final = "vm.export"
_CHUNK: Final = 1024 * 1024
_PATH_RE: Final = re.compile(r"^/v1/transfers/([0-9a-f-]{36})(/sha256)?$")
_RANGE_RE: Final = re.compile(r"^bytes=(\d{1,19})-$")  # an int64 offset at most
_UUID_RE: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Ticket:
    vm_id: str
    format: str
    pool_name: str
    pool_path: str | None
    token_sha256: str

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> Ticket | None:
        """The ticket of a ``vm.export`` task; None when its args are malformed."""
        fields = {k: args.get(k) for k in ("vm_id", "format", "pool_name", "token_sha256")}
        if not all(isinstance(v, str) and v for v in fields.values()):
            return None
        path = args.get("pool_path")
        if fields["format"] not in ("qcow2", "raw") or not _UUID_RE.match(str(fields["vm_id"])):
            return None
        if not re.fullmatch(r"[0-9a-f]{64}", str(fields["token_sha256"])):
            return None
        return cls(
            vm_id=str(fields["vm_id"]),
            format=str(fields["format"]),
            pool_name=str(fields["pool_name"]),
            pool_path=path if isinstance(path, str) else None,
            token_sha256=str(fields["token_sha256"]),
        )


def advertised_host(listen_host: str, control_plane_url: str | None) -> str:
    """The address other nodes reach this one at: the listen host, or for an unspecified
    one (``0.0.0.0``, ``::``) the local address this host routes to the control plane
    from (no packet is sent), else its hostname."""
    try:
        if not ipaddress.ip_address(listen_host).is_unspecified:
            return listen_host
    except ValueError:
        return listen_host  # a name
    if control_plane_url:
        target = urlsplit(control_plane_url)
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((target.hostname or "127.0.0.1", target.port or 443))
                return str(s.getsockname()[0])
        except OSError:
            pass
    return socket.gethostname()


class TransferServer:
    """The transfer endpoint (module docstring). ``start`` binds; ``url`` is what the
    node reports in its capabilities (``transfer_url``)."""

    def __init__(
        self,
        listen: str,
        pools: PoolResolver,
        *,
        control_plane_url: str | None = None,
        max_bytes_per_second: int | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - the operator's setting
        self._port = int(port)
        self._pools = pools
        self._cp_url = control_plane_url
        self._rate = max_bytes_per_second
        self._lock = threading.Lock()
        self._tickets: dict[str, Ticket] = {}
        self._hashes: dict[tuple[str, int, int, int], str] = {}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self) -> TransferServer:
        handler = _handler_for(self)
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self._server = Server((self._host, self._port), handler)
        port = self._server.server_address[1]
        host = advertised_host(self._host, self._cp_url)
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="transfer", daemon=True
        )
        self._thread.start()
        _log.info("disk transfer endpoint listening", extra={"url": self.url})
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- tickets (the task runner's side) ---------------------------------------------

    def sync(self, tasks: Sequence[AgentTask]) -> None:
        """Hold exactly the tickets of the ``vm.export`` tasks in ``tasks``."""
        wanted: dict[str, Ticket] = {}
        for task in tasks:
            if task.type != VM_EXPORT:
                continue
            ticket_id = task.args.get("ticket")
            ticket = Ticket.parse(task.args)
            if isinstance(ticket_id, str) and _UUID_RE.match(ticket_id) and ticket is not None:
                wanted[ticket_id] = ticket
        with self._lock:
            added = wanted.keys() - self._tickets.keys()
            gone = self._tickets.keys() - wanted.keys()
            self._tickets = wanted
        for t in sorted(added):
            _log.info("transfer ticket registered", extra={"ticket": t})
        for t in sorted(gone):
            _log.info("transfer ticket revoked", extra={"ticket": t})

    def tickets(self) -> set[str]:
        with self._lock:
            return set(self._tickets)

    # -- serving (the handler threads) ------------------------------------------------

    def authorise(self, ticket_id: str, header: str | None) -> Ticket | None:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
        secret = header[7:] if header and header.startswith("Bearer ") else ""
        digest = hashlib.sha256(secret.encode()).hexdigest()
        expected = ticket.token_sha256 if ticket is not None else "0" * 64
        ok = hmac.compare_digest(digest, expected)
        return ticket if ok and ticket is not None else None

    def disk(self, ticket: Ticket) -> Path:
        root = self._pools.resolve(ticket.pool_name, ticket.pool_path)
        path = fs.safe_join(root / VMS_DIR, ticket.vm_id, f"disk.{ticket.format}")
        fs.ensure_within(root, path.parent)
        return path

    def sha256(self, fd: int) -> tuple[str, int]:
        st = os.fstat(fd)
        key = (str(st.st_dev), st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._hashes.get(key)
        if known is not None:
            return known, st.st_size
        digest = hashlib.sha256()
        start, done = time.monotonic(), 0
        while chunk := os.pread(fd, _CHUNK, done):
            digest.update(chunk)
            done += len(chunk)
            self.pace(done, start)
        value = digest.hexdigest()
        with self._lock:
            self._hashes = {key: value}  # one file version at a time is plenty
        return value, st.st_size

    def pace(self, done: int, start: float) -> None:
        if self._rate:
            wait = pace(done, time.monotonic() - start, self._rate)
            if wait > 0:
                time.sleep(wait)


def _handler_for(server: TransferServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "otherix-agent-transfer"
        #: seconds a connection may sit idle (no request line, a stalled reader) before
        #: it is closed, so idle connections cannot pile up threads
        timeout = 60

        def log_message(self, format: str, *args: Any) -> None:
            _log.debug("transfer: " + format, *args)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            match = _PATH_RE.match(self.path)
            if match is None:
                self._answer(404, {"error": "not_found"})
                return
            ticket = server.authorise(match.group(1), self.headers.get("Authorization"))
            if ticket is None:
                self._answer(403, {"error": "forbidden"})
                return
            try:
                path = server.disk(ticket)
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except Exception as exc:  # not registered, not ready, gone
                self._answer(409, {"error": "disk_unavailable", "message": str(exc)})
                return
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    self._answer(409, {"error": "disk_unavailable", "message": "not a file"})
                elif match.group(2):
                    sha, size = server.sha256(fd)
                    self._answer(200, {"sha256": sha, "size": size})
                else:
                    self._send(fd)
            finally:
                os.close(fd)

        def _send(self, fd: int) -> None:
            size = os.fstat(fd).st_size
            start = 0
            wanted = self.headers.get("Range")
            if wanted is not None:
                got = _RANGE_RE.match(wanted.strip())
                if got is None or int(got.group(1)) > size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(got.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{max(size - 1, start)}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            offset, began = start, time.monotonic()
            try:
                while offset < size:
                    chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    offset += len(chunk)
                    server.pace(offset - start, began)
            except (BrokenPipeError, ConnectionResetError):
                _log.info("transfer cut by the receiver", extra={"at": offset})

    return Handler
