"""Shortcut reports and cohort maps through the API and a real Celery worker (the live server).

On the session's trained run (tests/conftest.py ``pipeline``) with saliency maps of the train
split: a report that erases the whole field of view must leave every subject the same image,
so the same logit (AUROC exactly 0.5), while its "before" numbers are the run's stored
predictions; a report on each subject's top-relevance region reads the maps; the cohort map's
t-map equals scipy's one-sample t over the downloaded maps. Bad requests get a 4xx naming the
problem and store nothing.
"""

from __future__ import annotations

import gzip

import httpx
import nibabel as nib
import numpy as np
import pytest
from scipy.stats import ttest_1samp

from tests.conftest import Pipeline, wait_job

SPLIT = "train"
WHOLE_FIELD = [[-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]]


@pytest.fixture(scope="module")
def maps(pipeline: Pipeline) -> list[dict]:
    with pipeline.client() as client:
        batch = client.post(
            "/api/v1/attributions/batch",
            json={"run_id": pipeline.run_id, "split": SPLIT, "method": "saliency"},
        )
        assert batch.status_code == 201, batch.text
        for row in batch.json()["data"]:
            wait_job(client, row["job_id"], timeout=300)
        return batch.json()["data"]


def _finished(client: httpx.Client, url: str, timeout: float = 300) -> dict:
    from tests.helpers import wait_for

    def done() -> dict | None:
        body = client.get(url).json()
        return body if body["job"]["status"] in ("succeeded", "failed", "cancelled") else None

    body = wait_for(done, timeout=timeout, interval=1.0, what=url)
    assert body["job"]["status"] == "succeeded", body["job"]["error"]
    return body


def _nifti(response: httpx.Response) -> nib.Nifti1Image:
    assert response.status_code == 200, response.text
    return nib.Nifti1Image.from_bytes(gzip.decompress(response.content))


def test_report_erasing_everything_leaves_chance(pipeline: Pipeline, maps: list[dict]) -> None:
    run = pipeline.run_id
    with pipeline.client() as client:
        created = client.post(
            f"/api/v1/runs/{run}/shortcut-reports",
            json={"split": SPLIT, "region": {"kind": "box", "box_mm": WHOLE_FIELD}, "fill": "mean"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["job"]["kind"] == "shortcut_report"
        report = _finished(client, f"/api/v1/runs/{run}/shortcut-reports/{created.json()['id']}")
        stored = client.get(f"/api/v1/runs/{run}/site-metrics").json()["data"]
        predictions = client.get(f"/api/v1/runs/{run}/predictions", params={"split": SPLIT}).json()
        listed = client.get(f"/api/v1/runs/{run}/shortcut-reports").json()

    result = report["result"]
    cf = result["counterfactual"]
    assert cf["n"] == predictions["count"] == len(maps)
    # Every image is the same constant after erasing: one logit for all, AUROC 0.5 exactly.
    assert cf["after"]["auroc"] == 0.5
    # Before: the logits the run stored for these subjects (same weights, same preprocessing).
    split_all = next(m for m in stored if m["split"] == SPLIT and m["site"] is None)
    assert cf["before"]["auroc"] == pytest.approx(split_all["auroc"], abs=1e-6)
    assert cf["before"]["accuracy"] == pytest.approx(split_all["accuracy"])
    sites = {s["site"]: s for s in result["sites"]}
    assert sites[None]["n"] == split_all["n"] and sites[None]["auroc"] == pytest.approx(
        split_all["auroc"]
    )
    assert result["outside_brain"]["n_maps"] == len(maps)
    assert 0.0 <= result["outside_brain"]["mean_abs_share"] <= 1.0
    # The flag follows its rule from the numbers it reports.
    kinds = {f["kind"] for f in report["flags"]}
    before, after = cf["before"], cf["after"]
    expected = (before["auroc"] >= 0.8 and after["auroc"] <= 0.6) or (
        before["accuracy"] >= 0.8 and after["accuracy"] <= 0.6
    )
    assert ("region" in kinds) == expected
    assert listed["count"] >= 1 and listed["data"][0]["id"] == report["id"]
    with pipeline.client() as client:
        job = client.get(f"/api/v1/jobs/{report['job']['id']}")
    assert job.status_code == 200 and job.json()["kind"] == "shortcut_report"
    assert job.json()["status"] == "succeeded" and job.json()["progress"] == 1.0


def test_report_on_the_top_relevance_region(pipeline: Pipeline, maps: list[dict]) -> None:
    run = pipeline.run_id
    with pipeline.client() as client:
        created = client.post(
            f"/api/v1/runs/{run}/shortcut-reports",
            json={
                "split": SPLIT,
                "region": {"kind": "top_relevance", "fraction": 0.02},
                "fill": "blur",
                "method": "saliency",
            },
        )
        assert created.status_code == 201, created.text
        report = _finished(client, f"/api/v1/runs/{run}/shortcut-reports/{created.json()['id']}")
    cf = report["result"]["counterfactual"]
    assert cf["n"] == len(maps) and cf["n_without_region"] == 0
    assert "top 2% |relevance| region" in cf["region"] and cf["fill"] == "blur"


def test_cohort_t_map_matches_scipy(pipeline: Pipeline, maps: list[dict]) -> None:
    run = pipeline.run_id
    with pipeline.client() as client:
        created = client.post(
            f"/api/v1/runs/{run}/cohort-maps",
            json={"split": SPLIT, "label": 1, "method": "saliency"},
        )
        assert created.status_code == 201, created.text
        cohort = _finished(client, f"/api/v1/runs/{run}/cohort-maps/{created.json()['id']}")
        base = f"/api/v1/runs/{run}/cohort-maps/{cohort['id']}"
        mean = _nifti(client.get(f"{base}/mean.nii.gz"))
        t = _nifti(client.get(f"{base}/t.nii.gz"))
        ids = cohort["stats"]["attribution_ids"]
        originals = [
            _nifti(client.get(f"/api/v1/attributions/{i}/map.nii.gz")).get_fdata() for i in ids
        ]
        members = [client.get(f"/api/v1/attributions/{i}").json() for i in ids]
    subjects = {m["subject_id"] for m in maps}
    assert cohort["n_subjects"] == len(ids) >= 2
    assert all(m["subject_id"] in subjects and m["method"] == "saliency" for m in members)
    assert cohort["reference_subject_id"] == members[0]["subject_id"]
    stack = np.stack(originals)
    expected = ttest_1samp(stack, 0.0, axis=0).statistic
    expected[~np.isfinite(expected)] = 0.0
    np.testing.assert_allclose(t.get_fdata(), expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(mean.get_fdata(), stack.mean(axis=0), rtol=1e-5, atol=1e-9)
    assert cohort["stats"]["t"]["max"] == pytest.approx(float(t.get_fdata().max()), rel=1e-5)


def test_bad_requests_are_refused_and_store_nothing(pipeline: Pipeline, maps: list[dict]) -> None:
    run = pipeline.run_id
    with pipeline.client() as client:
        before = client.get(f"/api/v1/runs/{run}/shortcut-reports").json()["count"]
        flat = client.post(
            f"/api/v1/runs/{run}/shortcut-reports",
            json={"region": {"kind": "box", "box_mm": [[0, 0, 0], [0, 10, 10]]}},
        )
        assert flat.status_code == 422 and "corners must differ" in flat.text
        no_maps = client.post(
            f"/api/v1/runs/{run}/shortcut-reports",
            json={"split": SPLIT, "region": {"kind": "top_relevance"}, "method": "occlusion"},
        )
        assert no_maps.status_code == 409 and "occlusion maps" in no_maps.json()["detail"]
        assert client.get(f"/api/v1/runs/{run}/shortcut-reports").json()["count"] == before
        cohorts = client.get(f"/api/v1/runs/{run}/cohort-maps").json()["count"]
        few = client.post(
            f"/api/v1/runs/{run}/cohort-maps", json={"split": SPLIT, "method": "deeplift"}
        )
        assert few.status_code == 409 and "at least two subjects" in few.json()["detail"]
        assert client.get(f"/api/v1/runs/{run}/cohort-maps").json()["count"] == cohorts
        missing = client.get(f"/api/v1/runs/{run}/cohort-maps/999999/t.nii.gz")
        assert missing.status_code == 404
        unknown = client.get("/api/v1/runs/999999/shortcut-reports")
        assert unknown.status_code == 404
        anonymous = httpx.get(f"{pipeline.base_url}/api/v1/runs/{run}/shortcut-reports")
        assert anonymous.status_code == 401


def test_outsiders_see_nothing(pipeline: Pipeline, maps: list[dict]) -> None:
    run = pipeline.run_id
    with pipeline.client() as admin:
        made = admin.post(
            "/api/v1/users",
            json={"username": "outsider", "password": "outsider-pass", "role": "researcher"},
        )
        assert made.status_code in (201, 409), made.text
        # A report of its own: the test does not depend on which tests ran before it.
        created = admin.post(
            f"/api/v1/runs/{run}/shortcut-reports",
            json={"split": SPLIT, "region": {"kind": "box", "box_mm": WHOLE_FIELD}, "fill": "mean"},
        )
        assert created.status_code == 201, created.text
        _finished(admin, f"/api/v1/runs/{run}/shortcut-reports/{created.json()['id']}")
        reports = admin.get(f"/api/v1/runs/{run}/shortcut-reports").json()["data"]
        assert created.json()["id"] in [r["id"] for r in reports]
    token = httpx.post(
        f"{pipeline.base_url}/api/v1/auth/login",
        json={"username": "outsider", "password": "outsider-pass"},
    ).json()["access_token"]
    with httpx.Client(
        base_url=pipeline.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as outsider:
        for url in (
            f"/api/v1/runs/{run}/shortcut-reports",
            f"/api/v1/runs/{run}/cohort-maps",
            f"/api/v1/runs/{run}/shortcut-reports/{reports[0]['id']}",
            f"/api/v1/jobs/{reports[0]['job']['id']}",
        ):
            assert outsider.get(url).status_code == 404, url
        refused = outsider.post(
            f"/api/v1/runs/{run}/cohort-maps", json={"split": SPLIT, "method": "saliency"}
        )
        assert refused.status_code == 404
