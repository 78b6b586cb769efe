"""Clinicians' reviews of attribution maps: create, list, export as CSV."""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import select

from backend.api.deps import CurrentUser, SessionDep, authorize
from backend.models import AttributionMap, Dataset, Review, Run, User
from backend.schemas.review import ReviewCreate, ReviewPublic, ReviewsPublic
from backend.services import projects
from backend.services.attributions import get_attribution

router = APIRouter(prefix="/reviews", tags=["reviews"])

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
    "created_at",
)


@router.post("", operation_id="createReview", status_code=201)
def create_review(body: ReviewCreate, user: CurrentUser, session: SessionDep) -> ReviewPublic:
    """Rate one attribution map: relevance on the lesions (1-5), trust, a comment."""
    attribution = get_attribution(session, body.attribution_id)
    authorize(session, user, attribution, projects.REVIEW)
    review = Review(
        attribution_id=attribution.id,
        reviewer_id=user.id,
        rating=body.rating,
        trust=body.trust,
        comment=body.comment,
    )
    session.add(review)
    session.commit()
    return ReviewPublic.model_validate(review)


def _reviews(session: SessionDep, user: User, attribution_id: int | None, run_id: int | None):  # type: ignore[no-untyped-def]
    query = (
        select(Review, AttributionMap, User.username)
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
    return session.execute(query).all()


@router.get("", operation_id="listReviews")
def list_reviews(
    user: CurrentUser,
    session: SessionDep,
    attribution_id: int | None = None,
    run_id: int | None = None,
) -> ReviewsPublic:
    """Reviews in the user's projects, filtered by attribution or run."""
    rows = _reviews(session, user, attribution_id, run_id)
    data = [ReviewPublic.model_validate(r) for r, _, _ in rows]
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
    attribution_id: int | None = None,
    run_id: int | None = None,
) -> Response:
    """The same reviews as CSV, one row per review."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for review, attribution, username in _reviews(session, user, attribution_id, run_id):
        writer.writerow(
            [
                review.id,
                attribution.id,
                attribution.run_id,
                attribution.subject_id,
                attribution.method,
                username,
                review.rating,
                "yes" if review.trust else "no",
                review.comment,
                review.created_at.isoformat(),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="reviews.csv"'},
    )
