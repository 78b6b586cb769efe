"""The thin path through a live server and worker: upload, train, attribute, download."""

from __future__ import annotations

import gzip
import math

import nibabel as nib
import numpy as np

from tests.conftest import Pipeline


def test_upload_train_attribute_download(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        run = client.get(f"/api/v1/runs/{pipeline.run_id}").json()
        assert run["status"] == "succeeded"
        assert 0.0 <= run["metrics"]["test_auroc"] <= 1.0
        series = client.get(f"/api/v1/runs/{pipeline.run_id}/metrics").json()["data"]
        assert {p["epoch"] for p in series if p["name"] == "loss_c"} == {1, 2}

        record = client.get(f"/api/v1/attributions/{pipeline.attribution_id}").json()
        assert record["status"] == "succeeded" and record["method"] == "integrated_gradients"
        assert record["params"]["steps"] == 16
        # Completeness: the gap between sum(A) and F(x) - F(x') is stored with the map.
        assert record["convergence_delta"] is not None and math.isfinite(
            record["convergence_delta"]
        )
        assert record["stats"]["max"] >= record["stats"]["min"]

        response = client.get(f"/api/v1/attributions/{pipeline.attribution_id}/map.nii.gz")
        assert response.status_code == 200
        attribution = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
        subject = nib.load(pipeline.source_dir / pipeline.subject_key / "image.nii.gz")
        assert attribution.shape == subject.shape
        np.testing.assert_allclose(attribution.affine, subject.affine, atol=1e-5)
        data = attribution.get_fdata(dtype=np.float32)
        assert data.dtype == np.float32 and np.isfinite(data).all()
        assert (data > 0).any() and (data < 0).any(), "the map keeps its sign"
        np.testing.assert_allclose(data.max(), record["stats"]["max"], rtol=1e-4)


def test_listing_filters_by_subject(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        listed = client.get(
            "/api/v1/attributions", params={"subject_id": pipeline.subject_id}
        ).json()
        assert pipeline.attribution_id in [a["id"] for a in listed["data"]]
        assert {a["subject_id"] for a in listed["data"]} == {pipeline.subject_id}
        none = client.get("/api/v1/attributions", params={"subject_id": 10**6}).json()
        assert none["count"] == 0


def test_another_method_without_a_delta(pipeline: Pipeline) -> None:
    from tests.conftest import wait_job

    with pipeline.client() as client:
        created = client.post(
            "/api/v1/attributions",
            json={
                "run_id": pipeline.run_id,
                "subject_id": pipeline.subject_id,
                "method": "saliency",
            },
        )
        assert created.status_code == 201, created.text
        wait_job(client, created.json()["job_id"], timeout=120)
        record = client.get(f"/api/v1/attributions/{created.json()['id']}").json()
        assert record["method"] == "saliency" and record["convergence_delta"] is None
        response = client.get(f"/api/v1/attributions/{record['id']}/map.nii.gz")
        data = nib.Nifti1Image.from_bytes(gzip.decompress(response.content)).get_fdata()
        assert (data < 0).any() and (data > 0).any(), "saliency stays signed (abs=False)"
