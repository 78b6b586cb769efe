"""A segmentation run and a region attribution through the API and a real Celery worker."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import REPO
from tests.helpers import AFFINE, wait_for
from tests.worker.conftest import PASSWORD, make_dataset

TERMINAL = ("succeeded", "failed", "cancelled")


def _client() -> TestClient:
    from backend.main import create_app

    client = TestClient(create_app())
    token = client.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
    client.cookies.clear()
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def _nifti(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def test_segmentation_run_and_region_map_through_api_and_worker(
    stack: dict, tmp_path: Path
) -> None:
    _, dataset_id = make_dataset(tmp_path, ["train"] * 4 + ["val"] * 2 + ["test"] * 2)
    client = _client()
    grid = [16, 20, 16]
    # Bad input is refused before anything is stored.
    odd = client.post(
        "/api/v1/runs",
        json={
            "dataset_id": dataset_id,
            "name": "odd",
            "config": {"task": "segmentation", "grid": [18, 20, 16]},
        },
    )
    assert odd.status_code == 422 and "divisible by 4" in odd.text
    config = {"task": "segmentation", "epochs": 2, "batch_size": 2, "grid": grid, "device": "cpu"}
    created = client.post(
        "/api/v1/runs", json={"dataset_id": dataset_id, "name": "seg", "config": config}
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert (
        run["config"]["network"] == "unet" and run["config"]["early_stopping_metric"] == "val_dice"
    )

    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "worker", "--loglevel", "info"],
        env={**os.environ, **stack},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ended(job_id: int) -> dict | None:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["status"] in TERMINAL else None

        job = wait_for(lambda: ended(run["job_id"]), timeout=300, interval=1, what="seg run")
        assert job["status"] == "succeeded", job["error"]
        done = client.get(f"/api/v1/runs/{run['id']}").json()
        for name in ("test_dice", "test_hd95_voxels", "test_lesion_sensitivity", "test_loss"):
            assert name in done["metrics"], done["metrics"]
        assert 0.0 <= done["metrics"]["test_dice"] <= 1.0
        points = client.get(f"/api/v1/runs/{run['id']}/metrics").json()["data"]
        assert {p["epoch"] for p in points if p["name"] == "val_dice"} == {1, 2}

        test_subjects = [
            s
            for s in client.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
            if s["split"] == "test" and s["has_mask"]
        ]
        subject = test_subjects[0]
        # A box of 6 x 6 x 6 voxels around the centre of the 16 x 20 x 16 volume, in mm.
        centre = AFFINE @ np.array([8.0, 10.0, 8.0, 1.0])
        lo, hi = centre[:3] - 12.0, centre[:3] + 12.0
        box = {"kind": "box", "mm_min": lo.tolist(), "mm_max": hi.tolist()}
        bad = client.post(
            "/api/v1/attributions",
            json={"run_id": run["id"], "subject_id": subject["id"], "method": "saliency"},
        )
        assert bad.status_code == 422 and "integrated_gradients" in bad.text
        made = client.post(
            "/api/v1/attributions",
            json={
                "run_id": run["id"],
                "subject_id": subject["id"],
                "params": {"steps": 8},
                "region": box,
            },
        )
        assert made.status_code == 201, made.text
        attribution = made.json()
        assert attribution["region"]["kind"] == "box"
        job = wait_for(lambda: ended(attribution["job_id"]), timeout=180, interval=1, what="map")
        assert job["status"] == "succeeded", job["error"]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()

    row = client.get(f"/api/v1/attributions/{attribution['id']}").json()
    assert row["stats"]["region_voxels"] > 0 and row["convergence_delta"] is not None
    image = _nifti(client.get(f"/api/v1/attributions/{attribution['id']}/map.nii.gz").content)
    assert image.shape == (16, 20, 16) and np.allclose(image.affine, AFFINE)
    values = np.asarray(image.dataobj)
    assert np.abs(values).max() > 0
    prediction = client.get(f"/api/v1/attributions/{attribution['id']}/prediction.nii.gz")
    assert prediction.status_code == 200
    components = np.asarray(_nifti(prediction.content).dataobj)
    assert components.shape == (16, 20, 16) and components.min() >= 0
    assert components.max() == row["stats"]["n_components"]
    # A classification-only option on this map is refused with a clear message.
    refused = client.post(
        "/api/v1/attributions",
        json={"run_id": run["id"], "subject_id": subject["id"], "params": {"baseline": "blur"}},
    )
    assert refused.status_code == 422 and "zero baseline" in refused.text
