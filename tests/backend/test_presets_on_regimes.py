"""Each training preset, on data made by the regime suite, through the REST API only.

A user uploads a data set made differently from the demo generator (a noisy, non-zero
background; another native grid; irregular lesions), launches the three presets by name and
reads the results back, as a script would: nothing here calls the worker's Python directly.
The budget is tiny (CI); docs/experiments.md "Data regimes" has the full-size numbers.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import httpx
import pytest

from tests.conftest import Pipeline, wait_job
from worker.ml.regimes import REGIMES, generate_regime

PRESETS = ["classification", "constrained_supervised", "constrained_weakly_supervised"]


@pytest.fixture(scope="module")
def regime_dataset(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A small bright-irregular regime (4 mm native grid, noisy background), imported as a zip
    with its manifest into a new dataset; returns the dataset id."""
    regime = dataclasses.replace(
        REGIMES["bright_irregular_small_4mm"],
        fov_mm=(128.0, 152.0, 128.0),
        lesion_load=(0.01, 0.03),
        contrast_range=(0.8, 1.2),
        n_subjects=28,
    )
    folder = tmp_path_factory.mktemp("regime")
    records = generate_regime(folder, regime)
    assert all((r.image.stat().st_size > 0) for r in records)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("artefact"):
                archive.write(path, path.relative_to(folder).as_posix())
    with pipeline.client() as client:
        project = client.post("/api/v1/projects", json={"name": "regimes"}).json()
        dataset = client.post(
            "/api/v1/datasets", json={"name": "regime", "project_id": project["id"]}
        ).json()
        resp = client.post(
            f"/api/v1/datasets/{dataset['id']}/imports",
            files=[("files", ("regime.zip", buffer.getvalue()))],
        )
        assert resp.status_code == 201, resp.text
        subjects = resp.json()["data"]
    assert len(subjects) == regime.n_subjects
    # Every subject got a computed brain mask: the noisy background is not brain.
    assert all(s["brain_mask"] == "computed" for s in subjects)
    return int(dataset["id"])


@pytest.fixture(scope="module")
def trained(pipeline: Pipeline, regime_dataset: int) -> dict[str, dict]:
    """The three presets, launched together, on a small grid and budget; their runs."""
    runs = {}
    with pipeline.client() as client:
        for preset in PRESETS:
            resp = client.post(
                "/api/v1/runs",
                json={
                    "dataset_id": regime_dataset,
                    "name": preset,
                    "preset": preset,
                    "config": {"grid": [32, 36, 32], "epochs": 8, "device": "cpu", "seed": 3},
                },
            )
            assert resp.status_code == 201, resp.text
            runs[preset] = resp.json()
        for preset, run in runs.items():
            wait_job(client, run["job_id"], timeout=900)
            runs[preset] = client.get(f"/api/v1/runs/{run['id']}").json()
    return runs


def test_presets_are_listed_with_their_values(pipeline: Pipeline) -> None:
    with httpx.Client(base_url=pipeline.base_url, timeout=30) as anonymous:
        assert anonymous.get("/api/v1/presets").status_code == 401
    with pipeline.client() as client:
        listed = client.get("/api/v1/presets").json()
    names = [p["name"] for p in (listed["data"] if isinstance(listed, dict) else listed)]
    assert names == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_learns_the_lesions_of_a_regime(trained: dict[str, dict], preset: str) -> None:
    run = trained[preset]
    metrics = run["metrics"]
    assert run["preset"] == preset
    assert run["config"]["brain"] == "mask" and run["config"]["calibrate_logit"] is True
    # Chance level of the lesion mass is the lesion share of the brain: 1-3 % here.
    assert metrics["test_attr_lesion_mass"] > 0.06, metrics
    assert metrics["test_accuracy"] > 0.5, metrics
    # 8 test subjects: one AUROC step is 1/16. The normalised weakly supervised preset gives
    # 0.69 here (11 of 16 pairs) and 0.98-1.00 on the held-out regimes at 96 subjects
    # (docs/experiments.md, "regimes-normalised"), so the constrained presets get one step
    # more room than L_C only at this size.
    assert metrics["test_auroc"] > (0.7 if preset == "classification" else 0.65), metrics
    if preset != "classification":
        # The constraint does not satisfy itself by making every map negative.
        assert metrics["test_attr_lesion_positive"] > 0.3, metrics


def test_constraint_lowers_the_pathological_relevance_of_healthy_subjects(
    trained: dict[str, dict],
) -> None:
    plain = trained["classification"]["metrics"]["test_attr_healthy_share"]
    for preset in PRESETS[1:]:
        constrained = trained[preset]["metrics"]["test_attr_healthy_share"]
        assert constrained < plain, (preset, constrained, plain)


def test_an_evaluation_reads_predictions_and_site_metrics(
    pipeline: Pipeline, trained: dict[str, dict]
) -> None:
    run = trained["constrained_supervised"]
    with pipeline.client() as client:
        predictions = client.get(f"/api/v1/runs/{run['id']}/predictions").json()
        sites = client.get(f"/api/v1/runs/{run['id']}/site-metrics").json()
    assert predictions["count"] == 28
    assert run["best_epoch"] >= 1
    # The preset selects on the validation maps inside an AUROC margin; an epoch outside the
    # margin, or under the classification floor, is ranked by its val_auroc.
    assert run["config"]["early_stopping_metric"] == "val_lesion_mass"
    assert run["best_metric"] in ("val_lesion_mass", "val_auroc")
    test_rows = [p for p in predictions["data"] if p["split"] == "test"]
    accuracy = sum((p["probability"] >= 0.5) == (p["label"] == 1) for p in test_rows) / len(
        test_rows
    )
    assert accuracy == pytest.approx(run["metrics"]["test_accuracy"])
    assert any(m["split"] == "test" for m in sites["data"])
