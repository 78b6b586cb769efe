"""Staging folders: where an import's files wait under the data directory's ``tmp/`` until it
is stored or refused, locked by the process that runs it so that a crash's leftovers are known."""

from __future__ import annotations

import fcntl
import os
import uuid
from datetime import datetime
from pathlib import Path

from backend.models.base import utcnow
from backend.storage import Storage

__all__ = [
    "drop_staging",
    "new_staging",
    "release_staging_lock",
    "remove_stale_staging",
    "sweep_orphaned_staging",
]

_STAGING_LOCKS: dict[Path, int] = {}


def new_staging(storage: Storage) -> Path:
    """A fresh staging folder under tmp/; the caller removes it with ``drop_staging``.

    The folder holds ``.lock``, locked (flock) by this process while the import runs: the
    kernel drops the lock when the process dies however it dies, so the next start of the API
    knows which folders a crash left behind (``sweep_orphaned_staging``).
    """
    name = uuid.uuid4().hex
    # Made under a name the sweep ignores, locked, then renamed: an ``import-*`` folder is
    # never seen without its lock held by a live owner (the lock follows the open file, not
    # the path), so the sweep needs no grace period after a restart.
    building = storage.tmp_dir() / f".building-{name}"
    building.mkdir()
    fd = os.open(building / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    path = storage.tmp_dir() / f"import-{name}"
    building.rename(path)
    _STAGING_LOCKS[path] = fd
    return path


def drop_staging(storage: Storage, path: Path) -> None:
    """Remove a staging folder and release its lock."""
    storage.remove_tree(path)
    release_staging_lock(path)


def release_staging_lock(path: Path) -> None:
    """Release the lock on a staging folder and keep the folder, as the death of its process
    would (the folder is then the sweep's to remove)."""
    fd = _STAGING_LOCKS.pop(path, None)
    if fd is not None:
        os.close(fd)


def sweep_orphaned_staging(storage: Storage) -> list[Path]:
    """Remove the staging folders whose import died with its process (API restart, crash).

    A folder whose lock can be taken has no live owner: the import never committed, so its
    files are not part of any dataset. Folders of imports running in other processes stay.
    """
    removed = []
    for folder in storage.tmp_dir().glob(".building-*"):
        # A process died between mkdir and the rename (a live one takes microseconds).
        if folder.stat().st_mtime < utcnow().timestamp() - 60:
            storage.remove_tree(folder)
            removed.append(folder)
    for folder in storage.tmp_dir().glob("import-*"):
        try:
            fd = os.open(folder / ".lock", os.O_RDWR)
        except FileNotFoundError:
            # Made by an older version, which locked after mkdir: leave it a minute.
            if folder.stat().st_mtime < utcnow().timestamp() - 60:
                storage.remove_tree(folder)
                removed.append(folder)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live import
        finally:
            os.close(fd)
        storage.remove_tree(folder)
        removed.append(folder)
    return removed


def remove_stale_staging(storage: Storage, *, before: datetime) -> None:
    """Remove the staging folders last changed before ``before``, whoever made them."""
    for folder in storage.tmp_dir().glob("import-*"):
        if folder.stat().st_mtime < before.timestamp():
            storage.remove_tree(folder)
