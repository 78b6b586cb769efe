"""Staging folders of imports: the start-up sweep removes exactly those whose owner died."""

from __future__ import annotations

from pathlib import Path

from backend.services import imports
from backend.services.imports import staging
from backend.storage import Storage


def test_a_live_import_is_kept_and_a_dead_one_is_swept_at_once(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    live = imports.new_staging(storage)
    dead = imports.new_staging(storage)
    (dead / "part-0").write_bytes(b"half a file")
    # The owner of ``dead`` dies: the kernel releases its lock, the folder stays.
    staging.release_staging_lock(dead)

    removed = imports.sweep_orphaned_staging(storage)

    # No grace period: a folder written to a moment ago is swept when its lock is free.
    assert removed == [dead]
    assert not dead.exists()
    assert live.is_dir(), "a running import's folder must survive the sweep"
    assert not list(storage.tmp_dir().glob(".building-*"))
    imports.drop_staging(storage, live)
    assert not live.exists()
