"""The files of an import as one set by name: loose files, or a zip archive checked for unsafe
entries (zip slip, links, nested archives, encryption, zip bombs) before any is extracted."""

from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path
from typing import Protocol

from backend.services.dicom import DICOM_HEAD_BYTES, DICOM_REFUSED, is_dicom
from backend.services.imports.common import (
    MAX_COMPRESSION_RATIO,
    MAX_FILES,
    RATIO_CHECKED_FROM,
    ImportFailed,
    Limits,
    Problem,
    Problems,
    StagedFile,
    clean_name,
    file_suffix,
    is_ignored,
    kind_of,
    too_large,
)

__all__ = ["FileSet", "LooseFiles", "ZipFiles"]

_CHUNK = 1024 * 1024


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
        if not problems:
            self._check_dicom(problems)
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

    def _check_dicom(self, problems: Problems) -> None:
        """Raw DICOM inside the archive: one problem naming the first such entry."""
        found = []
        for name, info in self._entries.items():
            if info.file_size < DICOM_HEAD_BYTES or info.flag_bits & 0x1:
                continue
            try:
                with self._zip.open(info) as src:
                    head = src.read(DICOM_HEAD_BYTES)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError):
                continue  # reported when the entry is extracted, if it is used
            if is_dicom(head):
                found.append(name)
        if found:
            more = f" (and {len(found) - 1} more DICOM files)" if len(found) > 1 else ""
            problems.add(f"the archive holds DICOM files{more}: {DICOM_REFUSED}", found[0])

    def path(self, name: str) -> Path:
        if name in self._paths:
            return self._paths[name]
        info = self._entries[name]
        limit = self.limits.for_name(name)
        if info.file_size > limit:
            raise too_large(f"{info.file_size} bytes, over the limit of {limit} bytes", name)
        if self.extracted + info.file_size > self.limits.total:
            raise too_large(
                f"the archive's files come to more than the limit of {self.limits.total} bytes",
                name,
            )
        dest = self.staging / f"entry-{len(self._paths):05d}{file_suffix(name)}"
        written = 0
        try:
            with self._zip.open(info) as src, dest.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    # Counted as well as declared: a lying header stops here.
                    if written > info.file_size or written > limit:
                        raise too_large(f"more bytes than declared or allowed ({limit})", name)
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
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]  # private zipfile helper, not in typeshed
    except (AttributeError, OSError):
        return
    if end and end[4] > MAX_FILES:
        raise ImportFailed([Problem(f"more than {MAX_FILES} entries in the archive", label)])
