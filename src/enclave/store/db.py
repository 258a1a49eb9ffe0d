"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with every read-write transaction opened as ``BEGIN IMMEDIATE``:
writers are serialised up front instead of failing late with a busy snapshot. Read-only
sessions (``session_factory(..., read_only=True)``) open a deferred transaction and never wait.
PostgreSQL runs at READ COMMITTED; places that need serialisation lock a row explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from enclave.errors import InvalidInput

SQLITE_BUSY_TIMEOUT_S = 30
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise InvalidInput(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            isolation_level=None,  # we issue BEGIN ourselves (see below)
        )
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    raise InvalidInput(f"unsupported database {backend!r}: use sqlite or postgresql")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read-only sessions take no write lock: in WAL mode they read a snapshot and never
        # wait for a writer, nor make one wait.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


READ_ONLY = "enclave_read_only"


def session_factory(engine: Engine, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``read_only`` ones must not write (SQLite: a deferred BEGIN)."""
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return sessionmaker(bind, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(engine), "head")


def bulk_insert(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert uniform, complete rows in the session's transaction, as fast as the backend
    allows: PostgreSQL by ``COPY`` (one stream instead of a statement a row: about half the
    time per row, on both sides), else one Core multi-row ``executemany``. Column types
    convert values exactly as an INSERT would, and errors are SQLAlchemy's either way (a
    constraint violation is an IntegrityError)."""
    if not rows:
        return
    session.flush()  # what the session holds goes first, as an INSERT through it would order it
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    columns = [table.c[name] for name in names]
    dialect = connection.dialect
    convert = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    driver = connection.connection.driver_connection
    quote = dialect.identifier_preparer.quote  # as an INSERT would name them
    statement = f"COPY {quote(table.name)} ({', '.join(map(quote, names))}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(
                    [
                        v if f is None else f(v)
                        for f, v in zip(convert, map(row.__getitem__, names), strict=True)
                    ]
                )
    except psycopg.Error as exc:  # as SQLAlchemy would raise it: IntegrityError, DataError...
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
