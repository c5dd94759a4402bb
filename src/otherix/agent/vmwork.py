"""The work of a ``vm.create`` or ``vm.delete`` task: arguments, pool, disk, outcome.

Called by the VM task workers (``otherix.agent.vmtasks``) in a worker thread.
Knows nothing of threads or reports: it parses the task's arguments, finds
the pool's root on this host (``PoolState.resolve``: registered, ready, at
the declared path) and calls the image cache and disk library
(``otherix.agent.images``). Every failure leaves as a :class:`TaskFailure`
with the code the control plane stores (``error.code``, the VM's
``status.reason``).

``vm.create`` args: ``{vm_id, pool_name, pool_path, image_url, image_sha256
(or null), pull_policy ("if-not-present"|"always"), format ("qcow2"|"raw"),
disk_gib (0: the image's virtual size)}``. The image is made present in
``{pool}/images/`` (``ImageCache.ensure_image``), then the disk
``{pool}/vms/{vm_id}/disk.{format}`` is made from it (``materialise_disk``).
Both are idempotent, so a task re-run after an agent restart hits the cache
(or downloads again cleanly: a partial download is never an entry) and finds
the complete disk. Result: ``{vm_id, image_sha256, virtual_size_bytes,
disk_size_bytes, file_path}``, ``file_path`` as the node sees it (the
declared pool path, not the ``storage.host_root`` view).

``vm.delete`` args: ``{vm_id, pool_name, pool_path, file_path, format}``
(``pool_name``/``pool_path`` null when the VM never got a disk). Removes
``{pool}/vms/{vm_id}/`` (idempotent; ``file_path`` is not trusted, the
directory is derived from the registry and the VM id); the image cache is
kept. Result: ``{vm_id, removed}``.

Error codes: the ``ImageError`` codes (``checksum_mismatch``,
``image_collision``, ``pool_full``, ``disk_too_small``, ``download_failed``,
``image_url_forbidden``, ``download_too_slow``, ``image_unavailable``,
``clone_failed``, ``unsupported_format``; their ``details`` go into the
report's ``error.details``),
``pool_not_found`` (the pool is not registered and ready on this node at that
path), ``validation_failed`` (malformed arguments), ``internal`` (a bug).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, get_args

from otherix.agent.images import (
    PULL_POLICIES,
    ImageCache,
    ImageError,
    ImageFormat,
    Progress,
    PullPolicy,
    materialise_disk,
    remove_disk,
)
from otherix.agent.images.disks import canonical_vm_id
from otherix.agent.pools import PoolUnknownError

__all__ = [
    "VM_CREATE",
    "VM_DELETE",
    "CreateArgs",
    "DeleteArgs",
    "PoolResolver",
    "TaskFailure",
    "create",
    "delete",
    "failure_of",
]

_log = logging.getLogger(__name__)

VM_CREATE: Final = "vm.create"
VM_DELETE: Final = "vm.delete"
_FORMATS: Final = frozenset(get_args(ImageFormat))


class TaskFailure(Exception):
    """A task's own failure: ``code``, ``message`` and ``details`` go into the report's
    ``error``; ``retryable`` says whether the agent tries again (decided where the
    failure is raised: the image library's table, or False)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = dict(details or {})
        super().__init__(f"{code}: {message}")

    def to_error(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "details": {**self.details, "retryable": self.retryable},
        }


class PoolResolver(Protocol):
    """``PoolState.resolve``: the host path of a registered, ready pool."""

    def resolve(self, name: str, declared_path: str | None) -> Path: ...


def _invalid(message: str) -> TaskFailure:
    return TaskFailure("validation_failed", message)


def _str(args: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = args.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(f"task argument {key} must be a non-empty string")
    return value


def _vm_id(args: Mapping[str, Any]) -> str:
    try:
        return canonical_vm_id(_str(args, "vm_id") or "")
    except ValueError as exc:
        raise _invalid(str(exc)) from None


@dataclass(frozen=True)
class CreateArgs:
    vm_id: str
    pool_name: str
    pool_path: str | None
    image_url: str
    image_sha256: str | None
    pull_policy: PullPolicy
    format: ImageFormat
    disk_gib: int

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> CreateArgs:
        """Raises ``TaskFailure("validation_failed")`` for anything malformed."""
        sha = _str(args, "image_sha256", optional=True)
        if sha is not None:
            sha = sha.lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise _invalid("task argument image_sha256 must be 64 hex digits")
        policy = args.get("pull_policy") or "if-not-present"
        if policy not in PULL_POLICIES:
            raise _invalid(f"task argument pull_policy must be one of {', '.join(PULL_POLICIES)}")
        fmt = args.get("format") or "qcow2"
        if fmt not in _FORMATS:
            raise TaskFailure("unsupported_format", f"disk format {fmt!r} (want qcow2 or raw)")
        disk_gib = args.get("disk_gib", 0)
        if isinstance(disk_gib, bool) or not isinstance(disk_gib, int) or disk_gib < 0:
            raise _invalid("task argument disk_gib must be a non-negative integer")
        return cls(
            vm_id=_vm_id(args),
            pool_name=_str(args, "pool_name") or "",
            pool_path=_str(args, "pool_path", optional=True),
            image_url=_str(args, "image_url") or "",
            image_sha256=sha,
            pull_policy="always" if policy == "always" else "if-not-present",
            format="raw" if fmt == "raw" else "qcow2",
            disk_gib=disk_gib,
        )


@dataclass(frozen=True)
class DeleteArgs:
    vm_id: str
    pool_name: str | None
    pool_path: str | None

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> DeleteArgs:
        return cls(
            vm_id=_vm_id(args),
            pool_name=_str(args, "pool_name", optional=True),
            pool_path=_str(args, "pool_path", optional=True),
        )


def vm_id_of(args: Mapping[str, Any]) -> str | None:
    """The task's canonical VM id, or None when it has none (it then fails on its own)."""
    try:
        return _vm_id(args)
    except TaskFailure:
        return None


def _root(pools: PoolResolver, name: str, declared_path: str | None) -> Path:
    try:
        return pools.resolve(name, declared_path)
    except PoolUnknownError as exc:
        raise TaskFailure("pool_not_found", str(exc)) from None


def _node_path(root: Path, declared_root: str | None, path: Path) -> str:
    """``path`` (under the host view of the pool ``root``) as the node names it."""
    if declared_root is None:
        return str(path)
    return os.path.join(declared_root, os.path.relpath(path, root))


def create(
    cache: ImageCache,
    pools: PoolResolver,
    args: CreateArgs,
    *,
    download: Progress | None = None,
    clone: Progress | None = None,
) -> dict[str, Any]:
    """Fill the cache and make the VM's disk; the task's result. Raises ``ImageError``,
    ``TaskFailure``, or whatever a progress callback raises."""
    root = _root(pools, args.pool_name, args.pool_path)
    image = cache.ensure_image(
        root,
        args.image_url,
        sha256=args.image_sha256,
        pull_policy=args.pull_policy,
        progress=download,
    )
    disk = materialise_disk(
        root,
        args.vm_id,
        image.path,
        args.format,
        args.disk_gib,
        scratch_area=cache.scratch,
        locks=cache.locks,
        protected=cache.protected,
        progress=clone,
    )
    return {
        "vm_id": args.vm_id,
        "image_sha256": image.sha256,
        "virtual_size_bytes": disk.virtual_size_bytes,
        "disk_size_bytes": disk.disk_size_bytes,
        "file_path": _node_path(root, args.pool_path, disk.path),
    }


def delete(cache: ImageCache, pools: PoolResolver, args: DeleteArgs) -> dict[str, Any]:
    """Remove the VM's disk directory (idempotent); the task's result. ``cache``
    gives the process's disk locks and protected pool roots; the images stay."""
    if args.pool_name is None:  # never got a disk: nothing on this node
        return {"vm_id": args.vm_id, "removed": False}
    root = _root(pools, args.pool_name, args.pool_path)
    removed = remove_disk(root, args.vm_id, locks=cache.locks, protected=cache.protected)
    return {"vm_id": args.vm_id, "removed": removed}


def failure_of(exc: Exception) -> TaskFailure:
    """Any exception of a task body as the failure to report (one choke point)."""
    if isinstance(exc, TaskFailure):
        return exc
    if isinstance(exc, ImageError):
        return TaskFailure(exc.code, exc.message, retryable=exc.retryable, details=exc.details)
    if isinstance(exc, ValueError):  # the library refusing an argument we let through
        return TaskFailure("validation_failed", str(exc))
    _log.error("vm task failed unexpectedly", exc_info=exc)
    return TaskFailure("internal", f"unexpected error: {type(exc).__name__}: {exc}")
