"""What the parts of an import share: its problems and their error, the byte limits, the
names of the files it receives (cleaned, ignored, by kind) and a staged file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.core.config import Settings
from backend.services.errors import ServiceError

__all__ = [
    "ARCHIVE_LIMIT_FACTOR",
    "MAX_COMPRESSION_RATIO",
    "MAX_FIELD_BYTES",
    "MAX_FILES",
    "MAX_TABLE_BYTES",
    "RATIO_CHECKED_FROM",
    "ImportFailed",
    "Limits",
    "Problem",
    "Problems",
    "StagedFile",
    "clean_name",
    "file_suffix",
    "is_ignored",
    "kind_of",
    "too_large",
]

ARCHIVE_LIMIT_FACTOR = 4  # an archive or one import may hold this many files' worth of bytes
MAX_TABLE_BYTES = 16 * 1024**2
MAX_FIELD_BYTES = 64 * 1024
MAX_FILES = 10_000  # parts of one request, entries of one zip
MAX_COMPRESSION_RATIO = 100  # for zip entries above RATIO_CHECKED_FROM bytes
RATIO_CHECKED_FROM = 32 * 1024**2

_IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
_ARCHIVE_SUFFIXES = (".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".tbz2")


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


def too_large(problem: str, file: str | None, found: Iterable[Problem] = ()) -> ImportFailed:
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


def file_suffix(name: str) -> str:
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
