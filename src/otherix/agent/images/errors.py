"""``ImageError``: the one exception the image cache and the disk code raise.

Owns the failure vocabulary of ``otherix.agent.images``. Every failure a caller
can see is an ``ImageError`` with a stable snake_case ``code`` (the agent puts
it in the failed task's result), optional ``details`` (a JSON object that goes
into the task's ``error.details``) and a typed ``retryable`` flag, so the
daemon never parses messages or compares codes to decide whether to try
again. ``retryable`` means exactly "the agent tries the ``vm.create`` again"
(``tasks.vm_create_attempts``): this table is the agent's one retry
classification, and a raiser overrides it only where one case of a code
differs (a bad redirect is a permanent ``download_failed``). ``str(err)`` is
``"<code>: <message>"``, the shape docs/pool-contract.md §10.2 gives
(``checksum_mismatch: url … served sha …, expected …``).

    code                 retryable  raised when
    image_unavailable    no*        URL unusable (no basename, bad scheme), size cap,
                                    or the pool cannot store the image (*yes for I/O)
    checksum_mismatch    no         the served bytes do not hash to the pinned sha256
    image_collision      no         same basename, different URL, different content
    download_failed      yes*       HTTP status, timeout, truncation, too many redirects
                                    (*no: a bad redirect or an https -> http downgrade)
    image_url_forbidden  no         the URL's host (or a redirect's) resolves to an
                                    address the SSRF guard refuses (loopback,
                                    link-local, metadata, ...); the message names the
                                    agent key that would allow it
    download_too_slow    no         the source sent less than
                                    ``min_rate_bytes_per_second`` averaged over
                                    ``min_rate_window`` (a stalled source included)
    pool_full            no         not enough room in the pool, or ENOSPC mid-write
                                    (waiting seconds does not free space)
    disk_too_small       no         disk_gib x 2^30 is below the image's virtual size
    clone_failed         yes        reflink/copy/qemu-img failed while making a disk
    unsupported_format   no         not raw/qcow2, bad qcow2 header, backing file

``download_too_slow`` is not retried: the floor is low (64 KiB/s over 30 s by
default), so a source below it is broken or hostile rather than briefly busy,
and every retry would hold one of its source's download slots for another
whole window.

Callers: ``cache``, ``download``, ``formats``, ``disks``; the agent daemon.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

__all__ = ["RETRYABLE_BY_DEFAULT", "ImageError", "ImageErrorCode"]

ImageErrorCode = Literal[
    "image_unavailable",
    "checksum_mismatch",
    "image_collision",
    "download_failed",
    "image_url_forbidden",
    "download_too_slow",
    "pool_full",
    "disk_too_small",
    "clone_failed",
    "unsupported_format",
]

_CODES: Final = frozenset(get_args(ImageErrorCode))

#: Whether the agent retries a code when the raiser does not say otherwise.
RETRYABLE_BY_DEFAULT: Final[dict[str, bool]] = {
    "image_unavailable": False,
    "checksum_mismatch": False,
    "image_collision": False,
    "download_failed": True,
    "image_url_forbidden": False,
    "download_too_slow": False,
    "pool_full": False,
    "disk_too_small": False,
    "clone_failed": True,
    "unsupported_format": False,
}


class ImageError(Exception):
    """A failure of the image cache or of disk materialisation, with a stable code."""

    def __init__(
        self,
        code: ImageErrorCode,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if code not in _CODES:
            raise ValueError(f"unknown image error code {code!r}")
        self.code: ImageErrorCode = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retryable: bool = RETRYABLE_BY_DEFAULT[code] if retryable is None else retryable
        super().__init__(f"{code}: {message}")

    def __repr__(self) -> str:
        return f"ImageError({self.code!r}, {self.message!r}, retryable={self.retryable})"
