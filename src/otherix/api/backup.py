"""``otherix-api backup`` and ``restore``: the archive, its checks, and the steps
in the order that leaves nothing changed when anything is refused.

The archive is an uncompressed tar of two members, ``manifest.json`` first
(:data:`FORMAT`, format version, backend, schema revision, created_at, the
otherix version, cluster id, the payload's size and sha256) and then
``payload``: a SQLite database file (rollback-journal mode) or a
``pg_dump --format=custom`` file. It is written to a temp file beside the
destination, fsynced and renamed (``os.link`` when it must not replace a file).

A restore reads and checks all of it before it touches anything
(:func:`verify`: readable tar, valid manifest, payload size and sha256, a
schema revision this code knows, the configured backend; then
``integrity_check`` and ``foreign_key_check`` of a SQLite payload, ``pg_restore
--list`` of a PostgreSQL one), then takes the data directory's lock
exclusively (refused while a control plane holds it), refuses a database with
tables in it unless ``force``, and only then puts the copy in place: SQLite by
rename over the database file, PostgreSQL by ``pg_restore --clean``. It does
not migrate: ``serve`` (or ``otherix-api migrate``) takes an older schema to
the head. The store's half (copies, checks, revisions) is ``otherix.store.snapshot``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from otherix import __version__
from otherix.api import datadir
from otherix.api.settings import ApiSettings
from otherix.fsatomic import fsync_dir
from otherix.store import StoreError
from otherix.store import snapshot as snap
from otherix.store.engine import display_url, sqlite_path

FORMAT = "otherix-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PAYLOAD = "payload"
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore refused or failed; the message says why and what to do.
    Nothing was changed."""


@dataclass(frozen=True)
class Manifest:
    backend: str
    schema_revision: str | None
    created_at: str
    otherix_version: str
    cluster_id: str | None
    payload_size: int
    payload_sha256: str

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__}
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BackupError(f"its manifest is not valid JSON ({exc})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise BackupError("it is not an otherix backup (its manifest has no otherix format)")
        if body.get("format_version") != FORMAT_VERSION:
            raise BackupError(
                f"its format version is {body.get('format_version')!r}; this otherix "
                f"({__version__}) reads version {FORMAT_VERSION}: restore it with the "
                "otherix that made it"
            )
        try:
            fields = {k: body[k] for k in cls.__dataclass_fields__}
            manifest = cls(**fields)
        except (KeyError, TypeError) as exc:
            raise BackupError(f"its manifest lacks {exc}") from None
        if manifest.backend not in ("sqlite", "postgresql"):
            raise BackupError(f"its manifest names an unknown backend {manifest.backend!r}")
        if not isinstance(manifest.payload_size, int) or manifest.payload_size < 0:
            raise BackupError("its manifest has no valid payload size")
        return manifest


def backend_of(settings: ApiSettings) -> str:
    url = settings.database_url
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="otherix-backup-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- writing ------------------------------------------------------------------------


def write_archive(dest: Path, manifest: Manifest, payload: Path, *, force: bool) -> None:
    """The tar of ``manifest`` and ``payload`` at ``dest``: temp file, fsync, rename
    (never over an existing file unless ``force``)."""
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; pass --force to replace it")
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise BackupError(f"the directory {folder} does not exist")
    tmp = folder / f".{dest.name}.tmp-{secrets.token_hex(8)}"
    try:
        with tmp.open("xb") as fh:
            os.fchmod(fh.fileno(), 0o600)  # the copy holds password and token hashes
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                raw = manifest.to_json()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode = len(raw), 0o600
                tar.addfile(info, io.BytesIO(raw))
                info = tarfile.TarInfo(PAYLOAD)
                info.size, info.mode = manifest.payload_size, 0o600
                with payload.open("rb") as src:
                    tar.addfile(info, src)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            tmp.replace(dest)
        else:
            os.link(tmp, dest)  # fails if dest appeared meanwhile
            tmp.unlink()
    except FileExistsError:
        raise BackupError(f"{dest} exists; pass --force to replace it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(folder)


def backup(settings: ApiSettings, dest: Path, *, force: bool) -> Manifest:
    """A consistent copy of the configured database, archived at ``dest``."""
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; pass --force to replace it")
    if not (dest.parent if str(dest.parent) else Path(".")).is_dir():
        raise BackupError(f"the directory {dest.parent} does not exist")
    backend = backend_of(settings)
    with _scratch() as folder:
        payload = folder / PAYLOAD
        try:
            if backend == "sqlite":
                db_file = sqlite_path(settings.database_url)
                if db_file is None:
                    raise BackupError("an in-memory SQLite database cannot be backed up")
                snap.sqlite_snapshot(db_file, payload)
                revision, cluster = snap.sqlite_facts(payload)
            else:
                before = snap.pg_facts(settings.database_url)
                snap.pg_dump(settings.database_url, payload)
                revision = snap.pg_facts(settings.database_url).revision
                if revision != before.revision:
                    raise BackupError(
                        f"the schema moved from {before.revision} to {revision} during the "
                        "backup (a migration ran): take the backup again"
                    )
                cluster = before.cluster_id
        except StoreError as exc:
            raise BackupError(str(exc)) from exc
        manifest = Manifest(
            backend=backend,
            schema_revision=revision,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            otherix_version=__version__,
            cluster_id=cluster,
            payload_size=payload.stat().st_size,
            payload_sha256=_sha256(payload),
        )
        write_archive(dest, manifest, payload, force=force)
    return manifest


# -- reading and checking -----------------------------------------------------------


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> str:
    src = tar.extractfile(member)
    if src is None:
        raise BackupError(f"its {member.name} is not a file")
    digest = hashlib.sha256()
    with src, dest.open("xb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def read_archive(path: Path, folder: Path) -> tuple[Manifest, Path]:
    """The manifest, and the payload extracted into ``folder`` with its checksum checked."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    payload = folder / PAYLOAD
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if names != [MANIFEST, PAYLOAD]:
                raise BackupError(f"it holds {names}, not {MANIFEST} and {PAYLOAD}")
            manifest_file = tar.extractfile(members[0])
            assert manifest_file is not None
            manifest = Manifest.parse(manifest_file.read())
            if members[1].size != manifest.payload_size:
                raise BackupError(
                    f"its payload is {members[1].size} bytes, the manifest says "
                    f"{manifest.payload_size}"
                )
            digest = _extract(tar, members[1], payload)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"it is truncated or not an otherix backup ({exc})") from None
    if payload.stat().st_size != manifest.payload_size:
        raise BackupError("it is truncated: the payload is shorter than its manifest says")
    if digest != manifest.payload_sha256:
        raise BackupError(
            f"its payload's sha256 is {digest}, the manifest says "
            f"{manifest.payload_sha256}: the file is damaged"
        )
    return manifest, payload


def schema_head() -> str:
    """The newest schema revision this code's migrations know."""
    return snap.head_revision()


def check_revision(manifest: Manifest) -> None:
    head = snap.head_revision()
    revision = manifest.schema_revision
    if revision is None:
        raise BackupError("its database has no schema revision (an empty database?)")
    if revision not in snap.known_revisions():
        raise BackupError(
            f"it holds schema revision {revision}, which this otherix ({__version__}, "
            f"schema head {head}) does not know: it was made by a newer otherix "
            f"({manifest.otherix_version}). Restore it with that version or a newer one."
        )


def verify(settings: ApiSettings, path: Path, folder: Path) -> tuple[Manifest, Path, set[str]]:
    """Every check a backup must pass before a restore touches anything. Returns the
    manifest, the extracted payload and (PostgreSQL) the tables the dump creates."""
    tables: set[str] = set()
    try:
        manifest, payload = read_archive(path, folder)
        check_revision(manifest)
        backend = backend_of(settings)
        if manifest.backend != backend:
            raise BackupError(
                f"it is a {manifest.backend} backup and this control plane is configured "
                f"for {backend} ({display_url(settings.database_url)})"
            )
        if backend == "sqlite":
            problems = snap.sqlite_problems(payload)
            if problems:
                raise BackupError(f"its database fails its integrity check: {problems}")
            revision, _ = snap.sqlite_facts(payload)
            if revision != manifest.schema_revision:
                raise BackupError(
                    f"its database is at revision {revision}, its manifest says "
                    f"{manifest.schema_revision}"
                )
        else:
            tables = snap.pg_check_archive(payload)
    except BackupError as exc:
        raise BackupError(f"{path} is refused: {exc}. Nothing was changed.") from None
    except StoreError as exc:
        raise BackupError(f"{path} is refused: {exc}. Nothing was changed.") from exc
    return manifest, payload, tables


# -- restoring ----------------------------------------------------------------------


def _busy(data_dir: Path) -> BackupError:
    return BackupError(
        f"a control plane is running on the data directory {data_dir} (it holds "
        f"{data_dir / datadir.LOCK}): stop it (every replica) before restoring. "
        "Nothing was changed."
    )


def _not_empty(what: str) -> BackupError:
    return BackupError(
        f"{what} already holds a database with tables; restoring would replace it. "
        "Pass --force to replace it. Nothing was changed."
    )


def _restore_sqlite(settings: ApiSettings, payload: Path, manifest: Manifest, force: bool) -> None:
    db_file = sqlite_path(settings.database_url)
    if db_file is None:
        raise BackupError("cannot restore into an in-memory SQLite database")
    if snap.sqlite_has_tables(db_file) and not force:
        raise _not_empty(str(db_file))
    folder = db_file.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f".{db_file.name}.restore-{secrets.token_hex(8)}"
    try:
        with payload.open("rb") as src, tmp.open("xb") as out:
            os.fchmod(out.fileno(), 0o600)
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if _sha256(tmp) != manifest.payload_sha256:
            raise BackupError(f"the copy at {tmp} does not match the backup; nothing was changed")
        datadir.set_aside_leftovers(db_file)  # the replaced database's WAL is not the copy's
        tmp.replace(db_file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(folder)
    problems = snap.sqlite_problems(db_file)
    if problems:
        raise BackupError(f"the restored database {db_file} fails its integrity check: {problems}")


def _restore_postgres(
    settings: ApiSettings, payload: Path, manifest: Manifest, force: bool, dumped: set[str]
) -> None:
    url = settings.database_url
    facts = snap.pg_facts(url)
    if facts.others:
        raise BackupError(
            f"{facts.others} other session(s) are connected to {display_url(url)}: stop "
            "every control plane replica before restoring. Nothing was changed."
        )
    if facts.tables and not force:
        raise _not_empty(display_url(url))
    snap.pg_restore(url, payload)  # one transaction: all of it or nothing
    # tables of a newer schema than the backup's hold only rows newer than the backup
    snap.pg_drop_tables(url, facts.tables - dumped)
    after = snap.pg_facts(url)
    if after.revision != manifest.schema_revision or "cluster_settings" not in after.tables:
        raise BackupError(
            f"the restored database is at revision {after.revision} with tables "
            f"{sorted(after.tables)}; the backup said {manifest.schema_revision}"
        )


def _check_marker(data_dir: Path, cluster: str | None, force: bool) -> None:
    """A data directory that belongs to another cluster takes its backup only with ``force``."""
    if force or cluster is None:
        return
    try:
        marker = datadir.read_marker(data_dir)
    except datadir.DataDirMismatch as exc:
        raise BackupError(f"{exc}. Pass --force to restore anyway. Nothing was changed.") from None
    if marker is not None and marker != cluster:
        raise BackupError(
            f"data directory {data_dir} belongs to cluster {marker}; the backup is of "
            f"cluster {cluster}. Pass --force to make it cluster {cluster}'s. "
            "Nothing was changed."
        )


def restore(
    settings: ApiSettings, path: Path, *, force: bool, say: Callable[[str], Any]
) -> Manifest:
    """Check the backup at ``path``, then put it in place of the configured database."""
    with _scratch() as folder:
        manifest, payload, dumped = verify(settings, path, folder)
        say(
            f"{path}: {manifest.backend} backup of {manifest.created_at}, schema "
            f"{manifest.schema_revision}, {manifest.payload_size} bytes, checksum ok"
        )
        data_dir = settings.data_dir
        data_dir_existed = data_dir.exists()
        if data_dir_existed:
            lock = datadir.hold_exclusive(data_dir)
            if lock is None:
                raise _busy(data_dir)
        else:
            lock = None
        try:
            _check_marker(data_dir, manifest.cluster_id, force)
            if manifest.backend == "sqlite":
                _restore_sqlite(settings, payload, manifest, force)
            else:
                _restore_postgres(settings, payload, manifest, force, dumped)
            cluster = manifest.cluster_id
            if cluster is None and manifest.backend == "sqlite":
                _, cluster = snap.sqlite_facts(payload)
            if cluster is not None:
                datadir.prepare(data_dir)
                datadir.write_marker(data_dir, cluster)
        except StoreError as exc:
            raise BackupError(str(exc)) from exc
        finally:
            if lock is not None:
                lock.release()
    return manifest
