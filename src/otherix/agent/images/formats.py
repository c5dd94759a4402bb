"""Image formats: sniffing, the qcow2 header check, and every ``qemu-img`` call.

Owns what the agent believes about an image's bytes. ``cache`` sniffs and
checks a download before it enters the cache and asks ``qemu-img info`` for
its virtual size; ``disks`` uses ``info``, ``convert`` and ``resize``.

Formats: a file starting with the qcow2 magic ``QFI\\xfb`` is ``qcow2``,
anything else is ``raw``. A qcow2 header must be version 2 or 3 with sane
cluster bits and a non-zero size, and must **not** name a backing file or an
external data file: such an image would make a VM disk depend on (or read)
another file on the host, which the cache's full-copy design forbids and
which is a known way to read host files through a crafted image.

``qemu-img`` is always told the format (``-f``), never left to probe, so a
raw image whose bytes look like another format is never reinterpreted. It
runs with ``LC_ALL=C`` and a timeout; ``-U`` (force share) lets ``info`` read
a disk a running VM holds open.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from otherix.agent.images.errors import ImageError, ImageErrorCode

__all__ = [
    "FORMATS",
    "HEAD_BYTES",
    "QCOW2_MAGIC",
    "ImageFormat",
    "ImageInfo",
    "check_header",
    "convert",
    "header_virtual_size",
    "info",
    "resize",
    "sniff",
]

ImageFormat = Literal["qcow2", "raw"]
FORMATS: Final[tuple[ImageFormat, ...]] = ("qcow2", "raw")
QCOW2_MAGIC: Final = b"QFI\xfb"
#: Bytes of a file's start that ``sniff`` and ``check_header`` need (a v3 header is 104).
HEAD_BYTES: Final = 512

_V2_HEADER: Final = 72
_V3_HEADER: Final = 104
_INCOMPAT_EXTERNAL_DATA_FILE: Final = 1 << 2
_INFO_TIMEOUT: Final = 120.0
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


@dataclass(frozen=True)
class ImageInfo:
    """What ``qemu-img info`` says about a file."""

    format: ImageFormat
    virtual_size_bytes: int
    actual_size_bytes: int


def sniff(head: bytes) -> ImageFormat:
    """``qcow2`` if ``head`` starts with the qcow2 magic, else ``raw``."""
    return "qcow2" if head.startswith(QCOW2_MAGIC) else "raw"


def check_header(head: bytes) -> ImageFormat:
    """Sniff ``head`` and, for qcow2, check the header; raises ``unsupported_format``."""
    fmt = sniff(head)
    if fmt == "raw":
        return fmt
    if len(head) < _V2_HEADER:
        raise ImageError("unsupported_format", "qcow2 header invalid: file too short")
    version, backing_offset, backing_size, cluster_bits, size = struct.unpack_from(
        ">IQIIQ", head, 4
    )
    if version not in (2, 3):
        raise ImageError(
            "unsupported_format", f"qcow2 header invalid: version {version} (want 2 or 3)"
        )
    if not 9 <= cluster_bits <= 21:
        raise ImageError("unsupported_format", f"qcow2 header invalid: cluster_bits {cluster_bits}")
    if size == 0:
        raise ImageError("unsupported_format", "qcow2 header invalid: virtual size 0")
    if backing_offset != 0 or backing_size != 0:
        raise ImageError(
            "unsupported_format",
            "qcow2 image names a backing file; only self-contained images are accepted",
        )
    if version == 3:
        if len(head) < _V3_HEADER:
            raise ImageError("unsupported_format", "qcow2 header invalid: v3 header too short")
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        (header_length,) = struct.unpack_from(">I", head, 100)
        if header_length < _V3_HEADER:
            raise ImageError(
                "unsupported_format", f"qcow2 header invalid: header_length {header_length}"
            )
        if incompatible & _INCOMPAT_EXTERNAL_DATA_FILE:
            raise ImageError(
                "unsupported_format",
                "qcow2 image uses an external data file; only self-contained images are accepted",
            )
    return fmt


def header_virtual_size(head: bytes, file_size: int) -> int | None:
    """Virtual size from the bytes alone, or None.

    qcow2: the header's size field; raw: the file size rounded up to 512 bytes,
    as ``qemu-img info`` reports it.
    """
    if sniff(head) == "raw":
        return -(-file_size // 512) * 512
    if len(head) < _V2_HEADER:
        return None
    (size,) = struct.unpack_from(">Q", head, 24)
    return int(size)


def _qemu_img() -> str:
    exe = shutil.which("qemu-img")
    if exe is None:
        raise ImageError("clone_failed", "qemu-img not found on this node (install qemu-utils)")
    return exe


def _env() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C"}


def _fail(code: ImageErrorCode, what: str, proc: subprocess.CompletedProcess[bytes]) -> ImageError:
    detail = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return ImageError(code, f"{what}: {detail[-1] if detail else f'exit {proc.returncode}'}")


def _run(args: list[str], code: ImageErrorCode, what: str, timeout: float) -> bytes:
    try:
        proc = subprocess.run(  # noqa: S603 - fixed executable, no shell
            args, capture_output=True, env=_env(), timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageError(code, f"{what}: timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise ImageError(code, f"{what}: {exc}") from exc
    if proc.returncode != 0:
        raise _fail(code, what, proc)
    return proc.stdout


def info(path: Path, fmt: ImageFormat, *, code: ImageErrorCode = "unsupported_format") -> ImageInfo:
    """``qemu-img info --output=json -f fmt``; refuses backing and external data files."""
    out = _run(
        [_qemu_img(), "info", "--output=json", "-U", "-f", fmt, str(path)],
        code,
        f"qemu-img info {path.name}",
        _INFO_TIMEOUT,
    )
    try:
        data = json.loads(out)
        virtual = int(data["virtual-size"])
        actual = int(data.get("actual-size", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(code, f"qemu-img info {path.name}: unreadable output") from exc
    if data.get("format") != fmt:
        raise ImageError(code, f"qemu-img info {path.name}: format {data.get('format')!r}")
    if "backing-filename" in data or "full-backing-filename" in data:
        raise ImageError(
            "unsupported_format",
            f"{path.name} names a backing file; only self-contained images are accepted",
        )
    specific = (data.get("format-specific") or {}).get("data") or {}
    if "data-file" in specific:
        raise ImageError(
            "unsupported_format",
            f"{path.name} uses an external data file; only self-contained images are accepted",
        )
    return ImageInfo(format=fmt, virtual_size_bytes=virtual, actual_size_bytes=actual)


def convert(
    src: Path,
    src_fmt: ImageFormat,
    dst: Path,
    dst_fmt: ImageFormat,
    *,
    progress: Callable[[float], None] | None = None,
    timeout: float = 6 * 3600,
) -> None:
    """``qemu-img convert -f src_fmt -O dst_fmt src dst``; ``progress(fraction)`` from ``-p``."""
    args = [_qemu_img(), "convert", "-p", "-f", src_fmt, "-O", dst_fmt, str(src), str(dst)]
    what = f"qemu-img convert {src.name} to {dst_fmt}"
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed executable, no shell
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
        )
    except OSError as exc:
        raise ImageError("clone_failed", f"{what}: {exc}") from exc
    with proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            while chunk := os.read(proc.stdout.fileno(), 4096):
                found = _PERCENT.findall(chunk)
                if found and progress is not None:
                    progress(float(found[-1]) / 100)
            stderr = proc.stderr.read()
            returncode = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if returncode != 0:
        raise _fail(
            "clone_failed", what, subprocess.CompletedProcess(args, returncode, b"", stderr)
        )


def resize(path: Path, fmt: ImageFormat, size_bytes: int) -> None:
    """``qemu-img resize -f fmt path size_bytes`` (grow only; callers check)."""
    _run(
        [_qemu_img(), "resize", "-f", fmt, str(path), str(size_bytes)],
        "clone_failed",
        f"qemu-img resize {path.name}",
        _INFO_TIMEOUT,
    )
