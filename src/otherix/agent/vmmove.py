"""The work of a ``vm.move`` or ``vm.disk_remove`` task (``otherix vm move``, issue 16).

Called by the VM task workers (``otherix.agent.vmtasks``, their move lane: one
thread, so a move and the removal that follows an earlier one never overlap)
in a worker thread. Every failure leaves as a ``vmwork.TaskFailure``.

``vm.move`` args: ``{vm_id, format, source: {pool_name, pool_path}, target:
{pool_name, pool_path}}``. Both pools must be registered and ready on this
node. The disk is ``{source}/vms/{vm}/disk.{format}`` (derived from the
registry and the VM id, never from a path in the args); it is copied to
``{target}/scratch/move-{vm}.{uuid}.tmp`` (a reflink where the filesystem
shares extents, else a sparse-aware copy, after a room check), the sha256 of
source and copy are compared, and the copy is published as
``{target}/vms/{vm}/disk.{format}`` (rename, fsynced). Nothing here removes
the source: the control plane switches the disk to the target in one
transaction when the task succeeds and only then asks for the source's
removal (``vm.disk_remove``). So at every instant the store names one copy
that is complete.

A re-run (the agent was killed; the task is still in the desired state)
finds a published target copy: if its sha256 equals the source's it is the
result, else it is a stale leftover (the target is not the VM's disk until
the switch) and is replaced by a fresh verified copy. A killed copy leaves a
scratch temp, swept at the next start. The VM's QEMU must not run
(``vm_running``), and its restart policy is held for the move.

Progress: ``{bytes_done, bytes_total, phase}`` with ``phase`` ``source``
(hashing the source, 0-30), ``copy`` (30-65) then ``verify`` (hashing the
copy, 65-99). ``max_bytes_per_second`` (the
agent's ``tasks.move_max_bytes_per_second``; None: unlimited) paces every
byte read, copy and verify alike, so the VMs on the pools keep their disk
bandwidth.

Result: ``{vm_id, file_path, method ("reflink"|"copy"|"existing"), sha256,
bytes, virtual_size_bytes, disk_size_bytes}``, ``file_path`` as the node
names it.

``vm.disk_remove`` args: ``{vm_id, pool_name, pool_path, format, keep:
{pool_name, pool_path} | null}``: removes ``{pool}/vms/{vm}/`` (the copy a
move left behind: the source after a success, the target after a failure),
but only while the pool's declared disks hold no disk of that VM (it became
owned again: ``disk_owned``, nothing removed) and, with ``keep``, only while
``{keep}/vms/{vm}/disk.{format}`` is a regular file (the VM's one copy must
exist first: ``keep_missing``, nothing removed). Idempotent. Result:
``{vm_id, removed}``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import httpx

from otherix.agent import fs, fs_clone
from otherix.agent.images import ImageCache, formats
from otherix.agent.images.disks import DISK_MODE, VMS_DIR
from otherix.agent.vmwork import PoolResolver, TaskFailure, _node_path, _root, _str, _vm_id
from otherix.domain.scrub import pace

__all__ = [
    "PHASES",
    "VM_DISK_REMOVE",
    "VM_MOVE",
    "MoveArgs",
    "PoolOwnership",
    "RemoveArgs",
    "move",
    "remove_copy",
]

_log = logging.getLogger(__name__)

VM_MOVE: Final = "vm.move"
VM_DISK_REMOVE: Final = "vm.disk_remove"
_STEP: Final = 4 * 1024 * 1024
_READ: Final = 1024 * 1024
#: progress (percent) of each phase
PHASES: Final = {"source": (0, 30), "copy": (30, 65), "verify": (65, 99)}
_DIR_MODE: Final = 0o750

#: ``(phase, bytes_done, bytes_total)``; may raise to cancel
MoveProgress = Callable[[str, int, int], None]


class PoolOwnership(Protocol):
    """``PoolState.declares_vm``: whether the pool's declared disks hold one of the VM."""

    def declares_vm(self, name: str, vm_id: str) -> bool: ...


@dataclass(frozen=True)
class PoolRef:
    name: str
    path: str | None

    @classmethod
    def parse(cls, args: Mapping[str, Any], key: str) -> PoolRef:
        raw = args.get(key)
        if not isinstance(raw, Mapping):
            raise TaskFailure("validation_failed", f"task argument {key} must be an object")
        return cls(name=_str(raw, "pool_name") or "", path=_str(raw, "pool_path", optional=True))


def _format(args: Mapping[str, Any]) -> str:
    fmt = args.get("format") or "qcow2"
    if fmt not in formats.FORMATS:
        raise TaskFailure("unsupported_format", f"disk format {fmt!r} (want qcow2 or raw)")
    return str(fmt)


@dataclass(frozen=True)
class Transfer:
    """Where a move across nodes pulls the disk from: the source agent's transfer
    endpoint, the ticket and its secret (``otherix.agent.transfer``)."""

    url: str
    ticket: str
    secret: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Transfer:
        url, ticket, secret = (raw.get(k) for k in ("url", "ticket", "secret"))
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise TaskFailure("validation_failed", "task argument transfer.url must be a URL")
        if not isinstance(ticket, str) or not isinstance(secret, str) or not secret:
            raise TaskFailure("validation_failed", "task argument transfer lacks its ticket")
        return cls(url=url.rstrip("/"), ticket=ticket, secret=secret)


@dataclass(frozen=True)
class MoveArgs:
    vm_id: str
    format: str
    source: PoolRef
    target: PoolRef
    #: a move across nodes: pull from the source node's agent (None: both pools here)
    transfer: Transfer | None = None

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> MoveArgs:
        raw = args.get("transfer")
        if raw is not None and not isinstance(raw, Mapping):
            raise TaskFailure("validation_failed", "task argument transfer must be an object")
        return cls(
            vm_id=_vm_id(args),
            format=_format(args),
            source=PoolRef.parse(args, "source"),
            target=PoolRef.parse(args, "target"),
            transfer=Transfer.parse(raw) if raw is not None else None,
        )


@dataclass(frozen=True)
class RemoveArgs:
    vm_id: str
    format: str
    pool: PoolRef
    keep: PoolRef | None

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> RemoveArgs:
        return cls(
            vm_id=_vm_id(args),
            format=_format(args),
            pool=PoolRef(
                name=_str(args, "pool_name") or "", path=_str(args, "pool_path", optional=True)
            ),
            keep=PoolRef.parse(args, "keep") if args.get("keep") is not None else None,
        )


class _Pacer:
    """Progress over one phase, sleeping so the bytes read average at most ``rate``/s."""

    def __init__(
        self, phase: str, total: int, rate: int | None, progress: MoveProgress | None
    ) -> None:
        self.phase, self.total, self.rate, self.progress = phase, total, rate, progress
        self.start = time.monotonic()
        self.done = 0

    def at(self, done: int) -> None:
        self.done = done
        if self.rate:
            wait = pace(done, time.monotonic() - self.start, self.rate)
            if wait > 0:
                time.sleep(wait)
        if self.progress is not None:
            self.progress(self.phase, min(done, self.total), self.total)


def _disk(root: Path, vm: str, fmt: str) -> Path:
    vms = root / VMS_DIR
    path = fs.safe_join(vms, vm, f"disk.{fmt}")
    try:
        fs.ensure_within(root, path.parent)
    except fs.UnsafePath as exc:
        raise TaskFailure("move_failed", str(exc)) from None
    return path


def _regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TaskFailure("move_failed", f"cannot stat {path}: {fs.strerror(exc)}") from None
    return st if stat.S_ISREG(st.st_mode) else None


def sha256_of(path: Path, pacer: _Pacer) -> str:
    """The file's sha256, its bytes read through ``pacer``."""
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(_READ):
            digest.update(chunk)
            done += len(chunk)
            pacer.at(done)
    return digest.hexdigest()


def move(
    cache: ImageCache,
    pools: PoolResolver,
    args: MoveArgs,
    *,
    progress: MoveProgress | None = None,
    max_bytes_per_second: int | None = None,
    allow_reflink: bool = True,
) -> dict[str, Any]:
    """Copy the VM's disk into the target pool and verify it (module docstring)."""
    if args.transfer is not None:
        return pull(
            cache,
            pools,
            args,
            args.transfer,
            progress=progress,
            max_bytes_per_second=max_bytes_per_second,
        )
    src_root = _root(pools, args.source.name, args.source.path)
    dst_root = _root(pools, args.target.name, args.target.path)
    if os.path.realpath(src_root) == os.path.realpath(dst_root):
        raise TaskFailure("validation_failed", "source and target are the same pool")
    src = _disk(src_root, args.vm_id, args.format)
    dst = _disk(dst_root, args.vm_id, args.format)
    key = f"vm:{args.vm_id}"
    keys = sorted([(os.path.realpath(src_root), key), (os.path.realpath(dst_root), key)])
    with cache.locks.hold(keys[0]), cache.locks.hold(keys[1]):
        st = _regular(src)
        if st is None:
            raise TaskFailure(
                "disk_missing", f"the VM's disk {src} is not in pool {args.source.name}"
            )
        size = st.st_size
        method = "existing"
        try:
            source_sha = sha256_of(src, _Pacer("source", size, max_bytes_per_second, progress))
            existing = _Pacer("verify", size, max_bytes_per_second, progress)
            if _regular(dst) is not None and sha256_of(dst, existing) == source_sha:
                copy_sha = source_sha  # a re-run after the copy was published
            else:
                method, copy_sha = _copy(
                    cache,
                    src,
                    dst,
                    dst_root,
                    args,
                    size,
                    source_sha,
                    progress,
                    max_bytes_per_second,
                    allow_reflink,
                )
        except OSError as exc:
            raise _io_failure(exc, f"moving the disk of vm {args.vm_id}") from None
        info = formats.info(dst, "raw" if args.format == "raw" else "qcow2", code="clone_failed")
    return _result(args, dst_root, dst, method, copy_sha, size, info)


def _io_failure(exc: OSError, doing: str) -> TaskFailure:
    """``pool_full`` (no space, quota) or ``move_failed``: ``{doing}: {strerror}``."""
    code = "pool_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "move_failed"
    return TaskFailure(code, f"{doing}: {fs.strerror(exc)}")


def _result(
    args: MoveArgs,
    dst_root: Path,
    dst: Path,
    method: str,
    copy_sha: str,
    size: int,
    info: formats.ImageInfo,
) -> dict[str, Any]:
    """The ``vm.move`` task's result for the disk published at ``dst``."""
    return {
        "vm_id": args.vm_id,
        "file_path": _node_path(dst_root, args.target.path, dst),
        "method": method,
        "sha256": copy_sha,
        "bytes": size,
        "virtual_size_bytes": info.virtual_size_bytes,
        "disk_size_bytes": info.actual_size_bytes,
    }


def _copy(
    cache: ImageCache,
    src: Path,
    dst: Path,
    dst_root: Path,
    args: MoveArgs,
    size: int,
    source_sha: str,
    progress: MoveProgress | None,
    rate: int | None,
    allow_reflink: bool,
) -> tuple[str, str]:
    """Copy ``src`` to a scratch temp in the target, verify it, publish it as ``dst``."""

    def room(need: int) -> None:
        free = fs.disk_usage(dst_root).available_bytes
        if need > free:
            raise TaskFailure(
                "insufficient_space",
                f"pool {args.target.name} has {free} bytes free; the disk needs {need}",
            )

    copy = _Pacer("copy", size, rate, progress)
    with cache.scratch.file(dst_root, f"move-{args.vm_id}") as tmp:
        method = fs_clone.clone_file(
            src,
            tmp,
            mode=DISK_MODE,
            allow_reflink=allow_reflink,
            before_copy=room,
            progress=copy.at,
            step=_STEP,
        )
        copy_sha = _verify_publish(tmp, dst, args.vm_id, source_sha, size, rate, progress)
    return method, copy_sha


def _verify_publish(
    tmp: Path,
    dst: Path,
    vm_id: str,
    expected: str,
    size: int,
    rate: int | None,
    progress: MoveProgress | None,
) -> str:
    """Hash the copy ``tmp`` (the ``verify`` phase), refuse it unless it is ``expected``,
    publish it as ``dst``; its sha256."""
    copy_sha = sha256_of(tmp, _Pacer("verify", size, rate, progress))
    if copy_sha != expected:
        raise TaskFailure(
            "checksum_mismatch",
            f"the copy of vm {vm_id}'s disk hashes to {copy_sha}, "
            f"the source to {expected}: nothing was switched",
            details={"sha256_expected": expected, "sha256_found": copy_sha},
        )
    fs.make_dir(dst.parent, _DIR_MODE)
    fs.publish(tmp, dst, DISK_MODE)
    return copy_sha


class _Source:
    """The source agent's transfer endpoint for one ticket (``otherix.agent.transfer``)."""

    def __init__(self, transfer: Transfer, attempts: int, delay: float) -> None:
        self.base = f"{transfer.url}/v1/transfers/{transfer.ticket}"
        self.headers = {"Authorization": f"Bearer {transfer.secret}"}
        self.attempts, self.delay = attempts, delay
        self.client = httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))

    def close(self) -> None:
        self.client.close()

    def _refused(self, r: httpx.Response) -> TaskFailure:
        try:
            detail = r.json().get("message") or r.json().get("error")
        except ValueError:
            detail = r.text[:200]
        code = "transfer_refused" if r.status_code == 403 else "transfer_failed"
        return TaskFailure(code, f"the source node answered {r.status_code}: {detail}")

    def digest(self) -> tuple[str, int]:
        """The source's ``(sha256, size)``, retried over connection errors and, this
        first contact only, over a 403: the control plane wakes both nodes at once, and
        the source registers the ticket when its agent reads its ``vm.export`` task,
        which may be after this node read its ``vm.move`` (an unknown ticket and a
        wrong secret get the same 403, so a wrong secret fails after the retries too)."""
        for attempt in range(self.attempts):
            last = attempt + 1 == self.attempts
            try:
                r = self.client.get(f"{self.base}/sha256", headers=self.headers, timeout=None)
            except httpx.TransportError as exc:
                if last:
                    raise TaskFailure(
                        "transfer_failed", f"cannot reach the source node: {exc}", retryable=True
                    ) from None
                time.sleep(self.delay)
                continue
            if r.status_code == 403 and not last:
                _log.info("transfer ticket not (yet) accepted by the source; asking again")
                time.sleep(self.delay)
                continue
            if r.status_code != 200:
                raise self._refused(r)
            body = r.json()
            sha, size = body.get("sha256"), body.get("size")
            if not isinstance(sha, str) or not isinstance(size, int) or size < 0:
                raise TaskFailure("transfer_failed", "the source node's answer is malformed")
            return sha, size
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch(self, fd: int, size: int, pacer: _Pacer) -> None:
        """Write the source's bytes into ``fd`` (empty), resuming with ``Range`` after a
        dropped connection; all-zero blocks are left as holes."""
        offset, failures = 0, 0
        zero = bytes(_READ)
        while offset < size:
            headers = {**self.headers, "Range": f"bytes={offset}-"}
            try:
                with self.client.stream("GET", self.base, headers=headers) as r:
                    if r.status_code not in (200, 206):
                        r.read()
                        raise self._refused(r)
                    if r.status_code == 200 and offset:  # no resume offered: start over
                        offset = 0
                    for chunk in r.iter_bytes(_READ):
                        if offset + len(chunk) > size:
                            raise TaskFailure("transfer_failed", "the source sent too much")
                        if chunk != zero[: len(chunk)]:
                            view = memoryview(chunk)
                            at = offset
                            while view:
                                n = os.pwrite(fd, view, at)
                                view, at = view[n:], at + n
                        offset += len(chunk)
                        pacer.at(offset)
                        failures = 0
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self.attempts:
                    raise TaskFailure(
                        "transfer_failed",
                        f"the transfer from the source node broke at byte {offset}: {exc}",
                        retryable=True,
                    ) from None
                _log.warning("transfer cut; resuming", extra={"at": offset, "error": str(exc)})
                time.sleep(self.delay)
        os.ftruncate(fd, size)
        os.fsync(fd)


def pull(
    cache: ImageCache,
    pools: PoolResolver,
    args: MoveArgs,
    transfer: Transfer,
    *,
    progress: MoveProgress | None = None,
    max_bytes_per_second: int | None = None,
    attempts: int = 5,
    retry_delay: float = 1.0,
) -> dict[str, Any]:
    """A move across nodes: pull the disk from the source node's agent into this
    node's target pool, compare sha256, publish (module docstring)."""
    dst_root = _root(pools, args.target.name, args.target.path)
    dst = _disk(dst_root, args.vm_id, args.format)
    source = _Source(transfer, attempts, retry_delay)
    try:
        with cache.locks.hold((os.path.realpath(dst_root), f"vm:{args.vm_id}")):
            if progress is not None:
                progress("source", 0, 1)
            expected, size = source.digest()
            method = "existing"
            existing = _Pacer("verify", size, max_bytes_per_second, progress)
            if _regular(dst) is not None and sha256_of(dst, existing) == expected:
                copy_sha = expected
            else:
                method = "transfer"
                free = fs.disk_usage(dst_root).available_bytes
                if size > free:
                    raise TaskFailure(
                        "insufficient_space",
                        f"pool {args.target.name} has {free} bytes free; the disk needs {size}",
                    )
                try:
                    with cache.scratch.file(dst_root, f"move-{args.vm_id}") as tmp:
                        fd = fs.create_exclusive(tmp, DISK_MODE)
                        try:
                            source.fetch(
                                fd, size, _Pacer("copy", size, max_bytes_per_second, progress)
                            )
                        finally:
                            os.close(fd)
                        copy_sha = _verify_publish(
                            tmp, dst, args.vm_id, expected, size, max_bytes_per_second, progress
                        )
                except OSError as exc:
                    raise _io_failure(exc, f"pulling the disk of vm {args.vm_id}") from None
            info = formats.info(
                dst, "raw" if args.format == "raw" else "qcow2", code="clone_failed"
            )
    finally:
        source.close()
    return _result(args, dst_root, dst, method, copy_sha, size, info)


def remove_copy(
    cache: ImageCache, pools: PoolResolver, owned: PoolOwnership, args: RemoveArgs
) -> dict[str, Any]:
    """Remove the copy a move left in ``args.pool`` (module docstring); idempotent."""
    root = _root(pools, args.pool.name, args.pool.path)
    if owned.declares_vm(args.pool.name, args.vm_id):
        raise TaskFailure(
            "disk_owned",
            f"pool {args.pool.name} holds vm {args.vm_id}'s disk again: nothing removed",
        )
    if args.keep is not None:
        keep_root = _root(pools, args.keep.name, args.keep.path)
        if _regular(_disk(keep_root, args.vm_id, args.format)) is None:
            raise TaskFailure(
                "keep_missing",
                f"vm {args.vm_id}'s disk is not in pool {args.keep.name}: "
                f"the copy in pool {args.pool.name} is kept",
            )
    vms = root / VMS_DIR
    if not vms.is_dir():
        return {"vm_id": args.vm_id, "removed": False}
    with cache.locks.hold((os.path.realpath(root), f"vm:{args.vm_id}")):
        try:
            removed = fs.remove_tree(vms, fs.safe_join(vms, args.vm_id), protected=cache.protected)
        except fs.UnsafePath as exc:
            raise TaskFailure("move_failed", str(exc)) from None
    return {"vm_id": args.vm_id, "removed": removed}
