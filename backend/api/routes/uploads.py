"""Chunked, resumable uploads and dataset imports (manifest, zip, BIDS folder).

Bodies are streamed to disk as they arrive, never held whole in memory, and the size limits
hold while they stream. Blocking work (database, disk, validation) runs in the threadpool.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, StorageDep, authorize
from backend.api.multipart import MultipartReceiver
from backend.models import Dataset, UploadSession, User
from backend.schemas.upload import (
    ImportErrors,
    ImportFromUploads,
    ImportProblem,
    ImportPublic,
    UploadCreate,
    UploadPublic,
    UploadsPublic,
)
from backend.services import datasets
from backend.services import imports as svc
from backend.services.errors import InvalidInput
from backend.services.projects import WRITE
from backend.storage import Storage

router = APIRouter(tags=["uploads"])

_BUFFER = 1024 * 1024  # network pieces are gathered to this size before a disk write
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_CHUNK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "manifest": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV or TSV: subject, image, label[, mask, target, "
                            "split, site, image_<name> per further modality]; or a BIDS "
                            "participants.tsv",
                        },
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "NIfTI files named as in the manifest, a BIDS "
                            "folder's files named by their relative paths, or one zip",
                        },
                        "upload_ids": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "completed chunked uploads to include",
                        },
                        "resample": {
                            "type": "boolean",
                            "description": "resample a modality that is off the grid of the "
                            "first onto it, instead of refusing the subject",
                        },
                    },
                }
            },
            "application/json": {"schema": ImportFromUploads.model_json_schema()},
        },
    }
}
_IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ImportErrors, "description": text}
    for code, text in (
        (409, "a subject already exists in the dataset"),
        (413, "a file, the archive or the request is over its size limit"),
        (422, "invalid files, rows or archive entries; every problem is listed"),
    )
}


def _public(upload: UploadSession) -> UploadPublic:
    return UploadPublic.model_validate(upload)


def _offset_headers(upload: UploadSession) -> dict[str, str]:
    return {"Upload-Offset": str(upload.received), "Upload-Length": str(upload.size)}


@router.post("/uploads", operation_id="createUpload", status_code=201)
def create_upload(
    body: UploadCreate,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> UploadPublic:
    """Open a resumable upload of one file; send its bytes with appendUpload."""
    upload = svc.create_upload(
        session,
        storage,
        user=user,
        project_id=body.project_id,
        filename=body.filename,
        size=body.size,
        limits=svc.Limits.from_settings(settings),
    )
    session.commit()
    return _public(upload)


@router.get("/uploads", operation_id="listUploads")
def list_uploads(
    user: CurrentUser, session: SessionDep, storage: StorageDep, project_id: int | None = None
) -> UploadsPublic:
    """The user's own unfinished or unused uploads (to resume them)."""
    uploads = svc.list_uploads(session, storage, user=user, project_id=project_id)
    session.commit()
    return UploadsPublic(data=[_public(u) for u in uploads], count=len(uploads))


@router.head("/uploads/{upload_id}", operation_id="headUpload")
def head_upload(
    upload_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> Response:
    """How many bytes arrived, in the Upload-Offset header (Upload-Length: the size)."""
    upload = svc.get_upload(session, storage, user=user, upload_id=upload_id)
    session.commit()
    return Response(headers=_offset_headers(upload))


@router.get("/uploads/{upload_id}", operation_id="getUpload")
def get_upload(
    upload_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> UploadPublic:
    """An upload and how many bytes arrived (``received``: where the next chunk starts)."""
    upload = svc.get_upload(session, storage, user=user, upload_id=upload_id)
    session.commit()
    return _public(upload)


def _chunk_start(
    content_range: str | None, offset: int | None
) -> tuple[int, int | None, int | None]:
    """(start, end or None, total or None) from ``Content-Range`` or ``?offset=``."""
    if content_range is None:
        if offset is None:
            raise InvalidInput("send a Content-Range header (bytes START-END/SIZE) or ?offset=")
        return offset, None, None
    match = _RANGE.match(content_range.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise InvalidInput(f"Content-Range {content_range!r}: expected 'bytes START-END/SIZE'")
    if offset is not None and offset != int(match[1]):
        raise InvalidInput("the offset parameter and the Content-Range disagree")
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]), total


@router.put("/uploads/{upload_id}", operation_id="appendUpload", openapi_extra=_CHUNK_BODY)
async def append_upload(
    upload_id: str,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    offset: Annotated[int | None, Query(ge=0, description="where the chunk starts")] = None,
    content_range: Annotated[str | None, Header()] = None,
) -> UploadPublic:
    """Write a chunk (the raw body) at its offset; it may start at or before ``received``."""
    start, end, total = _chunk_start(content_range, offset)

    def begin() -> svc.UploadChunk:
        chunk = svc.open_chunk(
            session, storage, user=user, upload_id=upload_id, offset=start, total=total
        )
        session.commit()  # no transaction stays open while the body streams
        return chunk

    chunk = await run_in_threadpool(begin)
    keep = disconnected = False
    buffer = bytearray()
    try:
        try:
            async for piece in request.stream():
                buffer += piece
                if len(buffer) >= _BUFFER:
                    await run_in_threadpool(chunk.write, bytes(buffer))
                    buffer.clear()
        except ClientDisconnect:
            # What arrived is in order: keep it, and the client resumes from there.
            disconnected = True
        await run_in_threadpool(chunk.write, bytes(buffer))
        keep = True
    finally:
        stored = await run_in_threadpool(lambda: chunk.close(keep=keep))

    def finish() -> UploadSession:
        upload = svc.finish_chunk(session, storage, user=user, upload_id=upload_id)
        session.commit()
        return upload

    upload = await run_in_threadpool(finish)
    if end is not None and stored != end + 1 and not disconnected:
        raise InvalidInput(
            f"the chunk ended at byte {stored} but its Content-Range announced {end + 1}; "
            f"{upload.received} bytes are stored: resume from there"
        )
    return _public(upload)


@router.delete("/uploads/{upload_id}", operation_id="deleteUpload", status_code=204)
def delete_upload(
    upload_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> None:
    """Abandon an upload: its bytes are deleted."""
    svc.delete_upload(session, storage, user=user, upload_id=upload_id)
    session.commit()


# --------------------------------------------------------------------------- imports


def _writable_dataset(session: Session, user: User, dataset_id: int) -> Dataset:
    dataset = datasets.get_dataset(session, dataset_id)
    authorize(session, user, dataset, WRITE)
    session.commit()
    return dataset


@dataclass
class _Received:
    files: list[svc.StagedFile] = field(default_factory=list)
    manifest: svc.StagedFile | None = None
    upload_ids: list[str] = field(default_factory=list)
    problems: list[svc.Problem] = field(default_factory=list)
    modality: str | None = None
    modalities: list[str] | None = None
    resample: bool = False
    skip_invalid: bool = False


async def _receive(request: Request, staging: Path, limits: svc.Limits) -> _Received:
    """Stream the body into staging: files, the manifest, upload ids and modality."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > svc.MAX_TABLE_BYTES:
                raise svc.ImportFailed(
                    [svc.Problem("the JSON body is too large", kind="too_large")]
                )
        try:
            body = ImportFromUploads.model_validate(json.loads(raw or b"null"))
        except (ValueError, ValidationError, RecursionError) as exc:
            raise svc.ImportFailed([svc.Problem(f"invalid JSON body: {exc}")]) from None
        return _Received(
            upload_ids=body.upload_ids,
            modality=body.modality,
            modalities=list(body.modalities) if body.modalities else None,
            resample=body.resample,
            skip_invalid=body.skip_invalid,
        )
    if not content_type.startswith("multipart/form-data"):
        raise svc.ImportFailed(
            [svc.Problem("send multipart/form-data (files) or application/json (upload_ids)")]
        )
    receiver = MultipartReceiver(content_type, staging, limits, table_fields={"manifest"})
    try:
        buffer = bytearray()
        async for piece in request.stream():
            buffer += piece
            if len(buffer) >= _BUFFER:
                await run_in_threadpool(receiver.feed, bytes(buffer))
                buffer.clear()
        await run_in_threadpool(receiver.feed, bytes(buffer))
        receiver.finish()
    finally:
        receiver.close()
    manifests = [f for field, f in receiver.files if field == "manifest"]
    if len(manifests) > 1:
        receiver.problems.add("send one manifest")
    files = [f for field, f in receiver.files if field != "manifest"]
    ids = [
        i
        for value in receiver.fields.get("upload_ids", [])
        for i in re.split(r"[\s,]+", value)
        if i
    ]
    skip = receiver.fields.get("skip_invalid", ["false"])[-1].strip().lower() in ("1", "true")
    resample = receiver.fields.get("resample", ["false"])[-1].strip().lower() in ("1", "true")
    return _Received(
        files,
        manifests[0] if manifests else None,
        ids,
        receiver.problems,
        resample=resample,
        skip_invalid=skip,
    )


def _import_and_commit(
    session: Session,
    storage: Storage,
    *,
    dataset: Dataset,
    user: User,
    received: _Received,
    staging: Path,
    limits: svc.Limits,
) -> ImportPublic:
    result = None
    try:
        result = svc.import_subjects(
            session,
            storage,
            dataset=dataset,
            user=user,
            files=received.files,
            manifest=received.manifest,
            upload_ids=received.upload_ids,
            staging=staging,
            limits=limits,
            modality=received.modality,
            modalities=received.modalities,
            resample=received.resample,
            problems=received.problems,
            skip_invalid=received.skip_invalid,
        )
        session.commit()
    except BaseException as exc:
        session.rollback()
        if result is not None:
            datasets.remove_subject_files(storage, result.subjects)
        if isinstance(exc, IntegrityError):  # a concurrent import took a subject key
            raise svc.ImportFailed(
                [svc.Problem("a subject of this import was added meanwhile", kind="conflict")]
            ) from None
        raise
    for part in result.consumed:
        part.unlink(missing_ok=True)
    return ImportPublic(
        dataset_id=dataset.id,
        layout=result.layout,
        data=[datasets.subject_public(s) for s in result.subjects],
        count=len(result.subjects),
        rejected=[ImportProblem.model_validate(p.public()) for p in result.rejected],
    )


@router.post(
    "/datasets/{dataset_id}/imports",
    operation_id="importSubjects",
    status_code=201,
    response_model=ImportPublic,
    responses=_IMPORT_ERRORS,
    openapi_extra=_IMPORT_BODY,
)
async def import_subjects(
    dataset_id: int,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    modality: Annotated[
        Literal["T1w", "FLAIR"] | None,
        Query(description="BIDS: the image to take where a subject has both"),
    ] = None,
    modalities: Annotated[
        list[Literal["T1w", "FLAIR"]] | None,
        Query(
            description="BIDS: stack these modalities as channels, in this order (e.g. "
            "modalities=T1w&modalities=FLAIR); a manifest names them by its image columns"
        ),
    ] = None,
    resample: Annotated[
        bool | None,
        Query(
            description="resample a modality that is off the grid of the first onto it "
            "(trilinear), instead of refusing the subject"
        ),
    ] = None,
) -> ImportPublic | Response:
    """Import many subjects at once: all are checked first, then stored together, or none."""
    dataset = await run_in_threadpool(_writable_dataset, session, user, dataset_id)
    limits = svc.Limits.from_settings(settings)
    staging = await run_in_threadpool(svc.new_staging, storage)
    try:
        received = await _receive(request, staging, limits)
        received.modality = modality or received.modality
        received.modalities = list(modalities) if modalities else received.modalities
        received.resample = resample if resample is not None else received.resample
        return await run_in_threadpool(
            lambda: _import_and_commit(
                session,
                storage,
                dataset=dataset,
                user=user,
                received=received,
                staging=staging,
                limits=limits,
            )
        )
    except svc.ImportFailed as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    except ClientDisconnect:
        return Response(status_code=400)
    finally:
        await run_in_threadpool(svc.drop_staging, storage, staging)
