"""PostgreSQL for tests: one fresh database per session, emptied between tests."""

from __future__ import annotations

import os
import uuid

import psycopg
import sqlalchemy as sa

from otherix.store.schema import metadata

ENV = "OTHERIX_TEST_POSTGRES_URL"


def base_url() -> str | None:
    return os.environ.get(ENV) or None


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_database() -> str:
    """Create a uniquely named database; returns its SQLAlchemy URL."""
    url = base_url()
    assert url, f"{ENV} is not set"
    name = f"otherix_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = sa.make_url(url).database
    admin = base_url()
    assert admin
    with psycopg.connect(_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_all(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()
