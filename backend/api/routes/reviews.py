"""Clinicians' reviews of attribution maps: create, list, export as CSV.

Blinding is a property of the project's review round (``projects.review_blinded``), enforced
here: a blinded reviewer gets maps as opaque per-user ``item`` tokens, fetches them through
``/reviews/items/{item}/...``, and never sees a run, a method, or an id that leads to them,
in any answer, including the CSV export.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from backend.api.deps import (
    AuditDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    StorageDep,
    authorize,
)
from backend.models import AttributionMap, Dataset, Review, Run, User
from backend.schemas.common import iso_utc
from backend.schemas.review import (
    Agreement,
    ReviewCreate,
    ReviewPublic,
    ReviewQueue,
    ReviewQueueItem,
    ReviewsPublic,
)
from backend.services import attributions as attribution_svc
from backend.services import projects
from backend.services import reviews as service
from backend.services.attributions import get_attribution
from backend.services.errors import TooLarge

router = APIRouter(prefix="/reviews", tags=["reviews"])

NIFTI_GZ = "application/gzip"
CSV_COLUMNS = (
    "review_id",
    "attribution_id",
    "run_id",
    "subject_id",
    "method",
    "reviewer",
    "rating",
    "trust",
    "comment",
    "has_correction",
    "created_at",
    "map_label",
)
# A spreadsheet runs a cell that begins with one of these as a formula (or a DDE command).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """``value`` as CSV text that spreadsheets show as text: a leading ``'`` disarms a cell
    that would start a formula (``=HYPERLINK(...)``, ``+``, ``-``, ``@``, tab, CR)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


@router.post("", operation_id="createReview", status_code=201)
def create_review(
    body: ReviewCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
) -> ReviewPublic:
    """Rate one map, named by its queue ``item`` (or, unblinded, its id): relevance on the
    lesions (1-5), trust, a comment."""
    if body.item is not None:
        attribution = service.resolve_item(session, user, body.item, secret=settings.secret())
        projects.require(session, user, projects.project_of(session, attribution), projects.REVIEW)
    else:
        assert body.attribution_id is not None
        attribution = get_attribution(session, body.attribution_id)
        authorize(session, user, attribution, projects.REVIEW)  # 404 to blinded reviewers
    review = Review(
        attribution_id=attribution.id,
        reviewer_id=user.id,
        rating=body.rating,
        trust=body.trust,
        comment=body.comment,
    )
    session.add(review)
    session.flush()
    audit("rate", attribution, detail=f"review {review.id}: rating {body.rating}", commit=False)
    session.commit()
    return service.review_public(session, user, review, secret=settings.secret())


def _reviews(session: SessionDep, user: User, attribution_id: int | None, run_id: int | None):
    """(review, map, reviewer name, blinded) rows the user may see.

    In a project where the user is a blinded reviewer: only their own reviews, and none when
    filtering by map or run (the filter would tell which maps share a run).
    """
    blinded = projects.blinded_project_ids(session, user)
    query = (
        select(Review, AttributionMap, User.username, Dataset.project_id)
        .join(AttributionMap, AttributionMap.id == Review.attribution_id)
        .join(Run, Run.id == AttributionMap.run_id)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .join(User, User.id == Review.reviewer_id)
        .where(Dataset.project_id.in_(projects.member_project_ids(session, user)))
        .order_by(Review.id)
    )
    if attribution_id is not None:
        query = query.where(Review.attribution_id == attribution_id)
    if run_id is not None:
        query = query.where(AttributionMap.run_id == run_id)
    filtered = attribution_id is not None or run_id is not None
    rows = []
    for review, attribution, username, project_id in session.execute(query).all():
        hidden = project_id in blinded
        if hidden and (filtered or review.reviewer_id != user.id):
            continue
        rows.append((review, attribution, username, hidden))
    return rows


@router.get("", operation_id="listReviews")
def list_reviews(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    attribution_id: int | None = None,
    run_id: int | None = None,
) -> ReviewsPublic:
    """Reviews in the user's projects, filtered by attribution or run (blinded reviewers:
    their own reviews of blinded projects, without map ids)."""
    rows = _reviews(session, user, attribution_id, run_id)
    blinded = projects.blinded_project_ids(session, user)
    data = [
        service.review_public(session, user, r, secret=settings.secret(), blinded=blinded)
        for r, _, _, _ in rows
    ]
    return ReviewsPublic(data=data, count=len(data))


@router.get(
    "/export.csv",
    operation_id="exportReviews",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_reviews(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    attribution_id: int | None = None,
    run_id: int | None = None,
) -> Response:
    """The same reviews as CSV, one row per review; cells that a spreadsheet would run as a
    formula start with ``'``. Blinded rows leave map, run and method empty and give the map's
    blind label instead."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    rows = _reviews(session, user, attribution_id, run_id)
    audit.event(
        "export",
        "reviews",
        detail=f"{len(rows)} reviews (attribution_id={attribution_id}, run_id={run_id})",
    )
    secret = settings.secret()
    for review, attribution, username, hidden in rows:
        writer.writerow(
            csv_cell(v)
            for v in (
                review.id,
                "" if hidden else attribution.id,
                "" if hidden else attribution.run_id,
                attribution.subject_id,
                "" if hidden else attribution.method,
                username,
                review.rating,
                "yes" if review.trust else "no",
                review.comment,
                "yes" if review.has_correction else "no",
                iso_utc(review.created_at),
                service.blinded_label(secret, user.id, attribution.id) if hidden else "",
            )
        )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="reviews.csv"'},
    )


@router.get("/queue", operation_id="reviewQueue")
def review_queue(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    project_id: int,
    blinded: bool = True,
) -> ReviewQueue:
    """The project's succeeded maps the current user has not reviewed yet.

    Blinded (the default, and always for a blinded reviewer of the project, whatever
    ``blinded`` says): no run, method or map id, an opaque label keyed with the server's
    secret, and an order shuffled per user, stable across reloads.
    """
    return service.queue(session, user, project_id, blinded=blinded, secret=settings.secret())


@router.get("/items/{item}", operation_id="getReviewItem")
def get_review_item(
    item: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    blinded: bool = True,
) -> ReviewQueueItem:
    """The map a queue ``item`` names, as the queue shows it, also after the user reviewed it
    (the token of their own reviews): subject, display statistics and, unblinded, run and
    method. Blinded as the queue is."""
    return service.describe_item(session, user, item, blinded=blinded, secret=settings.secret())


@router.get(
    "/items/{item}/display.nii.gz",
    operation_id="downloadReviewItemDisplayMap",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_item_display_map(
    item: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    audit: AuditDep,
) -> FileResponse:
    """A queue item's map for the viewer (int8, scl_slope set), named by its token only."""
    row = service.resolve_item(session, user, item, secret=settings.secret())
    path = attribution_svc.display_map(storage, row)
    audit("view", row, detail="display map (review item)")
    return FileResponse(path, media_type=NIFTI_GZ, filename="review-map-display.nii.gz")


@router.get(
    "/items/{item}/map.nii.gz",
    operation_id="downloadReviewItemMap",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_item_map(
    item: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    audit: AuditDep,
) -> FileResponse:
    """A queue item's signed float32 map, named by its token only."""
    row = service.resolve_item(session, user, item, secret=settings.secret())
    path = attribution_svc.full_map(storage, row)
    audit("download", row, detail="map (review item)")
    return FileResponse(path, media_type=NIFTI_GZ, filename="review-map.nii.gz")


@router.get("/agreement", operation_id="reviewAgreement")
def review_agreement(
    user: CurrentUser,
    session: SessionDep,
    project_id: int | None = None,
    run_id: int | None = None,
) -> Agreement:
    """Agreement between raters on maps rated by at least two of them.

    Cohen's kappa with quadratic weights on the 1-5 rating per rater pair and their mean;
    percent agreement on trust.
    """
    return service.agreement(session, user, project_id=project_id, run_id=run_id)


_BUFFER = 1024 * 1024  # network pieces are gathered to this size before a disk write


async def _receive_to_file(request: Request, dest: Path, limit: int) -> None:
    """Stream the request body to ``dest``, refusing it (413) once it passes ``limit``."""
    out = await run_in_threadpool(dest.open, "wb")
    try:
        size = 0
        buffer = bytearray()
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise TooLarge(f"correction: larger than the limit of {limit} bytes")
            buffer += piece
            if len(buffer) >= _BUFFER:
                await run_in_threadpool(out.write, bytes(buffer))
                buffer.clear()
        await run_in_threadpool(out.write, bytes(buffer))
    finally:
        await run_in_threadpool(out.close)


@router.put(
    "/{review_id}/correction",
    operation_id="putReviewCorrection",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "A NIfTI volume (.nii or .nii.gz bytes) on the subject's grid: "
            "uint8 labels, 1 = missed lesion, 2 = spurious pathological relevance.",
        }
    },
)
async def put_correction(
    review_id: int,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    audit: AuditDep,
) -> ReviewPublic:
    """Attach the reviewer's drawn correction to their review (replaces an earlier one).

    The body streams to a file under the data directory's tmp/ (never held in memory) and
    is refused with 413 once it passes ATTRIVUE_MAX_CORRECTION_BYTES; the stored copy is
    de-identified like a subject's mask.
    """

    def check() -> None:
        review = service.get_review(session, review_id)
        authorize(session, user, review, projects.REVIEW)
        service.check_may_correct(review, user)
        session.commit()  # no transaction stays open while the body streams

    await run_in_threadpool(check)
    with storage.temp_file(suffix=".part") as upload:
        await _receive_to_file(request, upload, settings.max_correction_bytes)

        def save() -> ReviewPublic:
            review = service.get_review(session, review_id)
            service.save_correction(session, storage, review=review, user=user, upload=upload)
            audit("rate", review, detail="correction drawn", commit=False)
            session.commit()
            return service.review_public(session, user, review, secret=settings.secret())

        return await run_in_threadpool(save)


@router.get(
    "/{review_id}/correction.nii.gz",
    operation_id="getReviewCorrection",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}}},
)
def get_correction(
    review_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep, audit: AuditDep
) -> FileResponse:
    """The review's drawn correction as NIfTI (404 when none was saved)."""
    review = service.get_review(session, review_id)
    authorize(session, user, review, projects.REVIEW)
    path = service.correction_file(storage, review)
    audit("download", review, detail="correction")
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"review-{review.id}-correction.nii.gz",
    )
