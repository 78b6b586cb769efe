"""Resumable chunked uploads: a large file sent in chunks into a part file under ``tmp/uploads``,
resumed from what arrived, and later named by an import (``upload_ids``)."""

from __future__ import annotations

import fcntl
import os
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import UploadSession, User
from backend.models.base import utcnow
from backend.services.dicom import DICOM_HEAD_BYTES, DICOM_REFUSED, is_dicom
from backend.services.errors import Conflict, InvalidInput, NotFound, TooLarge
from backend.services.imports.common import Limits, clean_name
from backend.services.imports.staging import remove_stale_staging
from backend.services.projects import WRITE, require
from backend.storage import Storage

__all__ = [
    "UPLOAD_TTL",
    "UploadChunk",
    "create_upload",
    "delete_upload",
    "finish_chunk",
    "get_upload",
    "list_uploads",
    "open_chunk",
    "part_path",
    "reconcile",
    "sweep_stale_uploads",
]

UPLOAD_TTL = timedelta(hours=24)


def part_path(storage: Storage, upload_id: str) -> Path:
    return storage.tmp_dir() / "uploads" / f"{upload_id}.part"


def reconcile(storage: Storage, upload: UploadSession) -> None:
    """The part file is the truth about ``received`` (a chunk cut short keeps what came)."""
    part = part_path(storage, upload.id)
    received = min(part.stat().st_size, upload.size) if part.exists() else 0
    if received != upload.received:
        upload.received = received
    upload.status = "complete" if received == upload.size else "open"


def sweep_stale_uploads(session: Session, storage: Storage) -> None:
    """Forget uploads untouched for a day, and staging folders a crash left behind."""
    cutoff = utcnow() - UPLOAD_TTL
    stale = session.scalars(select(UploadSession).where(UploadSession.updated_at < cutoff))
    for upload in stale:
        part_path(storage, upload.id).unlink(missing_ok=True)
        session.delete(upload)
    remove_stale_staging(storage, before=cutoff)


def create_upload(
    session: Session,
    storage: Storage,
    *,
    user: User,
    project_id: int,
    filename: str,
    size: int,
    limits: Limits,
) -> UploadSession:
    """Open a chunked upload of ``size`` bytes in a project where the user may write."""
    require(session, user, project_id, WRITE)
    try:
        name = clean_name(filename)
    except ValueError as exc:
        raise InvalidInput(f"filename {filename!r}: {exc}") from None
    limit = limits.for_name(name)
    if size > limit:
        raise TooLarge(f"{name!r}: {size} bytes is over the limit of {limit} bytes")
    sweep_stale_uploads(session, storage)
    upload = UploadSession(
        id=uuid.uuid4().hex,
        project_id=project_id,
        user_id=user.id,
        filename=name,
        size=size,
        received=0,
        status="open",
        updated_at=utcnow(),
    )
    session.add(upload)
    session.flush()
    part = part_path(storage, upload.id)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.touch()
    return upload


def get_upload(session: Session, storage: Storage, *, user: User, upload_id: str) -> UploadSession:
    """The user's own upload (404 for anyone else's), in a project where they may write."""
    upload = session.get(UploadSession, upload_id)
    if upload is None or upload.user_id != user.id:
        raise NotFound(f"upload {upload_id} not found")
    require(session, user, upload.project_id, WRITE)
    reconcile(storage, upload)
    return upload


def list_uploads(
    session: Session, storage: Storage, *, user: User, project_id: int | None
) -> list[UploadSession]:
    query = select(UploadSession).where(UploadSession.user_id == user.id)
    if project_id is not None:
        query = query.where(UploadSession.project_id == project_id)
    uploads = list(session.scalars(query.order_by(UploadSession.created_at)))
    for upload in uploads:
        reconcile(storage, upload)
    return uploads


def delete_upload(session: Session, storage: Storage, *, user: User, upload_id: str) -> None:
    upload = get_upload(session, storage, user=user, upload_id=upload_id)
    part_path(storage, upload.id).unlink(missing_ok=True)
    session.delete(upload)
    session.flush()


class UploadChunk:
    """One chunk being written into an upload's part file at ``offset``.

    An exclusive lock on the part file keeps two chunks of one upload from interleaving,
    across processes too.
    """

    def __init__(self, path: Path, *, upload_id: str, offset: int, size: int) -> None:
        self.upload_id = upload_id
        self.offset = offset
        self.size = size
        self.position = offset
        self._file = path.open("r+b") if path.exists() else path.open("w+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise Conflict(f"another chunk of upload {upload_id} is being written") from None
        self._file.truncate(offset)
        self._file.seek(offset)

    def write(self, data: bytes) -> None:
        if self.position + len(data) > self.size:
            raise TooLarge(
                f"upload {self.upload_id}: the chunk goes past the declared size of "
                f"{self.size} bytes"
            )
        if self.position < DICOM_HEAD_BYTES:
            self._refuse_dicom(data)
        self._file.write(data)
        self.position += len(data)

    def _refuse_dicom(self, data: bytes) -> None:
        """A file whose first bytes are DICOM's is refused before its header is written, and
        what came of it (at most the preamble) is deleted."""
        self._file.seek(0)
        head = self._file.read(self.position) + data[: DICOM_HEAD_BYTES - self.position]
        self._file.seek(self.position)
        if is_dicom(head):
            self.offset = 0  # closing drops the whole file
            raise InvalidInput(f"upload {self.upload_id}: {DICOM_REFUSED}")

    def close(self, *, keep: bool) -> int:
        """Release the file; unless ``keep``, the chunk is dropped. Returns the bytes stored."""
        try:
            if not keep:
                self._file.truncate(self.offset)
                self.position = self.offset
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()  # closing releases the lock
        return self.position


def open_chunk(
    session: Session,
    storage: Storage,
    *,
    user: User,
    upload_id: str,
    offset: int,
    total: int | None,
) -> UploadChunk:
    """Start writing a chunk; it may start anywhere up to ``received`` (a retry rewrites)."""
    upload = get_upload(session, storage, user=user, upload_id=upload_id)
    if total is not None and total != upload.size:
        raise InvalidInput(
            f"upload {upload_id} has {upload.size} bytes; the Content-Range says {total}"
        )
    if offset > upload.received:
        raise Conflict(
            f"upload {upload_id} has received {upload.received} bytes: a chunk must start at "
            f"byte {upload.received} or before; got {offset}"
        )
    return UploadChunk(
        part_path(storage, upload.id), upload_id=upload.id, offset=offset, size=upload.size
    )


def finish_chunk(
    session: Session, storage: Storage, *, user: User, upload_id: str
) -> UploadSession:
    upload = get_upload(session, storage, user=user, upload_id=upload_id)
    upload.updated_at = utcnow()
    session.flush()
    return upload
