"""The cohort-map job on both database flavours (SQLite, PostgreSQL): it finds each subject's
newest whole-image map of the method (a segmentation-region map or another method's is left
out), stores the mean and the t-map, and the t-map is scipy's one-sample t; with fewer than
two maps the request is refused and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import ttest_1samp

from tests.worker.conftest import make_dataset


def _map(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)


def test_cohort_job_on_each_database(stack: dict, tmp_path: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import AttributionMap, CohortMap, Job, Run, Subject, User
    from backend.services.errors import Conflict
    from backend.services.shortcuts import create_cohort_map
    from backend.storage import get_storage
    from worker.tasks.shortcut import run_cohort_map

    user_id, dataset_id = make_dataset(tmp_path)
    storage = get_storage()
    rng = np.random.default_rng(3)
    expected: list[np.ndarray] = []
    with session_scope() as session:
        run = Run(name="r", dataset_id=dataset_id, config={}, status="succeeded")
        session.add(run)
        session.flush()
        run_id = run.id
        members = (
            session.query(Subject)
            .filter(Subject.dataset_id == dataset_id, Subject.split == "train", Subject.label == 1)
            .order_by(Subject.subject_key)
            .all()
        )
        assert len(members) == 4
        for subject in members:
            affine = np.asarray(subject.affine)
            for kind in ("old", "new", "region", "other-method"):
                data = 0.5 + rng.normal(0, 1, tuple(subject.shape))
                row = AttributionMap(
                    run_id=run_id,
                    subject_id=subject.id,
                    method="deeplift" if kind == "other-method" else "saliency",
                    params={},
                    status="succeeded",
                    stats={},
                    region={"kind": "component", "index": 1} if kind == "region" else None,
                )
                session.add(row)
                session.flush()
                path = storage.map_path(run_id, row.id)
                _map(path, data, affine)
                row.path = storage.relative(path)
                if kind == "new":
                    expected.append(data)
        first_key_subject = members[0].id
        with pytest.raises(Conflict, match="at least two subjects"):
            create_cohort_map(
                session,
                run,
                split="train",
                label=0,
                method="saliency",
                user=session.get(User, user_id),  # type: ignore[arg-type]
            )
        cohort = create_cohort_map(
            session,
            run,
            split="train",
            label=1,
            method="saliency",
            user=session.get(User, user_id),  # type: ignore[arg-type]
        )
        cohort_id, job_id = cohort.id, cohort.job_id
    assert job_id is not None
    run_cohort_map(job_id)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded", job and job.error
        stored = session.get(CohortMap, cohort_id)
        assert stored is not None
        assert session.query(CohortMap).count() == 1  # the refused request stored nothing
        assert stored.n_subjects == 4 and stored.reference_subject_id == first_key_subject
        assert stored.mean_path and stored.t_path
        t = np.asarray(nib.load(storage.absolute(stored.t_path)).dataobj)
        mean = np.asarray(nib.load(storage.absolute(stored.mean_path)).dataobj)
        assert len(stored.stats["attribution_ids"]) == 4
    stack_ = np.stack(expected)
    np.testing.assert_allclose(t, ttest_1samp(stack_, 0.0, axis=0).statistic, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(mean, stack_.mean(axis=0), atol=1e-5)
