"""Dataset imports: many subjects at once from a manifest, a zip or a BIDS folder, and the
resumable chunked uploads that bring large files.

An import is checked whole before anything is stored: the names, the archive, every table
row and every file, and each problem is named with its file and row (``ImportFailed``).
Only then are the subjects stored, in the caller's transaction; on any failure no row and no
file stays. Files wait in a staging folder under the data directory's ``tmp/`` that the
caller removes (``new_staging``); a zip's entries are never used as paths: the few files an
import needs are extracted under generated names.

Tables: a manifest (CSV or TSV; columns subject, image, label and optionally mask, brain_mask,
target, split, site; image, mask and brain_mask name uploaded files) or a BIDS participants.tsv
(participant_id, label or group, and optionally split, site, target). The layout follows the
table's columns. Labels: 0 or 1, or in any case healthy/control (0) and pathological/patient
(1). Splits: train, val, test (empty: train). BIDS images are
``sub-*/[ses-*/]anat/*_T1w|_FLAIR.nii[.gz]``; a brain mask there (or under ``derivatives/*/``)
is named ``*desc-brain*_mask`` or ``*label-brain*_mask``, a lesion mask ``*_mask``,
``*desc-lesion*`` or ``*label-lesion*``. A subject without a brain mask gets one computed from
its image (``backend.services.brainmasks``).
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.orm import Session

from attrivue_core.io import NiftiInfo
from backend.core.config import Settings
from backend.models import Dataset, Subject, UploadSession, User
from backend.models.base import utcnow
from backend.services.datasets import (
    CheckedFiles,
    FileInvalid,
    check_mask,
    check_nifti,
    remove_subject_files,
    store_subject,
)
from backend.services.errors import Conflict, InvalidInput, NotFound, ServiceError, TooLarge
from backend.services.projects import WRITE, require
from backend.storage import Storage

__all__ = [
    "ImportFailed",
    "ImportResult",
    "Limits",
    "MultipartReceiver",
    "Problem",
    "StagedFile",
    "UploadChunk",
    "create_upload",
    "delete_upload",
    "finish_chunk",
    "get_upload",
    "import_subjects",
    "list_uploads",
    "drop_staging",
    "new_staging",
    "sweep_orphaned_staging",
    "open_chunk",
]

ARCHIVE_LIMIT_FACTOR = 4  # an archive or one import may hold this many files' worth of bytes
MAX_TABLE_BYTES = 16 * 1024**2
MAX_FIELD_BYTES = 64 * 1024
MAX_FILES = 10_000  # parts of one request, entries of one zip
MAX_COMPRESSION_RATIO = 100  # for zip entries above RATIO_CHECKED_FROM bytes
RATIO_CHECKED_FROM = 32 * 1024**2
UPLOAD_TTL = timedelta(hours=24)
_CHUNK = 1024 * 1024

LABELS = {"0": 0, "1": 1, "healthy": 0, "control": 0, "pathological": 1, "patient": 1}
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("subject", "image", "mask", "brain_mask", "label", "target", "split", "site")
_FILE_ROLES = ("image", "mask", "brain_mask")
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
_ARCHIVE_SUFFIXES = (".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".tbz2")
_BIDS_IMAGES = ("T1w", "FLAIR")


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an import; ``row`` is a line number of the table (header: 1)."""

    problem: str
    file: str | None = None
    row: int | None = None
    kind: Literal["invalid", "conflict", "too_large"] = "invalid"

    def public(self) -> dict[str, object]:
        return {"file": self.file, "row": self.row, "problem": self.problem}

    def __str__(self) -> str:
        where = self.file or ""
        if self.row is not None:
            where += f" (row {self.row})" if where else f"row {self.row}"
        return f"{where}: {self.problem}" if where else self.problem


class ImportFailed(ServiceError):
    """The import was refused; nothing was stored. ``problems`` names every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        kinds = {p.kind for p in self.problems}
        self.status = 413 if "too_large" in kinds else 409 if kinds == {"conflict"} else 422
        shown = "; ".join(str(p) for p in self.problems[:3])
        more = len(self.problems) - 3
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(
            f"nothing was imported ({count}): {shown}" + (f"; and {more} more" if more > 0 else "")
        )

    def body(self) -> dict[str, object]:
        return {"detail": self.detail, "errors": [p.public() for p in self.problems]}


class Problems(list[Problem]):
    def add(self, problem: str, file: str | None = None, row: int | None = None) -> None:
        self.append(Problem(problem, file, row))

    def stop_if_any(self) -> None:
        if self:
            raise ImportFailed(self)


def _too_large(problem: str, file: str | None, found: Iterable[Problem] = ()) -> ImportFailed:
    return ImportFailed([*found, Problem(problem, file, kind="too_large")])


# --------------------------------------------------------------------------- limits, names


@dataclass(frozen=True)
class Limits:
    """Bytes allowed: per file (a NIfTI file), and in all (an archive, its contents, a request)."""

    per_file: int
    total: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_upload_bytes, ARCHIVE_LIMIT_FACTOR * settings.max_upload_bytes)

    def for_name(self, name: str) -> int:
        kind = kind_of(name)
        return (
            self.total if kind == "zip" else MAX_TABLE_BYTES if kind == "table" else self.per_file
        )


def clean_name(raw: str) -> str:
    """A file's name as a relative POSIX path; ValueError for one that leaves its folder."""
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise ValueError("the name contains a NUL character")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValueError("absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("path with '..' refused: it leaves its folder")
    if not parts:
        raise ValueError("empty file name")
    return "/".join(parts)


def is_ignored(name: str) -> bool:
    """Files that operating systems add to folders and archives (__MACOSX, .DS_Store, ...)."""
    parts = name.split("/")
    base = parts[-1]
    return "__MACOSX" in parts or base.lower() in _IGNORED_NAMES or base.startswith("._")


def kind_of(name: str) -> Literal["nifti", "table", "zip", "archive", "other"]:
    lower = name.lower()
    if lower.endswith((".nii", ".nii.gz")):
        return "nifti"
    if lower.endswith((".csv", ".tsv")):
        return "table"
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_ARCHIVE_SUFFIXES):
        return "archive"
    return "other"


def _suffix(name: str) -> str:
    lower = name.lower()
    for suffix in (".nii.gz", ".nii", ".csv", ".tsv", ".zip"):
        if lower.endswith(suffix):
            return suffix
    return ""


@dataclass(frozen=True)
class StagedFile:
    """A file of an import on disk; ``name`` is what the client called it (maybe a path)."""

    name: str
    path: Path


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


# --------------------------------------------------------------------------- multipart bodies


class MultipartReceiver:
    """Parses a multipart/form-data body fed in pieces, writing files straight to staging.

    Only files an import can use (NIfTI, tables, zips) are written; others (a BIDS folder's
    JSON sidecars) are counted and dropped. Limits hold while the bytes arrive: a file over
    its limit or a body over the total stops the request at once.
    """

    def __init__(
        self, content_type: str, staging: Path, limits: Limits, *, table_fields: Iterable[str] = ()
    ) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ImportFailed([Problem("the body is not multipart/form-data with a boundary")])
        self.staging = staging
        self.limits = limits
        self.table_fields = set(table_fields)
        self.fields: dict[str, list[str]] = defaultdict(list)
        self.files: list[tuple[str, StagedFile]] = []  # (form field, file)
        self.problems = Problems()
        self._received = 0
        self._parts = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._field: str = ""
        self._is_file = False
        self._filename: str | None = None
        self._data = bytearray()
        self._out: io.BufferedWriter | None = None
        self._written = 0
        self._limit = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def feed(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.limits.total + MAX_TABLE_BYTES:
            raise _too_large(
                f"the request is larger than the limit of {self.limits.total} bytes", None
            )
        try:
            self._parser.write(data)
        except FormParserError as exc:
            raise ImportFailed([Problem(f"malformed multipart body: {exc}")]) from None

    def finish(self) -> None:
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise ImportFailed([Problem(f"malformed multipart body: {exc}")]) from None
        if self._out is not None:
            raise ImportFailed([Problem("the multipart body ended in the middle of a file")])

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FILES:
            raise ImportFailed([Problem(f"more than {MAX_FILES} parts in one request")])
        self._headers, self._data, self._written = {}, bytearray(), 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._field = options.get(b"name", b"").decode("utf-8", "replace")
        raw = options.get(b"filename")
        self._filename = None
        self._is_file = raw is not None
        if raw is None:
            return
        shown = raw.decode("utf-8", "replace")  # browsers send the name's UTF-8 bytes
        try:
            name = clean_name(shown)
        except ValueError as exc:
            self.problems.add(str(exc), shown)
            return
        is_table = self._field in self.table_fields
        if is_ignored(name) or (kind_of(name) == "other" and not is_table):
            return
        self._filename = name
        self._limit = MAX_TABLE_BYTES if is_table else self.limits.for_name(name)
        path = self.staging / f"part-{self._parts:05d}{_suffix(name)}"
        self._out = path.open("wb")
        self.files.append((self._field, StagedFile(name, path)))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        self._written += size
        if self._out is not None:
            if self._written > self._limit:
                self.close()
                raise _too_large(f"larger than the limit of {self._limit} bytes", self._filename)
            self._out.write(data[start:end])
        elif not self._is_file:
            if len(self._data) + size > MAX_FIELD_BYTES:
                raise ImportFailed([Problem(f"form field {self._field!r} is too long")])
            self._data.extend(data[start:end])

    def _part_end(self) -> None:
        if self._out is not None:
            self.close()
        elif not self._is_file:
            self.fields[self._field].append(self._data.decode("utf-8", "replace"))


# --------------------------------------------------------------------------- chunked uploads


def _part_path(storage: Storage, upload_id: str) -> Path:
    return storage.tmp_dir() / "uploads" / f"{upload_id}.part"


def _reconcile(storage: Storage, upload: UploadSession) -> None:
    """The part file is the truth about ``received`` (a chunk cut short keeps what came)."""
    part = _part_path(storage, upload.id)
    received = min(part.stat().st_size, upload.size) if part.exists() else 0
    if received != upload.received:
        upload.received = received
    upload.status = "complete" if received == upload.size else "open"


def sweep_stale_uploads(session: Session, storage: Storage) -> None:
    """Forget uploads untouched for a day, and staging folders a crash left behind."""
    cutoff = utcnow() - UPLOAD_TTL
    stale = session.scalars(select(UploadSession).where(UploadSession.updated_at < cutoff))
    for upload in stale:
        _part_path(storage, upload.id).unlink(missing_ok=True)
        session.delete(upload)
    for folder in storage.tmp_dir().glob("import-*"):
        if folder.stat().st_mtime < cutoff.timestamp():
            storage.remove_tree(folder)


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
    part = _part_path(storage, upload.id)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.touch()
    return upload


def get_upload(session: Session, storage: Storage, *, user: User, upload_id: str) -> UploadSession:
    """The user's own upload (404 for anyone else's), in a project where they may write."""
    upload = session.get(UploadSession, upload_id)
    if upload is None or upload.user_id != user.id:
        raise NotFound(f"upload {upload_id} not found")
    require(session, user, upload.project_id, WRITE)
    _reconcile(storage, upload)
    return upload


def list_uploads(
    session: Session, storage: Storage, *, user: User, project_id: int | None
) -> list[UploadSession]:
    query = select(UploadSession).where(UploadSession.user_id == user.id)
    if project_id is not None:
        query = query.where(UploadSession.project_id == project_id)
    uploads = list(session.scalars(query.order_by(UploadSession.created_at)))
    for upload in uploads:
        _reconcile(storage, upload)
    return uploads


def delete_upload(session: Session, storage: Storage, *, user: User, upload_id: str) -> None:
    upload = get_upload(session, storage, user=user, upload_id=upload_id)
    _part_path(storage, upload.id).unlink(missing_ok=True)
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
        self._file.write(data)
        self.position += len(data)

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
        _part_path(storage, upload.id), upload_id=upload.id, offset=offset, size=upload.size
    )


def finish_chunk(
    session: Session, storage: Storage, *, user: User, upload_id: str
) -> UploadSession:
    upload = get_upload(session, storage, user=user, upload_id=upload_id)
    upload.updated_at = utcnow()
    session.flush()
    return upload


# --------------------------------------------------------------------------- file sets


class FileSet(Protocol):
    """The files of one import by name, whether uploaded one by one or inside a zip."""

    names: list[str]

    def path(self, name: str) -> Path:
        """The file on disk (extracting it first for a zip)."""
        ...


class LooseFiles:
    def __init__(self, files: list[StagedFile]) -> None:
        self._paths = {f.name: f.path for f in files}
        self.names = list(self._paths)

    def path(self, name: str) -> Path:
        return self._paths[name]


class ZipFiles:
    """A zip checked for unsafe entries on opening; entries are extracted when asked for.

    Refused: entries that leave the folder (absolute or ``..``: zip slip), links and other
    non-regular files, nested archives, encryption, names that are not valid UTF-8 where the
    archive says they are, overlapping entries, and sizes (declared or counted) over the
    limits or compressed more than ``MAX_COMPRESSION_RATIO`` times.
    """

    def __init__(self, staged: StagedFile, staging: Path, limits: Limits) -> None:
        self.label = staged.name
        self.staging = staging
        self.limits = limits
        self.extracted = 0
        self._paths: dict[str, Path] = {}
        self._archive_size = staged.path.stat().st_size
        problems = Problems()
        _check_entry_count(staged.path, self.label)
        try:
            self._zip = zipfile.ZipFile(staged.path)
        except UnicodeDecodeError:
            raise ImportFailed(
                [Problem("an entry's name is not valid UTF-8", self.label)]
            ) from None
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise ImportFailed(
                [Problem(f"not a readable zip archive: {exc}", self.label)]
            ) from None
        self._entries: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = self._entry_name(info, problems)
            if name is not None and name in self._entries:
                problems.add("the archive holds two entries of this name", name)
            elif name is not None:
                self._entries[name] = info
        self._check_overlaps(problems)
        if problems:
            self._zip.close()
            raise ImportFailed(problems)
        self.names = list(self._entries)

    def close(self) -> None:
        self._zip.close()

    def _entry_name(self, info: zipfile.ZipInfo, problems: Problems) -> str | None:
        raw = info.filename
        if not info.flag_bits & 0x800:
            # No UTF-8 flag: zipfile decoded cp437; many tools write UTF-8 without the flag.
            try:
                raw = raw.encode("cp437").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass
        try:
            name = clean_name(raw)
        except ValueError as exc:
            problems.add(f"unsafe archive entry: {exc}", raw)
            return None
        file_type = stat.S_IFMT(info.external_attr >> 16)  # Unix mode; 0 from other systems
        if file_type == stat.S_IFLNK:
            problems.add("symbolic links in archives are refused", name)
            return None
        if info.is_dir() or is_ignored(name):
            return None
        if file_type not in (0, stat.S_IFREG):
            problems.add("not a regular file", name)
            return None
        kind = kind_of(name)
        if kind in ("zip", "archive"):
            problems.add("archives inside the archive are refused: unpack them first", name)
        if info.flag_bits & 0x1:
            problems.add("encrypted entries are not supported", name)
        if info.file_size > RATIO_CHECKED_FROM and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            problems.append(
                Problem(
                    f"compressed {info.file_size // max(info.compress_size, 1)} times, over the "
                    f"limit of {MAX_COMPRESSION_RATIO} (a zip bomb?); gzip NIfTI files "
                    "(.nii.gz) before zipping them",
                    name,
                    kind="too_large",
                )
            )
        return name

    def _check_overlaps(self, problems: Problems) -> None:
        """Entries that share compressed bytes are the trick of the largest zip bombs."""
        ordered = sorted(self._zip.infolist(), key=lambda i: i.header_offset)
        for info, following in zip(ordered, ordered[1:] + [None], strict=True):
            end = info.header_offset + 30 + len(info.orig_filename) + info.compress_size
            limit = following.header_offset if following else self._archive_size
            if end > limit:
                problems.add("archive entries overlap (a zip bomb?)", info.orig_filename)
                return

    def path(self, name: str) -> Path:
        if name in self._paths:
            return self._paths[name]
        info = self._entries[name]
        limit = self.limits.for_name(name)
        if info.file_size > limit:
            raise _too_large(f"{info.file_size} bytes, over the limit of {limit} bytes", name)
        if self.extracted + info.file_size > self.limits.total:
            raise _too_large(
                f"the archive's files come to more than the limit of {self.limits.total} bytes",
                name,
            )
        dest = self.staging / f"entry-{len(self._paths):05d}{_suffix(name)}"
        written = 0
        try:
            with self._zip.open(info) as src, dest.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    # Counted as well as declared: a lying header stops here.
                    if written > info.file_size or written > limit:
                        raise _too_large(f"more bytes than declared or allowed ({limit})", name)
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise ImportFailed([Problem(f"corrupt archive entry: {exc}", name)]) from None
        self.extracted += written
        self._paths[name] = dest
        return dest


def _check_entry_count(path: Path, label: str) -> None:
    """Refuse an archive with too many entries before zipfile reads its whole directory."""
    try:
        with path.open("rb") as fh:
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return
    if end and end[4] > MAX_FILES:
        raise ImportFailed([Problem(f"more than {MAX_FILES} entries in the archive", label)])


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (line number, values by lower-case column)


def _read_table(files: FileSet, name: str) -> Table:
    path = files.path(name)
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise _too_large(f"tables are limited to {MAX_TABLE_BYTES} bytes", name)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFailed([Problem("the table is not UTF-8 text", name)]) from None
    first = text.split("\n", 1)[0]
    if name.lower().endswith(".tsv") or ("\t" in first and "," not in first):
        delimiter = "\t"
    else:
        delimiter = ","
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader, [])
        columns = [c.strip().lower() for c in header]
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            row = {c: (values[i].strip() if i < len(values) else "") for i, c in enumerate(columns)}
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise ImportFailed([Problem(f"unreadable table: {exc}", name)]) from None
    if not columns:
        raise ImportFailed([Problem("the table is empty", name)])
    return Table(name, columns, rows)


def _find_table(files: FileSet) -> str:
    """The manifest or participants.tsv nearest the top (a manifest wins at equal depth)."""
    candidates = [
        n
        for n in files.names
        if PurePosixPath(n).name.lower() in ("manifest.csv", "manifest.tsv", "participants.tsv")
    ]
    if not candidates:
        raise ImportFailed(
            [
                Problem(
                    "no manifest: send a manifest (CSV or TSV), a zip holding manifest.csv, or a "
                    "BIDS folder with participants.tsv"
                )
            ]
        )

    def rank(n: str) -> tuple[int, int]:
        return n.count("/"), 0 if PurePosixPath(n).name.lower().startswith("manifest") else 1

    candidates.sort(key=rank)
    if len(candidates) > 1 and rank(candidates[0]) == rank(candidates[1]):
        shown = ", ".join(candidates[:2])
        raise ImportFailed([Problem(f"two tables at the same level ({shown}); keep one")])
    return candidates[0]


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Fields:
    label: int
    split: str
    site: str
    target: float | None


@dataclass(frozen=True)
class Planned:
    """One subject as a table row describes it, with its files' names in the file set."""

    row: int
    key: str
    fields: Fields
    image: str
    mask: str | None
    brain: str | None = None

    def files(self) -> list[str]:
        """The names of the subject's files in the file set."""
        return [n for n in (self.image, self.mask, self.brain) if n]


def _value(row: dict[str, str], column: str) -> str:
    value = row.get(column, "")
    return "" if value.lower() == "n/a" else value


def _parse_fields(row: dict[str, str], key: str, label_column: str) -> Fields:
    """The checked subject fields of a row; ValueError with a message for the first bad one."""
    if not _KEY.match(key):
        raise ValueError(f"subject {key!r}: use 1-128 letters, digits, '_', '.' or '-'")
    label_text = _value(row, label_column).lower()
    if label_text not in LABELS:
        raise ValueError(
            f"label {_value(row, label_column)!r}: expected 0, 1, healthy, control, "
            "pathological or patient"
        )
    split = _value(row, "split").lower() or "train"
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected train, val or test")
    site = _value(row, "site")
    if len(site) > 64:
        raise ValueError("site: at most 64 characters")
    target_text = _value(row, "target")
    target = None
    if target_text:
        try:
            target = float(target_text)
        except ValueError:
            raise ValueError(f"target {target_text!r}: not a number") from None
        if not math.isfinite(target):
            raise ValueError(f"target {target_text!r}: not a finite number")
    return Fields(LABELS[label_text], split, site, target)


def _resolve(files: FileSet, root: str, value: str) -> str:
    """The file a table cell names: its path from the table's folder, else a unique suffix."""
    wanted = clean_name(value)
    exact = f"{root}/{wanted}" if root else wanted
    if exact in files.names:
        return exact
    matches = [n for n in files.names if n == wanted or n.endswith("/" + wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"several uploaded files match ({', '.join(matches[:3])}); give the path")
    raise ValueError("no uploaded file has this name")


def _plan_manifest(table: Table, files: FileSet, problems: Problems) -> list[Planned]:
    root = str(PurePosixPath(table.name).parent).strip(".")
    unknown = [c for c in table.columns if c not in MANIFEST_COLUMNS]
    missing = [c for c in ("subject", "image", "label") if c not in table.columns]
    if unknown or missing:
        if unknown:
            problems.add(f"unknown column(s) {', '.join(unknown)}", table.name, 1)
        if missing:
            problems.add(f"missing column(s) {', '.join(missing)}", table.name, 1)
        problems.add(f"the columns are: {', '.join(MANIFEST_COLUMNS)}", table.name, 1)
        return []
    planned = []
    for line, row in table.rows:
        try:
            fields = _parse_fields(row, row["subject"], "label")
        except ValueError as exc:
            problems.add(str(exc), table.name, line)
            continue
        names: dict[str, str | None] = dict.fromkeys(_FILE_ROLES)
        for role in _FILE_ROLES:
            value = row.get(role, "")
            if not value:
                if role == "image":
                    problems.add("no image given", table.name, line)
                continue
            try:
                names[role] = _resolve(files, root, value)
            except ValueError as exc:
                problems.add(f"{role}: {exc}", value, line)
        if any(row.get(role) and names[role] is None for role in _FILE_ROLES):
            continue
        image = names["image"]
        assert image is not None
        planned.append(
            Planned(line, row["subject"], fields, image, names["mask"], names["brain_mask"])
        )
    return planned


@dataclass
class _BidsFiles:
    images: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    masks: list[str] = field(default_factory=list)
    brains: list[str] = field(default_factory=list)


def _bids_role(filename: str) -> str | None:
    """'brain', 'mask', an image suffix (T1w, FLAIR) or None, from a BIDS file name's
    entities (a brain mask: ``desc-brain`` or ``label-brain`` with the suffix ``mask``)."""
    stem = filename.split(".", 1)[0]
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    suffix = parts[-1]
    described = (entities.get("desc"), entities.get("label"))
    if suffix.lower() == "mask" and "brain" in described:
        return "brain"
    if suffix.lower() == "mask" or "lesion" in described:
        return "mask"
    for name in _BIDS_IMAGES:
        if suffix.lower() == name.lower():
            return name
    return None


def _index_bids(files: FileSet, root: str) -> dict[str, _BidsFiles]:
    """Images and lesion masks per subject: sub-*/[ses-*/]anat/, masks also in derivatives/."""
    subjects: dict[str, _BidsFiles] = defaultdict(_BidsFiles)
    prefix = f"{root}/" if root else ""
    for name in files.names:
        if not name.startswith(prefix) or kind_of(name) != "nifti":
            continue
        parts = name[len(prefix) :].split("/")
        derived = parts[0] == "derivatives"
        subject_at = next((i for i, p in enumerate(parts[:-1]) if p.startswith("sub-")), None)
        if subject_at is None or (subject_at != 0 and not derived) or parts[-2] != "anat":
            continue
        if len(parts) - subject_at not in (3, 4):  # sub/anat/f or sub/ses/anat/f
            continue
        role = _bids_role(parts[-1])
        entry = subjects[parts[subject_at]]
        if role == "mask":
            entry.masks.append(name)
        elif role == "brain":
            entry.brains.append(name)
        elif role is not None and not derived:
            entry.images[role].append(name)
    return subjects


def _plan_bids(
    table: Table, files: FileSet, modality: str | None, problems: Problems
) -> list[Planned]:
    root = str(PurePosixPath(table.name).parent).strip(".")
    label_column = "label" if "label" in table.columns else "group"
    missing = [c for c in ("participant_id", label_column) if c not in table.columns]
    if missing:
        problems.add(
            f"missing column(s) {', '.join(missing)} (participant_id, label or group)",
            table.name,
            1,
        )
        return []
    found = _index_bids(files, root)
    planned, listed = [], set()
    for line, row in table.rows:
        key = row["participant_id"]
        key = key if key.startswith("sub-") else f"sub-{key}"
        listed.add(key)
        try:
            fields = _parse_fields(row, key, label_column)
        except ValueError as exc:
            problems.add(str(exc), table.name, line)
            continue
        entry = found.get(key, _BidsFiles())
        kinds = [modality] if modality else list(_BIDS_IMAGES)
        images = [n for k in kinds for n in entry.images.get(k, [])]
        where = f"{root}/{key}/anat" if root else f"{key}/anat"
        if not images:
            wanted = modality or "T1w or FLAIR"
            problems.add(f"no {wanted} image found for {key}", where, line)
            continue
        if len(images) > 1:
            problems.add(
                f"several images ({', '.join(images)}): keep one, or choose the modality "
                "(T1w or FLAIR)",
                where,
                line,
            )
            continue
        if len(entry.masks) > 1:
            problems.add(f"several lesion masks ({', '.join(entry.masks)}); keep one", where, line)
            continue
        if len(entry.brains) > 1:
            problems.add(f"several brain masks ({', '.join(entry.brains)}); keep one", where, line)
            continue
        mask = entry.masks[0] if entry.masks else None
        brain = entry.brains[0] if entry.brains else None
        planned.append(Planned(line, key, fields, images[0], mask, brain))
    for key, entry in sorted(found.items()):
        if key not in listed and entry.images:
            first = next(iter(entry.images.values()))[0]
            problems.add(f"{key} has images but no row in participants.tsv", first)
    return planned


def _check_plan(
    session: Session, dataset: Dataset, planned: list[Planned], table: str, problems: Problems
) -> None:
    """No subject twice (in the table or already in the dataset), no file used twice."""
    first_row: dict[str, int] = {}
    for p in planned:
        if p.key in first_row:
            problems.add(f"subject {p.key!r} also on row {first_row[p.key]}", table, p.row)
        first_row.setdefault(p.key, p.row)
    uses = Counter(n for p in planned for n in p.files())
    for name, count in uses.items():
        if count > 1:
            problems.add(f"the file is named by {count} rows or roles", name)
    existing = set(
        session.scalars(
            select(Subject.subject_key).where(
                Subject.dataset_id == dataset.id, Subject.subject_key.in_(list(first_row))
            )
        )
    )
    for p in planned:
        if p.key in existing:
            problems.append(
                Problem(
                    f"subject {p.key!r} already exists in dataset {dataset.id}",
                    table,
                    p.row,
                    kind="conflict",
                )
            )


def _validate(files: FileSet, p: Planned, problems: Problems) -> CheckedFiles | None:
    """Check a subject's image, lesion mask and brain mask, adding every problem found (a
    mask's problems name the mask: ``brain_mask: ...``); None if any."""
    infos: dict[str, tuple[Path, NiftiInfo]] = {}
    roles = (("image", p.image), ("mask", p.mask), ("brain_mask", p.brain))
    for role, name in roles:
        if name is None:
            continue
        try:
            path = files.path(name)
            infos[role] = (path, check_nifti(path, role=role, filename=name))
        except FileInvalid as exc:
            problems.add(exc.problem if role == "image" else f"{role}: {exc.problem}", name, p.row)
    if any(name is not None and role not in infos for role, name in roles):
        return None
    image_path, image_info = infos["image"]
    ok = True
    for role, name in roles[1:]:
        if name is None:
            continue
        try:
            check_mask(*infos[role], image_info, filename=name, role=role)
        except FileInvalid as exc:
            problems.add(f"{role}: {exc.problem}", name, p.row)
            ok = False
    if not ok:
        return None
    mask = infos.get("mask")
    brain = infos.get("brain_mask")
    return CheckedFiles(
        image_path,
        image_info,
        mask[0] if mask else None,
        mask[1] if mask else None,
        brain[0] if brain else None,
        brain[1] if brain else None,
    )


# --------------------------------------------------------------------------- the import


@dataclass
class ImportResult:
    layout: Literal["manifest", "bids"]
    subjects: list[Subject]
    consumed: list[Path]  # uploads' part files to delete once the transaction is committed
    # With skip_invalid: the problems of the rows left out (empty otherwise).
    rejected: list[Problem] = field(default_factory=list)


def _upload_files(
    session: Session,
    storage: Storage,
    *,
    user: User,
    dataset: Dataset,
    upload_ids: list[str],
    staging: Path,
    problems: Problems,
) -> tuple[list[StagedFile], list[UploadSession]]:
    """Completed uploads as staged files (hard links with the suffix nibabel needs)."""
    files, uploads = [], []
    for n, upload_id in enumerate(dict.fromkeys(upload_ids)):
        upload = session.get(UploadSession, upload_id)
        if upload is None or upload.user_id != user.id:
            problems.add("no such upload", upload_id)
            continue
        _reconcile(storage, upload)
        if upload.project_id != dataset.project_id:
            problems.add("the upload belongs to another project", upload.filename)
        elif upload.status != "complete":
            problems.add(
                f"the upload is incomplete ({upload.received} of {upload.size} bytes)",
                upload.filename,
            )
        else:
            link = staging / f"upload-{n:05d}{_suffix(upload.filename)}"
            part = _part_path(storage, upload.id)
            try:
                os.link(part, link)
            except OSError:
                shutil.copyfile(part, link)
            files.append(StagedFile(upload.filename, link))
            uploads.append(upload)
    return files, uploads


def _file_set(
    files: list[StagedFile], manifest: StagedFile | None, staging: Path, limits: Limits
) -> tuple[FileSet, str | None]:
    """The files as one set: loose files, or the contents of a zip sent alone."""
    problems = Problems()
    names = Counter(f.name for f in files)
    for name, count in names.items():
        if count > 1:
            problems.add(f"{count} files have this name; send each once", name)
    for f in files:
        if kind_of(f.name) == "archive":
            problems.add("only zip archives are supported", f.name)
    zips = [f for f in files if kind_of(f.name) == "zip"]
    if zips and (len(files) > 1 or manifest is not None):
        problems.add("send a zip archive alone, without other files", zips[0].name)
    problems.stop_if_any()
    if zips:
        return ZipFiles(zips[0], staging, limits), None
    loose = LooseFiles(files + ([manifest] if manifest else []))
    return loose, manifest.name if manifest else None


def import_subjects(
    session: Session,
    storage: Storage,
    *,
    dataset: Dataset,
    user: User,
    files: list[StagedFile],
    manifest: StagedFile | None = None,
    upload_ids: Iterable[str] = (),
    staging: Path,
    limits: Limits,
    modality: str | None = None,
    problems: Iterable[Problem] = (),
    skip_invalid: bool = False,
) -> ImportResult:
    """Check a whole import, then store its subjects in the session (the caller commits).

    Args:
        files: Files received for this import (names as the client sent them).
        manifest: The table, when sent apart from the files; else one is looked for among
            them (manifest.csv/.tsv or participants.tsv, the one nearest the top).
        upload_ids: Completed chunked uploads that join ``files``.
        staging: This import's staging folder, removed by the caller.
        modality: ``T1w`` or ``FLAIR``: which BIDS image to take where a subject has both.
        problems: Problems already found while receiving the files.
        skip_invalid: Store the subjects whose rows have no problem and report the others
            (``ImportResult.rejected``). Problems not tied to a row (the table, the upload,
            a file named twice) and size limits still refuse the whole import, as does a table
            with no valid row.

    Raises:
        ImportFailed: Every problem found; nothing was stored.
    """
    found = Problems(problems)
    loose, uploads = _upload_files(
        session,
        storage,
        user=user,
        dataset=dataset,
        upload_ids=list(upload_ids),
        staging=staging,
        problems=found,
    )
    found.stop_if_any()
    fileset, table_name = _file_set([*files, *loose], manifest, staging, limits)
    try:
        table = _read_table(fileset, table_name or _find_table(fileset))
        if "participant_id" in table.columns:
            layout: Literal["manifest", "bids"] = "bids"
            planned = _plan_bids(table, fileset, modality, found)
        else:
            layout = "manifest"
            planned = _plan_manifest(table, fileset, found)
        if not planned and not found:
            found.add("the table lists no subject", table.name)
        _check_plan(session, dataset, planned, table.name, found)
        checked = []
        for p in planned:
            try:
                checked.append((p, _validate(fileset, p, found)))
            except ImportFailed as exc:  # a size limit: stop, with what was found so far
                raise ImportFailed([*found, *exc.problems]) from None
        rejected: list[Problem] = []
        if skip_invalid and found and all(p.row is not None for p in found):
            bad_rows = {p.row for p in found}
            kept = [(p, f) for p, f in checked if p.row not in bad_rows and f is not None]
            if kept:
                rejected, checked = list(found), kept
                found = Problems()
        found.stop_if_any()
    finally:
        if isinstance(fileset, ZipFiles):
            fileset.close()
    subjects: list[Subject] = []
    try:
        for p, files_of in checked:
            assert files_of is not None
            subjects.append(
                store_subject(
                    session,
                    storage,
                    dataset=dataset,
                    subject_key=p.key,
                    label=p.fields.label,
                    split=p.fields.split,
                    site=p.fields.site,
                    target=p.fields.target,
                    files=files_of,
                )
            )
    except BaseException:
        remove_subject_files(storage, subjects)
        raise
    consumed = [_part_path(storage, u.id) for u in uploads]
    for upload in uploads:
        session.delete(upload)
    session.flush()
    return ImportResult(layout, subjects, consumed, rejected)
