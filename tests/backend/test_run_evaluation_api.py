"""What an evaluation reads from the API (issue 15): presets, the best epoch and the metric
that chose it, per-subject predictions (JSON and CSV) and metrics per site."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import brain_volume, write_nifti


@pytest.fixture
def dataset(api: TestClient, tmp_path: Path) -> dict[str, int]:
    """A dataset of six subjects on two sites; returns its id and the subjects' ids by key."""
    resp = api.post("/api/v1/datasets", json={"name": "evaluation"})
    assert resp.status_code == 201, resp.text
    dataset_id = resp.json()["id"]
    ids = {"dataset": dataset_id}
    for i in range(6):
        image, _ = brain_volume(seed=i)
        path = write_nifti(tmp_path / f"{i}.nii.gz", image)
        data = {
            "subject_key": f"s{i}",
            "label": str(i % 2),
            "split": "test" if i < 4 else "val",
            "site": "A" if i < 2 else "B",
        }
        up = api.post(
            f"/api/v1/datasets/{dataset_id}/subjects",
            data=data,
            files={"image": ("i.nii.gz", path.read_bytes())},
        )
        assert up.status_code == 201, up.text
        ids[f"s{i}"] = up.json()["id"]
    return ids


# --------------------------------------------------------------------------- presets


def test_presets_list_every_value_with_a_title_and_a_description(api: TestClient) -> None:
    from attrivue_core.configs import RunConfig

    resp = api.get("/api/v1/presets")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    names = [p["name"] for p in body["data"]]
    assert names == ["classification", "constrained_supervised", "constrained_weakly_supervised"]
    assert body["count"] == 3
    settings = {p["name"]: p["config"]["loss_setting"] for p in body["data"]}
    assert settings == {
        "classification": "lc_only",
        "constrained_supervised": "lc_la_supervised",
        "constrained_weakly_supervised": "lc_la_unsupervised",
    }
    for preset in body["data"]:
        assert preset["title"] and len(preset["description"]) > 20
        RunConfig.model_validate(preset["config"])  # every preset is a valid config
    one = api.get("/api/v1/presets/constrained_supervised").json()
    assert one["config"]["train_attribution"] == ["integrated_gradients"]
    missing = api.get("/api/v1/presets/fancy")
    assert missing.status_code == 404 and "unknown preset 'fancy'" in missing.json()["detail"]


def test_a_run_from_a_preset_takes_its_values_then_the_users(
    api: TestClient, dataset: dict[str, int]
) -> None:
    from attrivue_core.presets import get_preset

    preset = get_preset("constrained_supervised")["config"]
    resp = api.post(
        "/api/v1/runs",
        json={
            "dataset_id": dataset["dataset"],
            "name": "from a preset",
            "preset": "constrained_supervised",
            "config": {"epochs": 2, "lambda_a": {"value": 1.5}},
        },
    )
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert run["preset"] == "constrained_supervised"
    config = run["config"]
    assert config["epochs"] == 2  # the user's
    assert config["lambda_a"]["value"] == 1.5 and config["lambda_a"]["kind"] == "constant"
    for key in ("loss_setting", "train_attribution", "ig_steps", "learning_rate", "network"):
        assert config[key] == preset[key], key
    assert api.get(f"/api/v1/runs/{run['id']}").json()["preset"] == "constrained_supervised"

    plain = api.post(
        "/api/v1/runs", json={"dataset_id": dataset["dataset"], "name": "no preset"}
    ).json()
    assert plain["preset"] is None and plain["config"]["epochs"] == 3  # RunConfig's default


def test_an_unknown_preset_is_refused_by_name(api: TestClient, dataset: dict[str, int]) -> None:
    before = api.get("/api/v1/runs").json()["count"]
    resp = api.post(
        "/api/v1/runs",
        json={"dataset_id": dataset["dataset"], "name": "x", "preset": "fast_and_good"},
    )
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "unknown preset 'fast_and_good'" in detail and "'classification'" in detail
    # A preset's value overridden by an invalid one is still checked.
    bad = api.post(
        "/api/v1/runs",
        json={
            "dataset_id": dataset["dataset"],
            "name": "x",
            "preset": "classification",
            "config": {"epochs": 0},
        },
    )
    assert bad.status_code == 422 and "config.epochs" in bad.json()["detail"]
    assert api.get("/api/v1/runs").json()["count"] == before


# --------------------------------------------------------------------------- predictions


def _finished_run(api: TestClient, dataset: dict[str, int], rows: list[tuple]) -> int:
    """A run marked succeeded with best epoch 4 (chosen by val_auroc) and ``rows`` of
    (subject key, split, site, label, logit) stored as the worker stores them."""
    from backend.core.db import session_scope
    from backend.models import Run, RunPrediction

    run_id = api.post(
        "/api/v1/runs", json={"dataset_id": dataset["dataset"], "name": "finished"}
    ).json()["id"]
    with session_scope() as session:
        run = session.get(Run, run_id)
        run.status, run.best_epoch, run.best_metric = "succeeded", 4, "val_auroc"
        for key, split, site, label, logit in rows:
            session.add(
                RunPrediction(
                    run_id=run_id,
                    subject_id=dataset[key],
                    subject_key=key,
                    split=split,
                    site=site,
                    label=label,
                    logit=logit,
                    probability=float(1 / (1 + np.exp(-logit))),
                )
            )
    return run_id


ROWS = [
    ("s0", "test", "A", 0, -2.0),
    ("s1", "test", "A", 1, 1.0),
    ("s2", "test", "B", 0, 0.5),  # a false positive
    ("s3", "test", "B", 1, 0.2),
    ("s4", "val", "B", 0, -1.0),
    ("s5", "val", "B", 1, 3.0),
]


def test_predictions_as_json_and_csv(api: TestClient, dataset: dict[str, int]) -> None:
    run_id = _finished_run(api, dataset, ROWS)
    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert (run["best_epoch"], run["best_metric"]) == (4, "val_auroc")

    resp = api.get(f"/api/v1/runs/{run_id}/predictions")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == 6 and (body["best_epoch"], body["best_metric"]) == (4, "val_auroc")
    assert [p["subject_key"] for p in body["data"]] == ["s4", "s5", "s0", "s1", "s2", "s3"]
    s2 = next(p for p in body["data"] if p["subject_key"] == "s2")
    assert s2 == {
        "subject_id": dataset["s2"],
        "subject_key": "s2",
        "split": "test",
        "site": "B",
        "label": 0,
        "logit": 0.5,
        "probability": pytest.approx(1 / (1 + np.exp(-0.5))),
    }
    test_only = api.get(f"/api/v1/runs/{run_id}/predictions?split=test").json()
    assert {p["split"] for p in test_only["data"]} == {"test"} and test_only["count"] == 4

    csv_resp = api.get(f"/api/v1/runs/{run_id}/predictions.csv")
    assert csv_resp.status_code == 200 and csv_resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_resp.text)))
    assert list(rows[0]) == [
        "subject_id",
        "subject_key",
        "split",
        "site",
        "label",
        "logit",
        "probability",
    ]
    assert {r["subject_key"]: float(r["logit"]) for r in rows} == {r[0]: r[4] for r in ROWS}
    assert api.get(f"/api/v1/runs/{run_id}/predictions?split=holdout").status_code == 422


def test_site_metrics_from_the_predictions(api: TestClient, dataset: dict[str, int]) -> None:
    run_id = _finished_run(api, dataset, ROWS)
    resp = api.get(f"/api/v1/runs/{run_id}/site-metrics")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["threshold"] == 0.5
    got = {(m["split"], m["site"]): m for m in body["data"]}
    assert set(got) == {("val", "B"), ("val", None), ("test", "A"), ("test", "B"), ("test", None)}
    # Site A: both right. Site B: s2 (healthy) at 0.62 is called pathological, s3 at 0.55 too;
    # s3 still ranks below s2: AUROC 0.
    assert got[("test", "A")] | {"mean_probability": 0} == {
        "split": "test",
        "site": "A",
        "n": 2,
        "n_pathological": 1,
        "n_healthy": 1,
        "auroc": 1.0,
        "accuracy": 1.0,
        "mean_probability": 0,
    }
    assert got[("test", "B")]["auroc"] == 0.0 and got[("test", "B")]["accuracy"] == 0.5
    # All test sites: logits -2, 1 | 0.5, 0.2 -> of the 4 (pathological, healthy) pairs, 3
    # are ordered right ((1,-2), (1,0.5), (0.2,-2)), one wrong ((0.2,0.5)).
    assert got[("test", None)]["auroc"] == pytest.approx(0.75)
    assert got[("test", None)]["accuracy"] == pytest.approx(0.75)
    assert got[("test", None)]["n"] == 4


def test_site_metric_with_one_class_has_no_auroc(api: TestClient, dataset: dict[str, int]) -> None:
    run_id = _finished_run(api, dataset, [("s0", "test", "A", 0, -1.0), ("s2", "test", "A", 0, 2)])
    site = api.get(f"/api/v1/runs/{run_id}/site-metrics").json()["data"][0]
    assert site["auroc"] is None and site["accuracy"] == 0.5 and site["n_healthy"] == 2


def test_runs_without_predictions_say_why(api: TestClient, dataset: dict[str, int]) -> None:
    from backend.core.db import session_scope
    from backend.models import Run

    queued = api.post(
        "/api/v1/runs", json={"dataset_id": dataset["dataset"], "name": "queued"}
    ).json()["id"]
    for path in ("predictions", "predictions.csv", "site-metrics"):
        resp = api.get(f"/api/v1/runs/{queued}/{path}")
        assert resp.status_code == 409, resp.text
        assert f"run {queued} is queued" in resp.json()["detail"]
    with session_scope() as session:
        session.get(Run, queued).status = "succeeded"
        regression = Run(
            name="reg",
            dataset_id=dataset["dataset"],
            config={"task": "regression"},
            status="succeeded",
        )
        session.add(regression)
        session.flush()
        regression_id = regression.id
    old = api.get(f"/api/v1/runs/{queued}/predictions")
    assert old.status_code == 404 and "trained before per-subject" in old.json()["detail"]
    reg = api.get(f"/api/v1/runs/{regression_id}/site-metrics")
    assert reg.status_code == 404 and "regression run" in reg.json()["detail"]
    assert api.get("/api/v1/runs/999999/predictions").status_code == 404


def test_predictions_need_access_to_the_run(api: TestClient, dataset: dict[str, int]) -> None:
    run_id = _finished_run(api, dataset, ROWS)
    created = api.post(
        "/api/v1/users",
        json={"username": "stranger", "password": "stranger-password", "role": "researcher"},
    )
    assert created.status_code == 201, created.text
    token = api.post(
        "/api/v1/auth/login", json={"username": "stranger", "password": "stranger-password"}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("predictions", "predictions.csv", "site-metrics"):
        assert api.get(f"/api/v1/runs/{run_id}/{path}", headers=headers).status_code == 404
