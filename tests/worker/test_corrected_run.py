"""A run from reviews trains on the merged targets, and watch subjects' maps are stored per epoch.

The training task runs in this process (``run_training``, the Celery task's body) so that a
recorder wrapped around ``attribution_loss`` sees the target maps the loss received.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import AFFINE
from tests.worker.conftest import make_dataset

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
GRID = [16, 20, 16]  # the native grid of tests.helpers.brain_volume: no resampling


def _correction_bytes(labels: np.ndarray) -> bytes:
    image = nib.Nifti1Image(labels.astype(np.uint8), AFFINE)
    return gzip.compress(image.to_bytes())


def test_run_from_reviews_trains_on_merged_targets_and_stores_epoch_maps(
    stack: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.ml.attribution.captum_eval as captum_eval
    import worker.ml.training.classification as training
    from backend.core.db import session_scope
    from backend.models import (
        AttributionMap,
        CorrectedTarget,
        EpochMap,
        Job,
        Review,
        Run,
        Subject,
        User,
    )
    from backend.services.corrected_targets import launch_from_reviews
    from backend.services.reviews import save_correction
    from backend.services.runs import create_run
    from backend.storage import get_storage
    from worker.tasks.train import run_training

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    storage = get_storage()
    # brain "nonzero": no crop, so the target on the working grid can be built by hand below.
    base = {
        "epochs": 1,
        "batch_size": 2,
        "grid": GRID,
        "device": "cpu",
        "seed": 0,
        "brain": "nonzero",
    }
    with session_scope() as session:
        user = session.get(User, user_id)
        earlier = create_run(session, dataset_id=dataset_id, name="earlier", config=base, user=user)
        session.commit()
        earlier_id, earlier_job = earlier.id, earlier.job_id
    run_training(earlier_job)

    # Subject index 1 (train, lesion): a reviewer marks a missed lesion in a corner and
    # spurious relevance on the whole lesion mask.
    with session_scope() as session:
        user = session.get(User, user_id)
        earlier = session.get(Run, earlier_id)
        subject = next(s for s in earlier_subjects(session, earlier) if s.subject_key == "sub-1")
        mask = np.asarray(nib.load(storage.absolute(subject.mask_path)).dataobj) > 0
        labels = np.zeros(mask.shape, np.uint8)
        labels[1:4, 2:5, 2:5] = 1
        labels[mask] = 2
        attribution = AttributionMap(
            run_id=earlier_id, subject_id=subject.id, method="saliency", status="succeeded"
        )
        session.add(attribution)
        session.flush()
        review = Review(attribution_id=attribution.id, reviewer_id=user.id, rating=2, trust=False)
        session.add(review)
        session.flush()
        with storage.temp_file() as upload:
            upload.write_bytes(_correction_bytes(labels))
            save_correction(session, storage, review=review, user=user, upload=upload)
        corrected = launch_from_reviews(
            session,
            storage,
            source=earlier,
            name="corrected",
            config={"loss_setting": "lc_la_supervised", "epochs": 2},
            policy="abstain",
            user=user,
        )
        session.commit()
        run_id, job_id, subject_id = corrected.id, corrected.job_id, subject.id
        assert corrected.config["watch_subjects"] == [subject_id]

    seen: list[np.ndarray] = []
    original = training.attribution_loss

    def recording(attributions, targets, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(t[0].detach().cpu().numpy() for t in targets)
        return original(attributions, targets, **kwargs)

    monkeypatch.setattr(training, "attribution_loss", recording)
    brains: list[Path | None] = []
    attribute = captum_eval.attribute_subject

    def attribute_recording(*args, brain_path=None, **kwargs):  # type: ignore[no-untyped-def]
        brains.append(brain_path)
        return attribute(*args, brain_path=brain_path, **kwargs)

    monkeypatch.setattr(captum_eval, "attribute_subject", attribute_recording)
    run_training(job_id)

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "succeeded", job.error
        target_row = session.query(CorrectedTarget).filter_by(run_id=run_id).one()
        assert target_row.provenance[0]["review_id"] == review.id
        assert target_row.provenance[0]["reviewer"] == "r"
        assert target_row.provenance[0]["attribution_id"] == attribution.id
        assert target_row.stats["lesion_voxels"] == 27
        assert target_row.stats["healthy_voxels"] == int(mask.sum())
        assert set(target_row.metrics) == {"before", "after", "attribution_ids"}
        assert target_row.metrics["before"]["run_id"] == earlier_id
        assert 0.0 <= target_row.metrics["after"]["lesion_mass"] <= 1.0
        # The corrected run's map of the subject by the reviewed map's method, for the
        # compare viewer: a succeeded attribution of the corrected run with its file.
        pair = target_row.metrics["attribution_ids"]
        assert pair["before"] == attribution.id
        side = session.get(AttributionMap, pair["after"])
        assert side.run_id == run_id and side.subject_id == subject_id
        assert side.method == "saliency" and side.status == "succeeded"
        # ... computed with the subject's stored brain mask, as the reviewed map was.
        brain = session.get(Subject, subject_id).brain_path
        assert brain is not None and brains == [storage.absolute(brain)]
        assert storage.absolute(side.path).is_file()
        maps = session.query(EpochMap).filter_by(run_id=run_id).order_by(EpochMap.epoch).all()
        assert [(m.subject_id, m.epoch) for m in maps] == [(subject_id, 1), (subject_id, 2)]
        paths = [storage.absolute(m.path) for m in maps]
        scales = [m.scale for m in maps]

    # The expected target on the working grid, built by hand: the lesion mask, with the
    # corrections applied (missed -> 1, spurious -> 0), flipped to RAS (AFFINE is LAS).
    expected = mask.astype(np.float32)
    expected[labels == 1] = 1.0
    expected[labels == 2] = 0.0
    expected = expected[::-1]
    matches = [t for t in seen if np.array_equal(t, expected, equal_nan=True)]
    assert len(matches) == 2, "the corrected subject's target reached the loss once per epoch"
    # Without the corrections its target would have been the flipped mask: never seen.
    plain = mask.astype(np.float32)[::-1]
    assert not any(np.array_equal(t, plain, equal_nan=True) for t in seen)

    # Epoch maps: int16 on the working grid with the scale as slope, and they differ.
    images = [nib.load(p) for p in paths]
    assert all(i.header.get_data_dtype() == np.int16 and i.shape == tuple(GRID) for i in images)
    for image, scale in zip(images, scales, strict=True):
        assert float(image.dataobj.slope) == pytest.approx(scale)
        assert np.abs(image.dataobj.get_unscaled()).max() == 32767  # the peak maps to 32767
    assert not np.array_equal(images[0].get_fdata(), images[1].get_fdata())


def earlier_subjects(session, run):  # type: ignore[no-untyped-def]
    from backend.models import Subject

    return session.query(Subject).filter(Subject.dataset_id == run.dataset_id).all()
