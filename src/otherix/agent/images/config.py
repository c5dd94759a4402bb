"""``ImageCacheSettings``: every limit and timeout of the image cache, with defaults.

Owns the knobs of ``otherix.agent.images``. The agent's composition root
builds one from its own settings and passes it to ``ImageCache``; tests build
their own. Defaults follow docs/pool-contract.md §10.2: 64 GiB cap, 30 s
connect timeout, 5 redirects, 1 h per download; the read timeout (60 s), the
free-space margin (256 MiB), the rate floor (64 KiB/s over 30 s) and the SSRF
switches are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from otherix.agent.images import ssrf

__all__ = ["GiB", "ImageCacheSettings", "KiB", "MiB"]

GiB: Final = 1 << 30
MiB: Final = 1 << 20
KiB: Final = 1 << 10


@dataclass(frozen=True)
class ImageCacheSettings:
    """Limits of the image cache; defaults follow docs/pool-contract.md §10.2."""

    #: Largest image accepted, in bytes (docs/pool-contract.md: 64 GiB).
    max_image_bytes: int = 64 * GiB
    connect_timeout: float = 30.0
    #: Seconds without a single byte from the server before giving up.
    read_timeout: float = 60.0
    #: Seconds for a whole download (docs/pool-contract.md: the HTTP client's 1 h).
    total_timeout: float = 3600.0
    #: A download slower than this, averaged over ``min_rate_window``, fails
    #: ``download_too_slow`` (0: no floor). Checked from one window after the
    #: connection is up, so a slow start is not punished.
    min_rate_bytes_per_second: int = 64 * KiB
    min_rate_window: float = 30.0
    max_redirects: int = 5
    #: Free space that must remain in the pool after a download of known size.
    space_margin_bytes: int = 256 * MiB
    allow_loopback_and_link_local: bool = False
    #: Networks always allowed by the SSRF guard (e.g. ``("10.1.2.3/32",)``).
    allowed_networks: tuple[str, ...] = ()
    #: CA bundle for https sources (None: the system's default store).
    ca_file: Path | None = None
    user_agent: str = "otherix-agent"
    #: Minimum seconds between two progress callbacks.
    progress_interval: float = 0.1

    def ssrf_policy(self) -> ssrf.SsrfPolicy:
        return ssrf.SsrfPolicy.with_networks(
            *self.allowed_networks,
            allow_loopback_and_link_local=self.allow_loopback_and_link_local,
        )
