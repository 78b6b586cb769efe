"""Streaming multipart/form-data bodies of imports: the parts parsed as the bytes arrive, files
written straight to the import's staging folder, the limits held on the way."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.services.dicom import DICOM_HEAD_BYTES, DICOM_REFUSED, is_dicom
from backend.services.imports.common import (
    MAX_FIELD_BYTES,
    MAX_FILES,
    MAX_TABLE_BYTES,
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

__all__ = ["MultipartReceiver"]


class MultipartReceiver:
    """Parses a multipart/form-data body fed in pieces, writing files straight to staging.

    Only files an import can use (NIfTI, tables, zips) are written; others (a BIDS folder's
    JSON sidecars) are counted and dropped, after a look at their first bytes: raw DICOM is
    a problem (``backend.services.dicom``). Limits hold while the bytes arrive: a file over
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
        self._head: bytearray | None = None  # the first bytes of a dropped file
        self.dicom: list[str] = []  # dropped files that were raw DICOM
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
            raise too_large(
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
        if self.dicom:
            more = f" (and {len(self.dicom) - 1} more DICOM files)" if len(self.dicom) > 1 else ""
            self.problems.add(f"a DICOM file{more}: {DICOM_REFUSED}", self.dicom[0])

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FILES:
            raise ImportFailed([Problem(f"more than {MAX_FILES} parts in one request")])
        self._headers, self._data, self._written = {}, bytearray(), 0
        self._head = None

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
            self._filename, self._head = name, bytearray()
            return
        self._filename = name
        self._limit = MAX_TABLE_BYTES if is_table else self.limits.for_name(name)
        path = self.staging / f"part-{self._parts:05d}{file_suffix(name)}"
        self._out = path.open("wb")
        self.files.append((self._field, StagedFile(name, path)))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        self._written += size
        if self._out is not None:
            if self._written > self._limit:
                self.close()
                raise too_large(f"larger than the limit of {self._limit} bytes", self._filename)
            self._out.write(data[start:end])
        elif self._head is not None and len(self._head) < DICOM_HEAD_BYTES:
            self._head.extend(data[start : min(end, start + DICOM_HEAD_BYTES - len(self._head))])
        elif not self._is_file:
            if len(self._data) + size > MAX_FIELD_BYTES:
                raise ImportFailed([Problem(f"form field {self._field!r} is too long")])
            self._data.extend(data[start:end])

    def _part_end(self) -> None:
        if self._out is not None:
            self.close()
        elif self._head is not None:
            if is_dicom(bytes(self._head)) and self._filename:
                self.dicom.append(self._filename)
            self._head, self._filename = None, None
        elif not self._is_file:
            self.fields[self._field].append(self._data.decode("utf-8", "replace"))
