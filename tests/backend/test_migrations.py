"""The same migrations build the models' schema on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from backend.models import Base
from tests.conftest import _clear_caches, postgres_database


def _check_schema(url: str) -> None:
    from backend.core.config import load_settings
    from backend.core.db import upgrade_database

    upgrade_database(load_settings())
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names()) - {"alembic_version"}
        assert tables == set(Base.metadata.tables)
        for name, table in Base.metadata.tables.items():
            columns = {c["name"] for c in inspector.get_columns(name)}
            assert columns == {c.name for c in table.columns}, name
    finally:
        engine.dispose()


def test_migrations_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("ATTRIVUE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ATTRIVUE_DATABASE_URL", url)
    _clear_caches()
    _check_schema(url)
    _check_schema(url)  # running again is a no-op


def test_migrations_on_postgresql(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = os.environ.get("ATTRIVUE_TEST_DATABASE_URL")
    if not base:
        pytest.skip("set ATTRIVUE_TEST_DATABASE_URL (.ci/run does)")
    databases = postgres_database(base)
    url = next(databases)
    monkeypatch.setenv("ATTRIVUE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ATTRIVUE_DATABASE_URL", url)
    _clear_caches()
    try:
        _check_schema(url)
    finally:
        _clear_caches()
        next(databases, None)
