"""Issue 18 items 3 and 4 through the API and a real Celery worker: a SmoothGrad map is stored
with its standard-deviation and sign-agreement volumes and the API serves them (with the map's
access check); a deterministic map has none and the API says why; Integrated Gradients from the
run's healthy mean and Expected Gradients over healthy references run and record their
baseline; a dataset without healthy training subjects is refused before anything is queued."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import REPO
from tests.helpers import wait_for
from tests.worker.conftest import PASSWORD, make_dataset

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
GRID = [16, 20, 16]


def _nifti(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def test_uncertainty_volumes_and_healthy_baselines_through_a_worker(
    stack: dict, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from backend.core.db import session_scope
    from backend.main import create_app
    from backend.models import AttributionMap, Subject, User
    from backend.services.runs import create_run
    from backend.services.users import create_user
    from backend.storage import get_storage
    from worker.tasks.attribute import HEALTHY_MEAN_PREFIX
    from worker.tasks.train import run_training

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    config = {"epochs": 1, "batch_size": 2, "grid": GRID, "device": "cpu", "seed": 0}
    with session_scope() as session:
        user = session.get(User, user_id)
        run = create_run(session, dataset_id=dataset_id, name="r", config=config, user=user)
        create_user(session, username="outsider", password=PASSWORD, role="researcher")
        session.commit()
        run_id, train_job = run.id, run.job_id
        subject_id = (
            session.query(Subject).filter_by(dataset_id=dataset_id, split="test").first().id
        )
    run_training(train_job)

    requests = {
        "smoothgrad": ("smoothgrad", {"n_samples": 6}),
        "saliency": ("saliency", {}),
        "ig_healthy": ("integrated_gradients", {"baseline": "healthy_mean", "steps": 8}),
        "eg_healthy": ("gradient_shap", {"references": "healthy", "n_samples": 4}),
    }
    ids: dict[str, int] = {}
    with TestClient(create_app()) as client:
        login = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        for name, (method, params) in requests.items():
            reply = client.post(
                "/api/v1/attributions",
                json={
                    "run_id": run_id,
                    "subject_id": subject_id,
                    "method": method,
                    "params": params,
                },
            )
            assert reply.status_code == 201, reply.text
            ids[name] = reply.json()["id"]

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def finished() -> dict[str, str] | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            with session_scope() as session:
                states = {n: session.get(AttributionMap, i).status for n, i in ids.items()}
            done = all(s in ("succeeded", "failed", "cancelled") for s in states.values())
            return states if done else None

        states = wait_for(finished, timeout=300, interval=1, what="the four maps")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert set(states.values()) == {"succeeded"}, (
        states,
        (tmp_path / "worker.log").read_text()[-3000:],
    )
    cached = list(get_storage().checkpoint_dir(run_id).glob(f"{HEALTHY_MEAN_PREFIX}-*.npy"))
    assert len(cached) == 1  # computed once, for the IG map

    with TestClient(create_app()) as client:
        login = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        base = f"/api/v1/attributions/{ids['smoothgrad']}"
        full = _nifti(client.get(f"{base}/map.nii.gz").content)
        sd_reply = client.get(f"{base}/sd.nii.gz")
        agreement_reply = client.get(f"{base}/agreement.nii.gz")
        assert sd_reply.status_code == 200 and agreement_reply.status_code == 200
        sd, agreement = _nifti(sd_reply.content), _nifti(agreement_reply.content)
        # Beside the map: the same grid and affine.
        assert sd.shape == full.shape == agreement.shape
        np.testing.assert_allclose(sd.affine, full.affine, atol=1e-5)
        s, g = np.asarray(sd.dataobj), np.asarray(agreement.dataobj)
        assert s.min() >= 0 and s.max() > 0
        assert 0 <= g.min() and g.max() <= 1 and g.min() < 1
        stats = client.get(base).json()["stats"]
        assert stats["uncertainty_mean_sd"] > 0
        assert 0 <= stats["uncertainty_low_agreement_share"] <= 1

        # A deterministic map has no volumes, and the answer says so.
        refused = client.get(f"/api/v1/attributions/{ids['saliency']}/sd.nii.gz")
        assert refused.status_code == 409
        assert "deterministic" in refused.json()["detail"]

        # EG over healthy references has volumes too; both healthy maps record their choice.
        eg = client.get(f"/api/v1/attributions/{ids['eg_healthy']}").json()
        assert eg["params"]["references"] == "healthy"
        assert eg["stats"]["reference_subjects"] == 2.0  # the two healthy training subjects
        assert (
            client.get(f"/api/v1/attributions/{ids['eg_healthy']}/agreement.nii.gz").status_code
            == 200
        )
        ig = client.get(f"/api/v1/attributions/{ids['ig_healthy']}").json()
        assert ig["params"]["baseline"] == "healthy_mean"
        assert ig["stats"]["baseline_subjects"] == 2.0

        # Someone outside the project gets what they get for the map itself: nothing.
        other = client.post(
            "/api/v1/auth/login", json={"username": "outsider", "password": PASSWORD}
        )
        client.headers["Authorization"] = f"Bearer {other.json()['access_token']}"
        map_answer = client.get(f"{base}/map.nii.gz").status_code
        assert map_answer in (403, 404)
        assert client.get(f"{base}/sd.nii.gz").status_code == map_answer
        assert client.get(f"{base}/agreement.nii.gz").status_code == map_answer


def test_healthy_baseline_is_refused_without_healthy_training_subjects(
    stack: dict, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from backend.core.db import session_scope
    from backend.main import create_app
    from backend.models import AttributionMap, Run, Subject, User
    from backend.services.runs import create_run

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    with session_scope() as session:
        user = session.get(User, user_id)
        # Every healthy subject leaves the train split.
        for subject in session.query(Subject).filter_by(dataset_id=dataset_id, label=0):
            subject.split = "val"
        run = create_run(
            session, dataset_id=dataset_id, name="r", config={"epochs": 1, "grid": GRID}, user=user
        )
        session.flush()
        session.get(Run, run.id).status = "succeeded"
        session.commit()
        run_id = run.id
        subject_id = session.query(Subject).filter_by(dataset_id=dataset_id).first().id
    with TestClient(create_app()) as client:
        login = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        for method, params in (
            ("integrated_gradients", {"baseline": "healthy_mean"}),
            ("gradient_shap", {"references": "healthy"}),
        ):
            reply = client.post(
                "/api/v1/attributions",
                json={
                    "run_id": run_id,
                    "subject_id": subject_id,
                    "method": method,
                    "params": params,
                },
            )
            assert reply.status_code == 422, reply.text
            assert "healthy training subjects" in reply.json()["detail"]
    with session_scope() as session:
        assert session.query(AttributionMap).count() == 0
