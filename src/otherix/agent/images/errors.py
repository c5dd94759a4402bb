"""``ImageError``: the one exception the image cache and the disk code raise.

Owns the failure vocabulary of ``otherix.agent.images``. Every failure a caller
can see is an ``ImageError`` with a stable snake_case ``code`` (the agent puts
it in the failed task's result) and a typed ``retryable`` flag, so the daemon
never parses messages to decide whether to try again. ``str(err)`` is
``"<code>: <message>"``, the shape the reference contract prints
(``checksum_mismatch: url … served sha …, expected …``).

    code                 retryable  raised when
    image_unavailable    no*        URL unusable (no basename, bad scheme), size cap,
                                    or the pool cannot store the image (*yes for I/O)
    checksum_mismatch    no         the served bytes do not hash to the pinned sha256
    image_collision      no         same basename, different URL, different content
    download_failed      yes        HTTP status, timeout, truncation, redirects, SSRF
                                    refusal (no: a refused address stays refused)
    pool_full            yes        not enough room in the pool, or ENOSPC mid-write
    disk_too_small       no         disk_gib x 2^30 is below the image's virtual size
    clone_failed         yes        reflink/copy/qemu-img failed while making a disk
    unsupported_format   no         not raw/qcow2, bad qcow2 header, backing file

Callers: ``cache``, ``download``, ``formats``, ``disks``; the agent daemon.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["RETRYABLE_BY_DEFAULT", "ImageError", "ImageErrorCode"]

ImageErrorCode = Literal[
    "image_unavailable",
    "checksum_mismatch",
    "image_collision",
    "download_failed",
    "pool_full",
    "disk_too_small",
    "clone_failed",
    "unsupported_format",
]

_CODES: Final = frozenset(get_args(ImageErrorCode))

#: Whether a code is worth retrying when the raiser does not say otherwise.
RETRYABLE_BY_DEFAULT: Final[dict[str, bool]] = {
    "image_unavailable": False,
    "checksum_mismatch": False,
    "image_collision": False,
    "download_failed": True,
    "pool_full": True,
    "disk_too_small": False,
    "clone_failed": True,
    "unsupported_format": False,
}


class ImageError(Exception):
    """A failure of the image cache or of disk materialisation, with a stable code."""

    def __init__(
        self, code: ImageErrorCode, message: str, *, retryable: bool | None = None
    ) -> None:
        if code not in _CODES:
            raise ValueError(f"unknown image error code {code!r}")
        self.code: ImageErrorCode = code
        self.message = message
        self.retryable: bool = RETRYABLE_BY_DEFAULT[code] if retryable is None else retryable
        super().__init__(f"{code}: {message}")

    def __repr__(self) -> str:
        return f"ImageError({self.code!r}, {self.message!r}, retryable={self.retryable})"
