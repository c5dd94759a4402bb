"""The ``UserStore`` port on every backend (``db_url``: SQLite always, PostgreSQL
when ``OTHERIX_TEST_POSTGRES_URL`` is set): each method answers its frozen row
type with the values written, ``None`` when there is no such row, and the
counts its callers branch on."""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from otherix.store import Database, Tx, UniqueViolation
from otherix.store.ports.users import (
    ApiTokenRow,
    NewApiToken,
    NewRefreshToken,
    NewUser,
    RefreshTokenRow,
    UserAuthRow,
    UserRow,
    UserStore,
)
from otherix.store.users import SqlUsers
from otherix.store.users import store as qu
from support import rows as test_rows

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)


def new_id() -> str:
    return str(uuid.uuid4())


def frozen(row: object, cls: type) -> None:
    """``row`` is exactly a ``cls`` (not a dict, not a mapping) and cannot be changed."""
    assert type(row) is cls, f"{type(row).__name__} is not {cls.__name__}"
    assert dataclasses.is_dataclass(row)
    first = dataclasses.fields(row)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(row, first, "changed")


def add_user(db: Database, name: str, at: datetime = T0, role: str = "viewer") -> str:
    uid = new_id()
    with db.write() as tx:
        user = NewUser(
            id=uid, username=name, password_hash=f"hash-{name}", role=role, created_at=at
        )
        qu.insert_user(tx, user)
    return uid


def add_refresh(
    db: Database, uid: str, family: str, token_hash: str, epoch: int = 0
) -> NewRefreshToken:
    token = NewRefreshToken(
        id=new_id(),
        user_id=uid,
        family_id=family,
        token_hash=token_hash,
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
        session_epoch=epoch,
    )
    with db.write() as tx:
        qu.insert_refresh(tx, token)
    return token


def add_api_token(
    db: Database, uid: str, token_hash: str, at: datetime = T0, expires: datetime | None = None
) -> NewApiToken:
    token = NewApiToken(
        id=new_id(),
        user_id=uid,
        name=f"name-{token_hash}",
        prefix="otx_abcd",
        token_hash=token_hash,
        created_at=at,
        expires_at=expires,
    )
    with db.write() as tx:
        qu.insert_api_token(tx, token)
    return token


def test_the_sql_class_is_the_port_and_the_database_hands_it_out(db: Database) -> None:
    port = {n for n, _ in inspect.getmembers(UserStore, inspect.isfunction) if n[0] != "_"}
    sql_class = {n for n, _ in inspect.getmembers(SqlUsers, inspect.isfunction) if n[0] != "_"}
    assert port == sql_class
    for name in port:
        want = inspect.signature(getattr(UserStore, name))
        assert inspect.signature(getattr(SqlUsers, name)) == want, name
    assert isinstance(qu, SqlUsers)
    assert db.users is qu


def test_a_user_reads_back_whole_narrow_and_by_name(db: Database) -> None:
    uid = add_user(db, "Alice", role="developer")
    whole = UserRow(
        id=uid,
        username="Alice",
        username_lower="alice",
        password_hash="hash-Alice",
        role="developer",
        created_at=T0,
        updated_at=T0,
        session_epoch=0,
        kept_session_id=None,
        disabled_at=None,
    )
    with db.read() as tx:
        got = qu.get_user(tx, uid)
        by_name = qu.get_user_by_name(tx, "ALICE")
        narrow = qu.get_user_auth(tx, uid)
        assert qu.count_users(tx) == 1
    frozen(got, UserRow)
    frozen(by_name, UserRow)
    frozen(narrow, UserAuthRow)
    assert got == whole
    assert by_name == whole
    assert narrow == UserAuthRow(
        id=uid,
        username="Alice",
        role="developer",
        session_epoch=0,
        kept_session_id=None,
        disabled_at=None,
    )
    with pytest.raises(UniqueViolation):
        add_user(db, "aLiCe")


def test_users_list_in_creation_order(db: Database) -> None:
    later = add_user(db, "bob", at=T1)
    first = add_user(db, "carol", at=T0)
    with db.read() as tx:
        listed = qu.list_users(tx)
        assert qu.count_users(tx) == 2
    for row in listed:
        frozen(row, UserRow)
    assert [(r.id, r.username, r.created_at) for r in listed] == [
        (first, "carol", T0),
        (later, "bob", T1),
    ]


def test_an_update_sets_only_the_columns_it_names(db: Database) -> None:
    uid = add_user(db, "dave")
    with db.write() as tx:
        assert qu.update_user(tx, uid, {"updated_at": T1, "role": "admin", "disabled_at": T1}) == 1
        assert qu.update_user(tx, new_id(), {"updated_at": T1}) == 0
    with db.write() as tx:
        assert qu.update_user(tx, uid, {"password_hash": "new-hash", "disabled_at": None}) == 1
    with db.read() as tx:
        got = qu.get_user(tx, uid)
    frozen(got, UserRow)
    assert got is not None
    assert (got.role, got.password_hash, got.updated_at, got.disabled_at) == (
        "admin",
        "new-hash",
        T1,
        None,
    )
    assert (got.username, got.created_at, got.session_epoch) == ("dave", T0, 0)


def test_ending_sessions_bumps_the_epoch_and_revokes_all_but_the_kept_family(
    db: Database,
) -> None:
    uid = add_user(db, "erin")
    other = add_user(db, "frank")
    add_refresh(db, uid, "fam-a", "a1")
    add_refresh(db, uid, "fam-b", "b1")
    add_refresh(db, other, "fam-o", "o1")
    with db.write() as tx:
        assert qu.end_sessions(tx, uid, T1, keep_family="fam-a") == 1
    with db.read() as tx:
        kept, ended = qu.get_refresh_by_hash(tx, "a1"), qu.get_refresh_by_hash(tx, "b1")
        untouched = qu.get_refresh_by_hash(tx, "o1")
        narrow = qu.get_user_auth(tx, uid)
    assert kept is not None
    assert ended is not None
    assert untouched is not None
    assert (kept.session_epoch, kept.revoked_at) == (1, None)
    assert (ended.session_epoch, ended.revoked_at) == (0, T1)
    assert (untouched.session_epoch, untouched.revoked_at) == (0, None)
    assert narrow is not None
    assert (narrow.session_epoch, narrow.kept_session_id) == (1, "fam-a")
    with db.write() as tx:
        assert qu.end_sessions(tx, uid, T2) == 2
        assert qu.end_sessions(tx, new_id(), T2) == 0
    with db.read() as tx:
        kept = qu.get_refresh_by_hash(tx, "a1")
        whole = qu.get_user(tx, uid)
    assert kept is not None
    assert kept.revoked_at == T2
    assert whole is not None
    assert (whole.session_epoch, whole.kept_session_id) == (2, None)


def test_owned_vms_are_counted_and_a_deleted_user_is_gone(db: Database) -> None:
    uid = add_user(db, "gina")
    test_rows.insert_vm(db, uid, "vm-one")
    test_rows.insert_vm(db, uid, "vm-two")
    bare = add_user(db, "hank")
    with db.read() as tx:
        assert qu.count_owned_vms(tx, uid) == 2
        assert qu.count_owned_vms(tx, bare) == 0
    add_api_token(db, bare, "h-hank")
    add_refresh(db, bare, "fam-h", "r-hank")
    with db.write() as tx:
        assert qu.delete_user(tx, bare) == 1
        assert qu.delete_user(tx, bare) == 0
    with db.read() as tx:
        assert qu.get_user(tx, bare) is None
        assert qu.get_api_token_by_hash(tx, "h-hank") is None  # by cascade
        assert qu.get_refresh_by_hash(tx, "r-hank") is None
        assert qu.count_users(tx) == 1


def test_a_refresh_token_reads_back_rotates_once_and_revokes(db: Database) -> None:
    uid = add_user(db, "ivy")
    written = add_refresh(db, uid, "fam-a", "a1", epoch=3)
    add_refresh(db, uid, "fam-a", "a2")
    add_refresh(db, uid, "fam-b", "b1")
    with db.read() as tx:
        got = qu.get_refresh_by_hash(tx, "a1")
    frozen(got, RefreshTokenRow)
    assert got == RefreshTokenRow(
        id=written.id,
        user_id=uid,
        family_id="fam-a",
        token_hash="a1",
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
        rotated_at=None,
        revoked_at=None,
        session_epoch=3,
    )
    with db.write() as tx:
        assert qu.mark_refresh_rotated(tx, written.id, T1) == 1
        assert qu.mark_refresh_rotated(tx, written.id, T2) == 0
        assert qu.revoke_refresh_family(tx, "fam-a", T1) == 2
        assert qu.revoke_refresh_family(tx, "fam-a", T2) == 0
    with db.read() as tx:
        got = qu.get_refresh_by_hash(tx, "a1")
    assert got is not None
    assert (got.rotated_at, got.revoked_at) == (T1, T1)
    with db.write() as tx:
        assert qu.revoke_user_refresh(tx, uid, T2) == 1  # only b1 was still live
        assert qu.mark_refresh_rotated(tx, written.id, T2) == 0
    with db.read() as tx:
        b1 = qu.get_refresh_by_hash(tx, "b1")
    assert b1 is not None
    assert b1.revoked_at == T2


def test_an_api_token_reads_back_lists_revokes_once_and_is_touched(db: Database) -> None:
    uid = add_user(db, "jack")
    first = add_api_token(db, uid, "h0", at=T0, expires=T0 + timedelta(days=7))
    second = add_api_token(db, uid, "h1", at=T1)
    want = ApiTokenRow(
        id=first.id,
        user_id=uid,
        name="name-h0",
        prefix="otx_abcd",
        token_hash="h0",
        created_at=T0,
        expires_at=T0 + timedelta(days=7),
        revoked_at=None,
        last_used_at=None,
    )
    with db.read() as tx:
        by_hash = qu.get_api_token_by_hash(tx, "h0")
        by_id = qu.get_api_token(tx, first.id)
    frozen(by_hash, ApiTokenRow)
    frozen(by_id, ApiTokenRow)
    assert by_hash == want
    assert by_id == want
    with db.write() as tx:
        assert qu.revoke_api_token(tx, first.id, T1) == 1
        assert qu.revoke_api_token(tx, first.id, T2) == 0
        qu.touch_api_token(tx, second.id, T2)
    with db.read() as tx:
        live = qu.list_api_tokens(tx, uid, False)
        every = qu.list_api_tokens(tx, uid, True)
        assert qu.list_api_tokens(tx, new_id(), True) == []
    for row in (*live, *every):
        frozen(row, ApiTokenRow)
    assert [r.id for r in live] == [second.id]
    assert [(r.id, r.revoked_at, r.last_used_at) for r in every] == [
        (first.id, T1, None),
        (second.id, None, T2),
    ]


#: every read that finds nothing answers None
NOT_FOUND: list[tuple[str, Callable[[Tx], object]]] = [
    ("get_user", lambda tx: qu.get_user(tx, "no-such-id")),
    ("get_user_auth", lambda tx: qu.get_user_auth(tx, "no-such-id")),
    ("get_user_by_name", lambda tx: qu.get_user_by_name(tx, "nobody")),
    ("get_refresh_by_hash", lambda tx: qu.get_refresh_by_hash(tx, "no-such-hash")),
    ("get_api_token_by_hash", lambda tx: qu.get_api_token_by_hash(tx, "no-such-hash")),
    ("get_api_token", lambda tx: qu.get_api_token(tx, "no-such-id")),
]


@pytest.mark.parametrize(("method", "read"), NOT_FOUND, ids=[m for m, _ in NOT_FOUND])
def test_a_missing_row_is_none(db: Database, method: str, read: Callable[[Tx], object]) -> None:
    add_user(db, "kim")  # a row that is not the one asked for
    with db.read() as tx:
        assert read(tx) is None, method


#: every write that finds nothing changes nothing and says so
NO_ROW: list[tuple[str, Callable[[Tx], int]]] = [
    ("update_user", lambda tx: qu.update_user(tx, "no-such-id", {"updated_at": T1})),
    ("end_sessions", lambda tx: qu.end_sessions(tx, "no-such-id", T1)),
    ("delete_user", lambda tx: qu.delete_user(tx, "no-such-id")),
    ("mark_refresh_rotated", lambda tx: qu.mark_refresh_rotated(tx, "no-such-id", T1)),
    ("revoke_refresh_family", lambda tx: qu.revoke_refresh_family(tx, "no-such-fam", T1)),
    ("revoke_user_refresh", lambda tx: qu.revoke_user_refresh(tx, "no-such-id", T1)),
    ("revoke_api_token", lambda tx: qu.revoke_api_token(tx, "no-such-id", T1)),
    ("count_owned_vms", lambda tx: qu.count_owned_vms(tx, "no-such-id")),
]


@pytest.mark.parametrize(("method", "write"), NO_ROW, ids=[m for m, _ in NO_ROW])
def test_a_write_to_a_missing_row_is_zero(
    db: Database, method: str, write: Callable[[Tx], int]
) -> None:
    add_user(db, "lee")
    with db.write() as tx:
        assert write(tx) == 0, method
