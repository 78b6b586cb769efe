"""Database engine and sessions (SQLAlchemy 2), and migrations on start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from backend.core.config import REPO_ROOT, Settings, get_settings, private_dir

__all__ = [
    "DATABASE_DOWN",
    "clear_engine_cache",
    "get_engine",
    "session_scope",
    "connect",
    "new_session",
    "upgrade_database",
]

# What a request answers (503, with Retry-After) while the database cannot be reached.
DATABASE_DOWN = "the database is unreachable; try again in a moment"


@lru_cache
def _engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            # WAL lets the worker write progress while the API reads; FKs are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def clear_engine_cache() -> None:
    """Forget the engines made so far: the next ``get_engine`` makes a new one for its URL
    (after the settings changed, or a test database was dropped)."""
    _engine_for.cache_clear()
    _sessionmaker_for.cache_clear()
    _prepared_engine.cache_clear()


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file (and its folder) readable by its owner only, before SQLite does.

    SQLite gives its -wal and -shm files the mode of the database file.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        path.chmod(0o600)


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    return _checked_engine(settings.data_dir, settings.database_url)


def _checked_engine(data_dir: Path, url: str) -> Engine:
    private_dir(data_dir)
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
    return _engine_for(url)


@lru_cache
def _sessionmaker_for(engine: Engine) -> sessionmaker[Session]:
    # One per engine: a sessionmaker is a new Session subclass, whose making costs more than
    # a whole request's queries (SQLAlchemy sets up its events for every new subclass).
    return sessionmaker(bind=engine, expire_on_commit=False)


def _sessionmaker(settings: Settings | None = None) -> sessionmaker[Session]:
    return _sessionmaker_for(get_engine(settings))


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = _sessionmaker(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def new_session(settings: Settings | None = None) -> Session:
    """A session on the configured database; the caller closes it (no connection until its
    first query)."""
    return _sessionmaker(settings)()


@lru_cache
def _prepared_engine(data_dir: Path, url: str) -> Engine:
    # get_engine's folder and file checks (a URL parsed, paths stat'ed) once per data
    # directory and URL, not at every request.
    return _checked_engine(data_dir, url)


def connect(settings: Settings | None = None) -> Connection:
    """A Core connection on the configured database (the caller closes it; a ``with`` block
    does): for a read of plain rows, with none of a session's bookkeeping."""
    settings = settings or get_settings()
    return _prepared_engine(settings.data_dir, settings.database_url).connect()


def upgrade_database(settings: Settings | None = None) -> None:
    """Run ``alembic upgrade head`` on the configured database."""
    from alembic.config import Config

    from alembic import command

    settings = settings or get_settings()
    get_engine(settings)  # creates the data directory for SQLite
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(cfg, "head")
