"""Runs launched from the reviews of an earlier run, and the epoch maps of watch subjects.

A run "from reviews" trains on the earlier run's dataset with the target maps of the subjects
that clinicians corrected replaced by their merge (``attrivue_core.corrections``): the run's own
targets (lesion masks in the supervised mode) with missed lesions set to 1 and spurious
relevance set to 0. The files are written when the run is created, one per corrected
subject, under ``runs/<run>/targets/``, each with its provenance in ``corrected_targets``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from attrivue_core.corrections import (
    Correction,
    Policy,
    base_target,
    merge_corrections,
    save_target,
    target_mode,
)
from attrivue_core.io import load_image
from backend.models import (
    AttributionMap,
    CorrectedTarget,
    EpochMap,
    Review,
    Run,
    Subject,
    User,
)
from backend.schemas.corrections import (
    CorrectedTargetPublic,
    CorrectedTargetsPublic,
    EpochMapPublic,
    EpochMapsPublic,
    ReviewCorrection,
    RunCorrections,
    SubjectCorrections,
)
from backend.services.errors import InvalidInput, NotFound
from backend.services.runs import create_run, validate_config
from backend.storage import Storage

__all__ = [
    "corrected_target_file",
    "epoch_map_file",
    "launch_from_reviews",
    "list_corrected_targets",
    "list_epoch_maps",
    "run_corrections",
]

MAX_WATCH = 8


def _corrections(session: Session, run: Run) -> list[tuple[Review, AttributionMap, str]]:
    rows = session.execute(
        select(Review, AttributionMap, User.username)
        .join(AttributionMap, AttributionMap.id == Review.attribution_id)
        .join(User, User.id == Review.reviewer_id)
        .where(AttributionMap.run_id == run.id, Review.correction_path.is_not(None))
        .order_by(Review.created_at, Review.id)
    ).all()
    return [(r, m, name) for r, m, name in rows]


def _labels(storage: Storage, review: Review) -> np.ndarray:
    assert review.correction_path is not None
    path = storage.absolute(review.correction_path)
    if not path.is_file():
        raise InvalidInput(f"review {review.id}: its correction file is missing")
    return np.asarray(load_image(path).dataobj).astype(np.uint8)


def _grouped(
    session: Session, storage: Storage, run: Run
) -> dict[int, list[tuple[Review, AttributionMap, str, np.ndarray]]]:
    by_subject: dict[int, list[tuple[Review, AttributionMap, str, np.ndarray]]] = defaultdict(list)
    for review, attribution, username in _corrections(session, run):
        by_subject[attribution.subject_id].append(
            (review, attribution, username, _labels(storage, review))
        )
    return by_subject


def run_corrections(session: Session, storage: Storage, run: Run) -> RunCorrections:
    """The drawn corrections on the run's maps, by subject (for the launch form)."""
    subjects = []
    n_reviews = 0
    for subject_id, rows in sorted(_grouped(session, storage, run).items()):
        subject = session.get(Subject, subject_id)
        assert subject is not None
        reviews = [
            ReviewCorrection(
                review_id=review.id,
                reviewer_id=review.reviewer_id,
                reviewer=username,
                attribution_id=attribution.id,
                method=attribution.method,
                created_at=review.created_at,
                missed_voxels=int((labels == 1).sum()),
                spurious_voxels=int((labels == 2).sum()),
            )
            for review, attribution, username, labels in rows
        ]
        n_reviews += len(reviews)
        subjects.append(
            SubjectCorrections(
                subject_id=subject.id,
                subject_key=subject.subject_key,
                split=subject.split,
                label=subject.label,
                reviews=reviews,
            )
        )
    return RunCorrections(run_id=run.id, n_reviews=n_reviews, subjects=subjects)


def target_path(storage: Storage, run_id: int, subject_id: int) -> Path:
    return storage.run_dir(run_id) / "targets" / f"{subject_id}.nii.gz"


def launch_from_reviews(
    session: Session,
    storage: Storage,
    *,
    source: Run,
    name: str,
    config: dict[str, Any],
    policy: Policy,
    user: User,
) -> Run:
    """Create (not yet dispatch) a run on ``source``'s dataset whose corrected subjects train
    on their merged target maps; the files are written here, removed again on failure."""
    grouped = _grouped(session, storage, source)
    if not grouped:
        raise InvalidInput(
            f"run {source.id} has no review with a drawn correction; draw one on the review page"
        )
    merged_config = {**source.config, **config}
    if "watch_subjects" not in config:
        merged_config["watch_subjects"] = sorted(grouped)[:MAX_WATCH]
    clean = validate_config(merged_config)
    mode = target_mode(clean["loss_setting"])
    if mode is None:
        raise InvalidInput(
            "config.loss_setting: 'lc_only' trains no attribution constraint, so corrections "
            "would change nothing; choose la_only, lc_la_supervised or lc_la_unsupervised"
        )
    run = create_run(session, dataset_id=source.dataset_id, name=name, config=clean, user=user)
    run.from_reviews_of = source.id
    session.flush()
    written: list[Path] = []
    try:
        for subject_id, rows in sorted(grouped.items()):
            subject = session.get(Subject, subject_id)
            assert subject is not None
            shape = tuple(int(v) for v in subject.shape[:3])
            mask = None
            if subject.mask_path:
                mask = np.asarray(load_image(storage.absolute(subject.mask_path)).dataobj)
                mask = mask.reshape(mask.shape[:3])
            base = base_target(subject.label, mask, mode, shape)
            corrections = [
                Correction(
                    labels=labels.reshape(shape),
                    review_id=review.id,
                    reviewer_id=review.reviewer_id,
                    reviewer=username,
                    attribution_id=attribution.id,
                    method=attribution.method,
                    created_at=review.created_at.isoformat(),
                )
                for review, attribution, username, labels in rows
            ]
            merged = merge_corrections(base, corrections, policy=policy)
            dest = target_path(storage, run.id, subject.id)
            with storage.temp_file(suffix=".nii.gz") as tmp:
                save_target(merged.target, np.asarray(subject.affine, float), tmp)
                storage.move_into_place(tmp, dest)
            written.append(dest)
            stats = {
                **merged.stats,
                "split": subject.split,
                "trained_on": subject.split == "train",
                "target_mode": mode,
            }
            session.add(
                CorrectedTarget(
                    run_id=run.id,
                    source_run_id=source.id,
                    subject_id=subject.id,
                    path=storage.relative(dest),
                    policy=policy,
                    provenance=merged.provenance,
                    stats=stats,
                    metrics={},
                )
            )
        session.flush()
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return run


def list_corrected_targets(session: Session, run: Run) -> CorrectedTargetsPublic:
    rows = session.execute(
        select(CorrectedTarget, Subject)
        .join(Subject, Subject.id == CorrectedTarget.subject_id)
        .where(CorrectedTarget.run_id == run.id)
        .order_by(CorrectedTarget.subject_id)
    ).all()
    data = []
    for row, subject in rows:
        item = CorrectedTargetPublic.model_validate(row)
        item.subject_key = subject.subject_key
        item.split = subject.split
        data.append(item)
    return CorrectedTargetsPublic(run_id=run.id, from_reviews_of=run.from_reviews_of, data=data)


def corrected_target_file(session: Session, storage: Storage, run: Run, subject_id: int) -> Path:
    row = session.scalar(
        select(CorrectedTarget).where(
            CorrectedTarget.run_id == run.id, CorrectedTarget.subject_id == subject_id
        )
    )
    if row is None:
        raise NotFound(f"run {run.id} has no corrected target for subject {subject_id}")
    path = storage.absolute(row.path)
    if not path.is_file():
        raise NotFound(f"run {run.id}: the target file of subject {subject_id} is missing")
    return path


def list_epoch_maps(session: Session, run: Run, subject_id: int | None = None) -> EpochMapsPublic:
    query = select(EpochMap).where(EpochMap.run_id == run.id)
    if subject_id is not None:
        query = query.where(EpochMap.subject_id == subject_id)
    rows = session.scalars(query.order_by(EpochMap.subject_id, EpochMap.epoch))
    watch = [int(v) for v in (run.config or {}).get("watch_subjects", [])]
    return EpochMapsPublic(
        run_id=run.id,
        watch_subjects=watch,
        data=[EpochMapPublic.model_validate(r) for r in rows],
    )


def epoch_map_file(
    session: Session, storage: Storage, run: Run, subject_id: int, epoch: int
) -> Path:
    row = session.scalar(
        select(EpochMap).where(
            EpochMap.run_id == run.id, EpochMap.subject_id == subject_id, EpochMap.epoch == epoch
        )
    )
    if row is None:
        raise NotFound(f"run {run.id} has no map of subject {subject_id} after epoch {epoch}")
    path = storage.absolute(row.path)
    if not path.is_file():
        raise NotFound(f"run {run.id}: the epoch map file is missing")
    return path
