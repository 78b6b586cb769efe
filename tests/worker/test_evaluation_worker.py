"""The training task gives training each subject's brain mask and site, and stores what an
evaluation reads back: best epoch, the metric that chose it, per-subject predictions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import PASSWORD, make_dataset

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2


def _set_sites(dataset_id: int) -> dict[int, str]:
    """Site A for the first half of each split's subjects, B for the rest; by subject id."""
    from backend.core.db import session_scope
    from backend.models import Subject

    sites = {}
    with session_scope() as session:
        subjects = session.query(Subject).filter(Subject.dataset_id == dataset_id).all()
        for subject in subjects:
            subject.site = "A" if int(subject.subject_key.split("-")[1]) % 4 < 2 else "B"
            sites[subject.id] = subject.site
    return sites


def test_samples_carry_brain_masks_and_sites(stack: dict, tmp_path: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import Subject, User
    from backend.services.runs import create_run
    from backend.storage import get_storage
    from worker.tasks.train import run_samples

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    sites = _set_sites(dataset_id)
    with session_scope() as session:
        old = session.query(Subject).filter(Subject.dataset_id == dataset_id).first()
        get_storage().absolute(old.brain_path).unlink()  # as imported before brain masks
        old.brain_path, old.brain_source = None, None
        old_id = old.id
        run = create_run(
            session, dataset_id=dataset_id, name="s", config={}, user=session.get(User, user_id)
        )
        run_id = run.id

    _, samples = run_samples(run_id)
    assert len(samples) == len(SPLITS)
    for sample in samples:
        assert sample.site == sites[sample.subject_id]
        assert sample.brain_mask is not None and sample.brain_mask.is_file()
        brain = np.asarray(nib.load(sample.brain_mask).dataobj)
        image = nib.load(sample.image)
        assert brain.shape == image.shape and brain.dtype == np.uint8
        assert 0.1 < brain.mean() < 0.7  # the ellipsoid, not the noisy grid
    with session_scope() as session:
        assert session.get(Subject, old_id).brain_source == "computed"  # kept for next time


def test_a_finished_run_serves_its_best_epoch_predictions_and_site_metrics(
    stack: dict, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from backend.core.config import get_settings
    from backend.core.db import session_scope
    from backend.main import create_app
    from backend.models import Job, RunPrediction, User
    from backend.services.jobs import dispatch
    from backend.services.runs import create_run

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    _set_sites(dataset_id)
    config = {
        "epochs": 2,
        "batch_size": 2,
        "grid": [16, 20, 16],
        "device": "cpu",
        "val_attribution": False,
        "early_stopping_metric": "val_lesion_mass",
    }
    with session_scope() as session:
        user = session.get(User, user_id)
        run = create_run(
            session,
            dataset_id=dataset_id,
            name="e",
            config=config,
            user=user,
            preset="classification",
        )
        session.commit()
        dispatch(session, run.job, get_settings())
        run_id, job_id = run.id, run.job_id

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def finished() -> str | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            with session_scope() as session:
                status = session.get(Job, job_id).status
            return status if status in ("succeeded", "failed", "cancelled") else None

        status = wait_for(finished, timeout=300, interval=1, what=f"train job {job_id}")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    with session_scope() as session:
        assert status == "succeeded", session.get(Job, job_id).error
        stored = session.query(RunPrediction).filter(RunPrediction.run_id == run_id).count()
    assert stored == len(SPLITS)

    with TestClient(create_app()) as client:
        token = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        run = client.get(f"/api/v1/runs/{run_id}").json()
        predictions = client.get(f"/api/v1/runs/{run_id}/predictions").json()
        sites = client.get(f"/api/v1/runs/{run_id}/site-metrics").json()
    assert run["preset"] == "classification" and run["config"]["epochs"] == 2
    assert run["config"]["loss_setting"] == "lc_only"
    assert run["best_epoch"] in (1, 2)
    # No lesion-mass metric without val_attribution: the selection fell back, and says so.
    assert run["best_metric"] in ("val_auroc", "val_loss")
    assert predictions["count"] == len(SPLITS) and predictions["best_epoch"] == run["best_epoch"]
    assert {p["split"] for p in predictions["data"]} == {"train", "val", "test"}
    assert {p["site"] for p in predictions["data"]} == {"A", "B"}
    for p in predictions["data"]:
        assert p["probability"] == pytest.approx(1 / (1 + np.exp(-p["logit"])), rel=1e-5)
    test_all = next(m for m in sites["data"] if m["split"] == "test" and m["site"] is None)
    assert test_all["n"] == 2
    accuracy = run["metrics"]["test_accuracy"]
    assert test_all["accuracy"] == pytest.approx(accuracy)
