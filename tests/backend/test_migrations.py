"""The same migrations build the models' schema on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from backend.models import Base
from tests.conftest import clear_caches, postgres_database


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
    clear_caches()
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
    clear_caches()
    try:
        _check_schema(url)
    finally:
        clear_caches()
        next(databases, None)


def _upgrade(url: str, revision: str) -> None:
    from alembic.config import Config

    from alembic import command
    from backend.core.config import REPO_ROOT

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, revision)


def test_existing_datasets_move_into_a_default_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("ATTRIVUE_DATA_DIR", str(tmp_path))
    clear_caches()
    _upgrade(url, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, is_active, created_at) "
                "VALUES ('ana', 'x', 'clinician', 1, '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO datasets (name, description, deidentified, created_at) "
                "VALUES ('old', '', 1, '2026-01-01')"
            )
        )
    _upgrade(url, "head")
    with engine.connect() as conn:
        project_id = conn.execute(text("SELECT project_id FROM datasets")).scalar()
        name = conn.execute(
            text("SELECT name FROM projects WHERE id = :p"), {"p": project_id}
        ).scalar()
        role = conn.execute(text("SELECT role FROM project_members")).scalar()
    engine.dispose()
    assert name == "Default" and role == "clinician"
