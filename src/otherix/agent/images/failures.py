"""How a download fails: the one place a network failure becomes an ``ImageError``.

Owns the messages and codes of ``download``'s failures: ``download_failed``
for a status, a timeout, a TLS or protocol error, a refused connection or a
truncated body; ``download_too_slow`` for the rate floor's verdict (with the
rate seen and the window in the message and in ``details``). Called by
``download`` only, which chains the original exception with ``from exc``.
"""

from __future__ import annotations

import http.client
import ssl

from otherix.agent import fs
from otherix.agent.images.config import ImageCacheSettings
from otherix.agent.images.errors import ImageError
from otherix.agent.images.rate import TooSlow, human_rate
from otherix.agent.images.transport import ConnectFailed, Deadline, Target

__all__ = ["expired", "failed", "read_failed", "too_slow", "translate", "tripped"]


def failed(message: str, *, retryable: bool | None = None) -> ImageError:
    return ImageError("download_failed", message, retryable=retryable)


def expired(settings: ImageCacheSettings) -> ImageError:
    return failed(f"timed out: download not finished after {settings.total_timeout:g}s")


def too_slow(slow: TooSlow, target: Target, size: int) -> ImageError:
    return ImageError(
        "download_too_slow",
        f"{target.shown} sent {slow.received} bytes in the last {slow.seconds:.1f}s "
        f"({human_rate(slow.rate)}), below the minimum of {human_rate(slow.min_rate)} "
        f"averaged over {slow.window:g}s (agent keys images.min_rate_bytes_per_second "
        "and images.min_rate_window)",
        details={
            "rate_bytes_per_second": round(slow.rate, 1),
            "window_seconds": round(slow.seconds, 1),
            "bytes_in_window": slow.received,
            "bytes_done": size,
            "min_rate_bytes_per_second": slow.min_rate,
            "min_rate_window_seconds": slow.window,
        },
    )


def tripped(deadline: Deadline, target: Target, settings: ImageCacheSettings) -> ImageError | None:
    """The watchdog's verdict as an ImageError, if it cut the connection."""
    if deadline.expired:
        return expired(settings)
    if deadline.too_slow is not None:
        return too_slow(deadline.too_slow, target, deadline.received_bytes)
    return None


def read_failed(
    exc: BaseException, target: Target, settings: ImageCacheSettings, deadline: Deadline
) -> ImageError:
    """A failure while reading the response, as an ImageError."""
    if (cut := tripped(deadline, target, settings)) is not None:
        return cut
    if isinstance(exc, http.client.IncompleteRead):
        return failed(f"truncated: {target.shown} ended the body early")
    return translate(exc, target, settings)


def translate(exc: BaseException, target: Target, settings: ImageCacheSettings) -> ImageError:
    """A network failure as an ImageError."""
    if isinstance(exc, ConnectFailed):
        if isinstance(exc.cause, TimeoutError):
            return failed(
                f"timed out connecting to {target.shown} after {settings.connect_timeout:g}s"
            )
        return failed(f"cannot connect to {target.shown}: {fs.strerror(exc.cause)}")
    if isinstance(exc, TimeoutError):
        return failed(f"timed out: no data from {target.shown} for {settings.read_timeout:g}s")
    if isinstance(exc, ssl.SSLError):
        return failed(f"TLS error talking to {target.shown}: {exc.reason or exc}")
    if isinstance(exc, http.client.HTTPException):
        return failed(f"bad response from {target.shown}: {type(exc).__name__} {exc}")
    return failed(f"fetching {target.shown}: {exc}")
