"""Review queue, drawn corrections and agreement between raters."""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import nibabel as nib
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from attrivue_core.io import NiftiError, NiftiInfo, check_same_grid, validate_nifti
from backend.models import AttributionMap, Dataset, Review, Run, Subject, User
from backend.schemas.review import (
    Agreement,
    MapDisplayStats,
    RaterPair,
    ReviewPublic,
    ReviewQueue,
    ReviewQueueItem,
)
from backend.services import projects
from backend.services.datasets import write_deidentified
from backend.services.errors import Forbidden, InvalidInput, NotFound
from backend.storage import Storage

__all__ = [
    "CORRECTION_LABELS",
    "agreement",
    "blinded_label",
    "check_may_correct",
    "correction_file",
    "describe_item",
    "item_token",
    "queue",
    "resolve_item",
    "review_public",
    "save_correction",
]

CORRECTION_LABELS = {0: "none", 1: "missed lesion", 2: "spurious pathological relevance"}
RATINGS = [1, 2, 3, 4, 5]


# --- the queue ---------------------------------------------------------------------------------


def _keyed(secret: bytes, purpose: str, user_id: int, attribution_id: int) -> str:
    """HMAC-SHA256 with the server's secret: without it, nobody can recompute the value."""
    message = f"attrivue-{purpose}:{user_id}:{attribution_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _order_key(secret: bytes, user_id: int, attribution_id: int) -> str:
    """A per-user pseudo-random key: the shuffle is stable across reloads and new maps."""
    return _keyed(secret, "queue", user_id, attribution_id)


def blinded_label(secret: bytes, user_id: int, attribution_id: int) -> str:
    """An opaque name for a map, the same for one user every time."""
    return f"Map {_keyed(secret, 'label', user_id, attribution_id)[:6].upper()}"


def item_token(secret: bytes, user_id: int, attribution_id: int) -> str:
    """The user's opaque token of a map: names it in review routes without giving its id."""
    return _keyed(secret, "item", user_id, attribution_id)[:32]


def _display_stats(stats: dict | None) -> MapDisplayStats:
    """Only the numbers the viewer scales colours with (never the method's own keys)."""
    keys = MapDisplayStats.model_fields
    return MapDisplayStats.model_validate(
        {k: v for k, v in (stats or {}).items() if k in keys and isinstance(v, int | float)}
    )


def _succeeded_maps(session: Session, project_ids: list[int]):
    return session.execute(
        select(AttributionMap, Run.name, Dataset.project_id)
        .join(Run, Run.id == AttributionMap.run_id)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .where(Dataset.project_id.in_(project_ids), AttributionMap.status == "succeeded")
        .order_by(AttributionMap.id)
    ).all()


def _queue_item(
    secret: bytes, user: User, m: AttributionMap, run_name: str, *, blinded: bool
) -> ReviewQueueItem:
    return ReviewQueueItem(
        item=item_token(secret, user.id, m.id),
        attribution_id=None if blinded else m.id,
        subject_id=m.subject_id,
        label=(
            blinded_label(secret, user.id, m.id) if blinded else f"{run_name} · {m.method} #{m.id}"
        ),
        stats=_display_stats(m.stats),
        run_id=None if blinded else m.run_id,
        run_name=None if blinded else run_name,
        method=None if blinded else m.method,
    )


def queue(
    session: Session, user: User, project_id: int, *, blinded: bool, secret: bytes
) -> ReviewQueue:
    """The project's succeeded maps that ``user`` has not reviewed yet.

    A blinded reviewer of the project (see ``projects.blinded_project_ids``) always gets the
    blinded queue, whatever ``blinded`` asks for.
    """
    projects.require(session, user, project_id, projects.REVIEW)
    enforced = projects.is_blinded(session, user, project_id)
    blinded = blinded or enforced
    rows = _succeeded_maps(session, [project_id])
    reviewed = set(
        session.scalars(select(Review.attribution_id).where(Review.reviewer_id == user.id))
    )
    pending = [(m, name) for m, name, _ in rows if m.id not in reviewed]
    if blinded:
        pending.sort(key=lambda row: _order_key(secret, user.id, row[0].id))
    items = [_queue_item(secret, user, m, name, blinded=blinded) for m, name in pending]
    return ReviewQueue(
        project_id=project_id,
        blinded=blinded,
        enforced=enforced,
        data=items,
        count=len(items),
        reviewed=len(rows) - len(pending),
    )


def resolve_item(session: Session, user: User, item: str, *, secret: bytes) -> AttributionMap:
    """The succeeded map that ``item`` names for ``user``, in a project they are a member of.

    404 for a token that is not theirs (another user's tokens name nothing for them).
    """
    if len(item) == 32:
        for m, _, _ in _succeeded_maps(session, projects.member_project_ids(session, user)):
            if hmac.compare_digest(item_token(secret, user.id, m.id), item):
                return m
    raise NotFound("review item not found")


def describe_item(
    session: Session, user: User, item: str, *, blinded: bool, secret: bytes
) -> ReviewQueueItem:
    """The map ``item`` names for ``user``, as the queue shows it (reviewed or not), so that a
    reviewer can reopen their review of it. Blinded as the queue is: always for a blinded
    reviewer of the project, whatever ``blinded`` asks for."""
    m = resolve_item(session, user, item, secret=secret)
    project_id = projects.project_of(session, m)
    projects.require(session, user, project_id, projects.REVIEW)
    blinded = blinded or projects.is_blinded(session, user, project_id)
    run = session.get(Run, m.run_id)
    return _queue_item(secret, user, m, run.name if run else "", blinded=blinded)


def review_public(
    session: Session, user: User, review: Review, *, secret: bytes, blinded: set[int] | None = None
) -> ReviewPublic:
    """A review as ``user`` may see it: blinded in their blinded projects (no attribution id;
    their token and label of the map instead); their own reviews carry their token of the map."""
    if blinded is None:
        blinded = projects.blinded_project_ids(session, user)
    public = ReviewPublic.model_validate(review)
    if blinded and projects.project_of(session, review) in blinded:
        return public.model_copy(
            update={
                "attribution_id": None,
                "item": item_token(secret, user.id, review.attribution_id),
                "label": blinded_label(secret, user.id, review.attribution_id),
            }
        )
    if review.reviewer_id == user.id:
        # The user's own review carries their token of the map, to reopen it by token.
        return public.model_copy(
            update={"item": item_token(secret, user.id, review.attribution_id)}
        )
    return public


# --- corrections -------------------------------------------------------------------------------


def get_review(session: Session, review_id: int) -> Review:
    review = session.get(Review, review_id)
    if review is None:
        raise NotFound(f"review {review_id} not found")
    return review


def correction_path(storage: Storage, attribution: AttributionMap, review: Review) -> Path:
    """Next to the map: runs/<run>/maps/<map>.corrections/<review>.nii.gz."""
    maps_dir = storage.map_path(attribution.run_id, attribution.id).parent
    return maps_dir / f"{attribution.id}.corrections" / f"{review.id}.nii.gz"


def _subject_grid(subject: Subject) -> NiftiInfo:
    affine = np.asarray(subject.affine, dtype=float)
    x, y, z = (int(v) for v in subject.shape)  # stored as the image's three spatial sizes
    zx, zy, zz = (float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    return NiftiInfo(shape=(x, y, z), affine=affine, dtype="", zooms=(zx, zy, zz))


def check_may_correct(review: Review, user: User) -> None:
    """Only the author of a review attaches its correction (checked before the body is read)."""
    if review.reviewer_id != user.id:
        raise Forbidden("only the author of a review may attach its correction")


def save_correction(
    session: Session, storage: Storage, *, review: Review, user: User, upload: Path
) -> Review:
    """Validate a drawn correction against the subject's grid and store it de-identified.

    Args:
        upload: The received body on disk (NIfTI, gzip-compressed or not), in the data
            directory's tmp/; the caller removes it.

    The stored file is written like a subject's mask (``write_deidentified``): free-text
    header fields cleared, extensions dropped, the labels as uint8; atomically.
    """
    check_may_correct(review, user)
    if not upload.is_file() or upload.stat().st_size == 0:
        raise InvalidInput("correction: the body is empty; send a NIfTI volume")
    attribution = session.get(AttributionMap, review.attribution_id)
    assert attribution is not None
    subject = session.get(Subject, attribution.subject_id)
    assert subject is not None
    with upload.open("rb") as head:
        compressed = head.read(2) == b"\x1f\x8b"
    with storage.temp_file(suffix=".nii.gz" if compressed else ".nii") as named:
        os.replace(upload, named)  # validation reads the compression from the name too
        try:
            info = validate_nifti(named)
            check_same_grid(_subject_grid(subject), info)
        except NiftiError as exc:
            msg = str(exc).replace("mask ", "correction ", 1)
            raise InvalidInput(f"correction: {msg} (subject {subject.id})") from None
        values = _label_values(named)
        if not values <= set(CORRECTION_LABELS):
            shown = ", ".join(f"{v:g}" for v in sorted(values)[:6])
            raise InvalidInput(
                "correction: expected only the labels 0, 1 (missed lesion) and 2 (spurious "
                f"pathological relevance); found {shown}"
            )
        dest = correction_path(storage, attribution, review)
        write_deidentified(named, dest, kind="labels")
    review.correction_path = storage.relative(dest)
    session.flush()
    return review


def _label_values(path: Path) -> set[float]:
    """The distinct voxel values of a volume as a reader sees them (scaling applied), those
    within 1e-4 of an integer taken as that integer (a scaled integer volume: 1000 * 0.001
    reads 1.00000005)."""
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)  # validated: NIfTI-1 or its subclass NIfTI-2
    values = np.unique(np.asarray(img.dataobj, dtype=np.float64))
    rounded = np.rint(values)
    return {
        float(r) if abs(v - r) < 1e-4 else float(v) for v, r in zip(values, rounded, strict=True)
    }


def correction_file(storage: Storage, review: Review) -> Path:
    if review.correction_path is None:
        raise NotFound(f"review {review.id} has no correction")
    path = storage.absolute(review.correction_path)
    if not path.is_file():
        raise NotFound(f"review {review.id}: the correction file is missing")
    return path


# --- agreement ---------------------------------------------------------------------------------


def _kappa(a: list[int], b: list[int]) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    if len(a) < 2:
        return None
    with np.errstate(all="ignore"):
        value = float(cohen_kappa_score(a, b, labels=RATINGS, weights="quadratic"))
    return None if math.isnan(value) else value


def agreement(
    session: Session, user: User, *, project_id: int | None, run_id: int | None
) -> Agreement:
    """Cohen's kappa (quadratic) per rater pair and trust agreement, on maps with >= 2 raters."""
    if project_id is None and run_id is None:
        raise InvalidInput("give project_id or run_id")
    query = (
        select(Review, User.username)
        .join(AttributionMap, AttributionMap.id == Review.attribution_id)
        .join(Run, Run.id == AttributionMap.run_id)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .join(User, User.id == Review.reviewer_id)
        .order_by(Review.id)
    )
    if project_id is not None:
        projects.require(session, user, project_id, projects.REVIEW)
        query = query.where(Dataset.project_id == project_id)
    if run_id is not None:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        projects.require_object(session, user, run, projects.REVIEW)
        query = query.where(AttributionMap.run_id == run_id)
    # A rater's latest review of a map counts.
    latest: dict[int, dict[str, Review]] = defaultdict(dict)
    for review, username in session.execute(query).all():
        latest[review.attribution_id][username] = review
    multi = {m: by for m, by in latest.items() if len(by) >= 2}
    raters = sorted({name for by in multi.values() for name in by})
    pairs: list[RaterPair] = []
    trust_equal = trust_total = 0
    for a, b in combinations(raters, 2):
        both = [by for by in multi.values() if a in by and b in by]
        if not both:
            continue
        same_trust = sum(by[a].trust == by[b].trust for by in both)
        trust_equal += same_trust
        trust_total += len(both)
        pairs.append(
            RaterPair(
                rater_a=a,
                rater_b=b,
                n_maps=len(both),
                kappa=_kappa([by[a].rating for by in both], [by[b].rating for by in both]),
                trust_agreement=same_trust / len(both),
            )
        )
    kappas = [p.kappa for p in pairs if p.kappa is not None]
    return Agreement(
        project_id=project_id,
        run_id=run_id,
        n_maps=len(multi),
        n_reviews=sum(len(by) for by in multi.values()),
        n_raters=len(raters),
        pairs=pairs,
        mean_kappa=sum(kappas) / len(kappas) if kappas else None,
        trust_agreement=trust_equal / trust_total if trust_total else None,
    )
