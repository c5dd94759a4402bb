"""Fetching an image over HTTP(S) into a scratch file, hashed as it streams.

Owns the download: the redirect loop with the SSRF check of every hop, streaming with an in-stream
sha256 and a size cap, and the translation of every disk failure into
``ImageError``; network failures become ``ImageError`` in ``failures`` (that
boundary's one choke point; the wire itself is ``transport``). Called by
``cache`` only.

How one fetch goes:

1. For the URL, and then for each redirect target, the host is resolved once
   and every address checked by ``ssrf.resolve_allowed``; the request goes to
   that very address (``transport.open_get``).
2. Redirects (301/302/303/307/308) are followed by hand, at most
   ``max_redirects``; one more is ``stopped after N redirects``. An
   https → http downgrade is refused.
3. A non-2xx status is ``source returned HTTP N``. A ``Content-Length`` over
   the cap is refused before any byte is read; ``room(content_length)`` lets
   the cache refuse with ``pool_full`` before anything is written.
4. The body streams into the scratch file (O_EXCL, 0600): read straight into
   1 MiB buffers, written from there, and hashed on a helper thread (a ring
   of 8 buffers), so hashing overlaps the network and the disk. The bytes are
   hashed as served (``Accept-Encoding: identity``). Every 16 MiB a second
   helper runs ``fdatasync`` so the disk writes behind the download instead
   of all at the final ``fsync``.
5. Over the cap, short of ``Content-Length``, empty, too slow (``read_timeout``
   without a byte; ``total_timeout`` overall, enforced by ``transport.Deadline``
   even inside a read) or ENOSPC: the scratch file is removed and the matching
   ``ImageError`` raised.
6. Below the rate floor (``min_rate_bytes_per_second`` averaged over
   ``min_rate_window``, checked from one window after each connection on:
   ``rate.RateFloor``, sampled by ``transport.Deadline``, which cuts the
   connection): ``download_too_slow`` with the rate seen in the message and
   in ``details``; a source that stalls after its headers is one of these.
"""

from __future__ import annotations

import errno
import http.client
import os
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from otherix.agent import fs
from otherix.agent.images import formats, ssrf
from otherix.agent.images.config import ImageCacheSettings, MiB
from otherix.agent.images.errors import ImageError
from otherix.agent.images.failures import failed, read_failed, translate, tripped
from otherix.agent.images.progress import Progress, Throttle
from otherix.agent.images.rate import RateFloor
from otherix.agent.images.sink import Flusher, Hasher
from otherix.agent.images.transport import ConnectFailed, Deadline, Target, open_get, parse_url

__all__ = ["Fetched", "fetch", "make_ssl_context"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_BUFFER: Final = 1 * MiB
_BUFFERS: Final = 8
_FLUSH_EVERY: Final = 16 * MiB


@dataclass(frozen=True)
class Fetched:
    """A finished download: the scratch file (fsynced), its sha256, size and first bytes."""

    path: Path
    sha256: str
    size_bytes: int
    head: bytes


def make_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def _connect(
    target: Target,
    addresses: list[str],
    settings: ImageCacheSettings,
    ssl_context: Callable[[], ssl.SSLContext],
    deadline: Deadline,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A response from the first of ``addresses`` that accepts a connection."""
    last: ConnectFailed | None = None
    for address in addresses:
        try:
            return open_get(
                target,
                address,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                ssl_context=ssl_context() if target.scheme == "https" else None,
                user_agent=settings.user_agent,
                deadline=deadline,
            )
        except ConnectFailed as exc:
            last = exc  # try the host's next address
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise read_failed(exc, target, settings, deadline) from exc
    assert last is not None
    raise translate(last, target, settings) from last.cause


def _next_hop(current: Target, location: str | None, status: int) -> Target:
    if not location:
        raise failed(f"source returned HTTP {status} without a Location")
    url = urllib.parse.urljoin(current.url, location)
    try:
        nxt = parse_url(url)
    except ImageError as exc:
        raise failed(f"bad redirect: {exc.message}", retryable=False) from exc
    if current.scheme == "https" and nxt.scheme == "http":
        raise failed(f"refusing redirect from https to http ({nxt.shown})", retryable=False)
    return nxt


def _fill(
    response: http.client.HTTPResponse, buffer: bytearray, arrived: Callable[[int], None]
) -> int:
    """Fill ``buffer`` from the body (short only at its end); the bytes read.

    One socket read at a time (``read1``), telling ``arrived`` the running
    count after each, so the rate floor sees a dripping source byte by byte
    where ``readinto`` would block until the whole buffer is full.
    """
    filled = 0
    with memoryview(buffer) as view:
        while filled < len(buffer):
            chunk = response.read1(len(buffer) - filled)
            if not chunk:
                break
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            arrived(filled)
    return filled


def _stream(
    response: http.client.HTTPResponse,
    fd: int,
    target: Target,
    length: int | None,
    settings: ImageCacheSettings,
    deadline: Deadline,
    throttle: Throttle,
) -> tuple[str, int, bytes]:
    head = b""
    size = flushed = 0
    flusher, hasher = Flusher(fd), Hasher(_BUFFER, _BUFFERS)

    def arrived(n: int) -> None:  # every socket read: the rate floor and progress see it
        deadline.received(size + n)
        throttle.update(size + n)

    try:
        while True:
            buffer = hasher.take()
            try:
                n = _fill(response, buffer, arrived)
            except (OSError, http.client.HTTPException) as exc:
                raise read_failed(exc, target, settings, deadline) from exc
            if not n:
                break
            size += n
            if size > settings.max_image_bytes:
                raise ImageError(
                    "image_unavailable", f"image exceeds max size {settings.max_image_bytes} bytes"
                )
            with memoryview(buffer) as view:
                if len(head) < formats.HEAD_BYTES:
                    head += bytes(view[: min(n, formats.HEAD_BYTES - len(head))])
                fs.write_all(fd, view[:n])
            hasher.submit(buffer, n)
            if size - flushed >= _FLUSH_EVERY:
                flushed = size
                flusher.kick()
    finally:
        flusher.stop()
        sha = hasher.stop()
    if (cut := tripped(deadline, target, settings)) is not None and (
        length is None or size != length
    ):
        raise cut  # the read ended because the watchdog shut the socket
    if flusher.error is not None:
        raise flusher.error
    if length is not None and size != length:
        raise failed(f"truncated: {target.shown} sent {size} of {length} bytes")
    if size == 0:
        raise failed(f"{target.shown} returned an empty body")
    os.fsync(fd)
    return sha, size, head


def _receive(
    response: http.client.HTTPResponse,
    dest: Path,
    target: Target,
    length: int | None,
    settings: ImageCacheSettings,
    deadline: Deadline,
    progress: Progress | None,
) -> Fetched:
    fd = fs.create_exclusive(dest, 0o600)
    throttle = Throttle(progress, length, interval=settings.progress_interval)
    try:
        sha, size, head = _stream(response, fd, target, length, settings, deadline, throttle)
    except OSError as exc:  # the disk side: network errors are ImageErrors by now
        if exc.errno in _NO_SPACE:
            raise ImageError(
                "pool_full", f"pool ran out of space downloading {target.shown}"
            ) from exc
        raise ImageError(
            "image_unavailable", f"cannot write scratch file: {fs.strerror(exc)}", retryable=True
        ) from exc
    finally:
        os.close(fd)
    throttle.finish(size)
    return Fetched(dest, sha, size, head)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """The declared body length (None when chunked or delimited by close)."""
    return response.length if response.length is not None and response.length >= 0 else None


def fetch(
    url: str,
    dest: Path,
    *,
    settings: ImageCacheSettings,
    ssl_context: Callable[[], ssl.SSLContext],
    resolver: ssrf.Resolver = ssrf.system_resolver,
    room: Callable[[int | None], None] = lambda _length: None,
    progress: Progress | None = None,
) -> Fetched:
    """Download ``url`` into the new file ``dest``; on any failure ``dest`` does not exist.

    ``ssl_context()`` is called only for an https hop.
    """
    policy = settings.ssrf_policy()
    target = parse_url(url)
    floor = (
        RateFloor(settings.min_rate_bytes_per_second, settings.min_rate_window)
        if settings.min_rate_bytes_per_second > 0
        else None
    )
    deadline = Deadline(settings.total_timeout, floor=floor)
    redirects = 0
    try:
        while True:
            addresses = ssrf.resolve_allowed(target.host, target.port, policy, resolver)
            conn, response = _connect(target, addresses, settings, ssl_context, deadline)
            try:
                status = response.status
                if status in _REDIRECTS:
                    redirects += 1
                    if redirects > settings.max_redirects:
                        raise failed(f"stopped after {settings.max_redirects} redirects")
                    target = _next_hop(target, response.getheader("location"), status)
                    continue
                if not 200 <= status < 300:
                    raise failed(f"source returned HTTP {status}")
                length = _content_length(response)
                if length is not None and length > settings.max_image_bytes:
                    raise ImageError(
                        "image_unavailable",
                        f"image exceeds max size {settings.max_image_bytes} bytes",
                    )
                room(length)
                return _receive(response, dest, target, length, settings, deadline, progress)
            finally:
                response.close()  # the response owns the socket once the server says close
                conn.close()
    except BaseException as exc:
        fs.remove_file(dest)
        if not isinstance(exc, ImageError) and (cut := tripped(deadline, target, settings)):
            raise cut from exc
        raise
    finally:
        deadline.cancel()
