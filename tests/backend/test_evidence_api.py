"""Evidence checks through the API and a live worker (`attrivue serve`): start, wait, read."""

from __future__ import annotations

import math

from tests.conftest import Pipeline, wait_job


def test_checks_run_on_the_worker_and_are_stored(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        created = client.post(
            f"/api/v1/attributions/{pipeline.attribution_id}/evidence",
            json={
                "checks": ["model_randomisation", "faithfulness", "data_randomisation"],
                "data_epochs": 1,
                "curve_steps": 5,
            },
        )
        assert created.status_code == 201, created.text
        check = created.json()
        assert check["status"] == "queued" and check["verdict"] is None
        job = wait_job(client, check["job_id"], timeout=600)
        assert job["kind"] == "evidence"

        listed = client.get(f"/api/v1/attributions/{pipeline.attribution_id}/evidence").json()
        assert listed["count"] == 1
        stored = listed["data"][0]
        assert stored["id"] == check["id"] and stored["status"] == "succeeded"
        assert stored["verdict"] in ("passes", "fails") and stored["reasons"]
        results = stored["results"]

        model = results["model_randomisation"]
        assert len(model["steps"]) == len(model["layers"]) >= 2
        assert [s["layer"] for s in model["steps"]] == model["layers"]
        for step in model["steps"]:
            for key in ("spearman_signed", "spearman_abs", "ssim_signed", "ssim_abs"):
                assert step[key] is None or -1.0 <= step[key] <= 1.0

        faithful = results["faithfulness"]
        assert len(faithful["fractions"]) == len(faithful["deletion"]) == 6
        assert faithful["fractions"][0] == 0.0 and faithful["fractions"][-1] == 1.0
        # Deletion starts at the image, insertion ends at it: the same logit.
        assert math.isclose(faithful["deletion"][0], faithful["insertion"][-1], rel_tol=1e-4)
        assert math.isclose(
            faithful["auc_gap"], faithful["insertion_auc"] - faithful["deletion_auc"], abs_tol=1e-9
        )
        assert faithful["infidelity"] is None or faithful["infidelity"] >= 0
        removal = faithful["irof"]
        k = removal["segments"]
        assert k > 1 and len(removal["probabilities"]) == len(removal["fractions"]) == k + 1
        assert len(removal["random_probabilities"]) == k + 1
        p = removal["probabilities"]
        assert math.isclose(removal["auc"], sum(1 - q / p[0] for q in p[1:]) / k, rel_tol=1e-6)
        # Both orders start from the same image and end with every segment removed.
        assert math.isclose(p[0], removal["random_probabilities"][0], rel_tol=1e-6)
        assert math.isclose(p[-1], removal["random_probabilities"][-1], rel_tol=1e-5)
        if faithful["passes"]:
            assert removal["auc"] > removal["random_auc"]

        data = results["data_randomisation"]
        assert data["epochs"] == 1 and isinstance(data["passes"], bool)

        # The verdict is the conjunction of the checks', and the reasons name the failures.
        passes = [results[k]["passes"] for k in stored["checks"]]
        assert stored["verdict"] == ("passes" if all(passes) else "fails")
        for kind in stored["checks"]:
            if not results[kind]["passes"]:
                assert results[kind]["reason"] in stored["reasons"]

        by_run = client.get(f"/api/v1/runs/{pipeline.run_id}/evidence").json()
        assert check["id"] in [c["id"] for c in by_run["data"]]
        # The evidence job is listed with the project's other jobs.
        jobs = client.get("/api/v1/jobs").json()["data"]
        assert check["job_id"] in [j["id"] for j in jobs]


def test_bad_requests_name_the_problem_and_store_nothing(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        before = client.get(f"/api/v1/runs/{pipeline.run_id}/evidence").json()["count"]
        wrong = client.post(
            f"/api/v1/attributions/{pipeline.attribution_id}/evidence",
            json={"checks": ["astrology"]},
        )
        assert wrong.status_code == 422 and "checks" in wrong.text
        empty = client.post(
            f"/api/v1/attributions/{pipeline.attribution_id}/evidence", json={"checks": []}
        )
        assert empty.status_code == 422
        missing = client.post("/api/v1/attributions/999999/evidence", json={})
        assert missing.status_code == 404 and "attribution 999999" in missing.text
        after = client.get(f"/api/v1/runs/{pipeline.run_id}/evidence").json()["count"]
        assert after == before


def test_checks_for_every_map_of_a_split(pipeline: Pipeline) -> None:
    with pipeline.client() as client:
        subject = client.get(f"/api/v1/subjects/{pipeline.subject_id}").json()
        maps = client.get(
            "/api/v1/attributions",
            params={"run_id": pipeline.run_id, "split": subject["split"], "status": "succeeded"},
        ).json()["data"]
        created = client.post(
            f"/api/v1/runs/{pipeline.run_id}/evidence",
            json={"split": subject["split"], "checks": ["faithfulness"], "curve_steps": 2},
        )
        assert created.status_code == 201, created.text
        checks = created.json()["data"]
        assert sorted(c["attribution_id"] for c in checks) == sorted(m["id"] for m in maps)
        for check in checks:
            wait_job(client, check["job_id"], timeout=300)
        stored = {
            c["id"]: c
            for c in client.get(f"/api/v1/runs/{pipeline.run_id}/evidence").json()["data"]
        }
        for check in checks:
            done = stored[check["id"]]
            assert done["status"] == "succeeded" and done["checks"] == ["faithfulness"]
            assert done["results"]["model_randomisation"] is None  # not asked for, not run
            assert len(done["results"]["faithfulness"]["deletion"]) == 3

        other = "val" if subject["split"] != "val" else "test"
        on_other = client.get(
            "/api/v1/attributions", params={"run_id": pipeline.run_id, "split": other}
        ).json()
        assert on_other["count"] == 0  # the pipeline computes maps of one subject only
        empty = client.post(f"/api/v1/runs/{pipeline.run_id}/evidence", json={"split": other})
        assert empty.status_code == 422 and f"the {other} split" in empty.text
