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
        assert [a["id"] for a in listed["data"]] == [pipeline.attribution_id]
        none = client.get("/api/v1/attributions", params={"subject_id": 10**6}).json()
        assert none["count"] == 0
