"""Evidence checks, shortcut reports and cohort maps of an imported TorchScript run, through
the API and a real Celery worker (issue 20): faithfulness and cascading model randomisation
run on the imported model (its TorchScript layers re-initialised one by one), data
randomisation is refused with a 422 before anything is queued (the network cannot be
retrained), and the first shortcut report predicts every subject with the imported model and
stores the predictions it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import wait_for
from tests.worker.conftest import make_dataset
from tests.worker.imported_models import (
    SPLITS,
    Scripted,
    api_client,
    first_subject,
    ig_map,
    import_model,
    torchscript_bytes,
    worker_process,
)


def _finished(client: Any, url: str, tmp_path: Path) -> dict:
    """Poll ``url`` (an evidence list: its newest check; else a row with its job) until it
    has a final status; returns the row."""

    def status(row: dict) -> str:
        return row["status"] if "status" in row else row["job"]["status"]

    def done() -> dict | None:
        row = client.get(url).json()
        if "data" in row:
            row = row["data"][0]
        return row if status(row) in ("succeeded", "failed", "cancelled") else None

    row = wait_for(done, timeout=300, interval=0.5, what=url)
    assert status(row) == "succeeded", (row, (tmp_path / "worker.log").read_text()[-3000:])
    return row


def _expected_logit(model: torch.nn.Module, config: dict, image: Path, brain: Path | None) -> float:
    """The pathological logit (output 2) of the subject preprocessed as the worker does."""
    from attrivue_core.configs import RunConfig
    from worker.ml.transforms import BRAIN_KEY, IMAGE_KEY, preprocess_for

    item = {IMAGE_KEY: str(image), **({BRAIN_KEY: str(brain)} if brain else {})}
    x = preprocess_for(RunConfig.model_validate(config))(item)[IMAGE_KEY].as_tensor()[None]
    with torch.no_grad():
        return float(model(x.float())[0, 2])


def test_evidence_and_shortcut_report_of_an_imported_torchscript_run(
    stack: dict, tmp_path: Path
) -> None:
    from backend.core.db import session_scope
    from backend.models import EvidenceCheck, Job

    _, dataset_id = make_dataset(tmp_path, SPLITS)
    subject_id, image, brain = first_subject(dataset_id)
    torch.manual_seed(0)
    scripted = Scripted().eval()
    client = api_client("r")
    try:
        with worker_process(tmp_path, stack):
            reply = import_model(
                client, dataset_id, "ts", torchscript_bytes(scripted), logit_index=2
            )
            assert reply.status_code == 201, reply.text
            run = reply.json()
            run_id = run["id"]
            # No predictions yet: the message says how an imported run gets them.
            missing = client.get(f"/api/v1/runs/{run_id}/predictions")
            assert missing.status_code == 404
            assert "imported" in missing.json()["detail"]
            assert "shortcut report" in missing.json()["detail"]

            map_id, _ = ig_map(client, run_id, subject_id, tmp_path)

            # Data randomisation would retrain a network that was not built here: refused.
            with session_scope() as session:
                jobs_before = session.query(Job).count()
            refused = client.post(
                f"/api/v1/attributions/{map_id}/evidence",
                json={"checks": ["faithfulness", "data_randomisation"]},
            )
            assert refused.status_code == 422, refused.text
            assert "imported" in refused.json()["detail"]
            assert "cannot be retrained" in refused.json()["detail"]
            refused_run = client.post(
                f"/api/v1/runs/{run_id}/evidence",
                json={"split": "test", "checks": ["data_randomisation"]},
            )
            assert refused_run.status_code == 422, refused_run.text
            with session_scope() as session:
                assert session.query(Job).count() == jobs_before
                assert session.query(EvidenceCheck).count() == 0

            started = client.post(
                f"/api/v1/attributions/{map_id}/evidence",
                json={"checks": ["faithfulness", "model_randomisation"], "curve_steps": 4},
            )
            assert started.status_code == 201, started.text
            check = started.json()
            evidence = _finished(client, f"/api/v1/attributions/{map_id}/evidence", tmp_path)
            assert evidence["id"] == check["id"]
            faithfulness = evidence["results"]["faithfulness"]
            assert len(faithfulness["deletion"]) == len(faithfulness["fractions"]) == 5
            assert faithfulness["deletion"][0] == pytest.approx(
                _expected_logit(scripted, run["config"], image, brain), rel=1e-4, abs=1e-5
            )
            randomisation = evidence["results"]["model_randomisation"]
            # The TorchScript layers, output first, each re-initialised in turn.
            assert randomisation["layers"] == ["net.head", "net.conv"]
            assert len(randomisation["steps"]) == 2
            assert evidence["verdict"] in ("passes", "fails")

            # The first shortcut report predicts every subject with the imported model.
            with session_scope() as session:
                from backend.models import Subject

                test_ids = [
                    s.id
                    for s in session.query(Subject).filter_by(dataset_id=dataset_id, split="test")
                ]
            for sid in test_ids:
                if sid != subject_id:
                    ig_map(client, run_id, sid, tmp_path)
            started = client.post(
                f"/api/v1/runs/{run_id}/shortcut-reports",
                json={"split": "test", "region": {"kind": "top_relevance", "fraction": 0.05}},
            )
            assert started.status_code == 201, started.text
            report_id = started.json()["id"]
            report = _finished(
                client, f"/api/v1/runs/{run_id}/shortcut-reports/{report_id}", tmp_path
            )
            result = report["result"]
            everyone = next(s for s in result["sites"] if s["site"] is None)
            assert everyone["n"] == 2
            assert result["counterfactual"]["n"] == 2
            predictions = client.get(f"/api/v1/runs/{run_id}/predictions")
            assert predictions.status_code == 200, predictions.text
            rows = predictions.json()["data"]
            assert len(rows) == len(SPLITS)
            row = next(r for r in rows if r["subject_id"] == subject_id)
            expected = _expected_logit(scripted, run["config"], image, brain)
            assert row["logit"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
            assert row["probability"] == pytest.approx(
                1 / (1 + torch.exp(torch.tensor(-expected)).item())
            )
            before = result["counterfactual"]["before"]
            assert before["auroc"] is None or 0.0 <= before["auroc"] <= 1.0

            # A second report reads the stored predictions (and finds the same numbers).
            again = client.post(
                f"/api/v1/runs/{run_id}/shortcut-reports",
                json={"split": "test", "region": {"kind": "top_relevance", "fraction": 0.05}},
            )
            assert again.status_code == 201, again.text
            second = _finished(
                client, f"/api/v1/runs/{run_id}/shortcut-reports/{again.json()['id']}", tmp_path
            )
            assert second["result"]["sites"] == result["sites"]
            assert len(client.get(f"/api/v1/runs/{run_id}/predictions").json()["data"]) == len(
                SPLITS
            )
    finally:
        client.__exit__(None, None, None)
