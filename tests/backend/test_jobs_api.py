"""Jobs and runs in process: live events (SSE), retry, compare, run filters, access checks.

The event streams are read through a real uvicorn server in a thread (the test client buffers
whole responses), while the test drives the job row the way a worker would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.helpers import brain_volume, free_port, wait_for, write_nifti


@dataclass
class Lab:
    api: TestClient  # the project's admin
    clinician: TestClient
    outsider: TestClient
    dataset_id: int


def _login(api: TestClient, username: str, role: str) -> TestClient:
    password = f"{username}-password-1"
    created = api.post("/api/v1/users", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    token = api.post("/api/v1/auth/login", json={"username": username, "password": password})
    api.cookies.clear()
    client = TestClient(
        api.app, headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    if role != "outsider":
        project = api.get("/api/v1/projects").json()["data"][0]["id"]
        member = {"username": username, "role": role}
        assert api.put(f"/api/v1/projects/{project}/members", json=member).status_code == 200
        # An open review round: clinicians see the runs (blinded rounds: test_audit_part_b)
        opened = api.patch(f"/api/v1/projects/{project}", json={"review_blinded": False})
        assert opened.status_code == 200
    return client


@pytest.fixture
def lab(api: TestClient, tmp_path: Path) -> Lab:
    dataset = api.post("/api/v1/datasets", json={"name": "d"}).json()
    image = write_nifti(tmp_path / "i.nii.gz", brain_volume()[0])
    subject = api.post(
        f"/api/v1/datasets/{dataset['id']}/subjects",
        data={"subject_key": "s0", "label": "0"},
        files={"image": ("i.nii.gz", image.read_bytes())},
    )
    assert subject.status_code == 201, subject.text
    return Lab(
        api=api,
        clinician=_login(api, "clin", "clinician"),
        outsider=_login(api, "out", "outsider"),
        dataset_id=dataset["id"],
    )


def _run(lab: Lab, name: str = "r", **config) -> dict:
    body = {"dataset_id": lab.dataset_id, "name": name, "config": config}
    resp = lab.api.post("/api/v1/runs", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _set_job(job_id: int, **fields) -> None:
    from backend.core.db import session_scope
    from backend.models import Job

    with session_scope() as session:
        job = session.get(Job, job_id)
        for key, value in fields.items():
            setattr(job, key, value)


def _set_run(run_id: int, **fields) -> None:
    from backend.core.db import session_scope
    from backend.models import Run

    with session_scope() as session:
        run = session.get(Run, run_id)
        for key, value in fields.items():
            setattr(run, key, value)


def _add_metrics(run_id: int, epoch: int, **values: float) -> None:
    from backend.core.db import session_scope
    from backend.models import RunMetric

    with session_scope() as session:
        for name, value in values.items():
            session.add(RunMetric(run_id=run_id, epoch=epoch, step=None, name=name, value=value))


# --------------------------------------------------------------------------- events


@pytest.fixture
def server(api: TestClient) -> Iterator[httpx.Client]:
    """The app behind a real uvicorn in a thread, with the admin's token."""
    port = free_port()
    config = uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_for(lambda: running.started, timeout=30, interval=0.05, what="uvicorn to start")
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": api.headers["Authorization"]},
        timeout=10,
    )
    try:
        yield client
    finally:
        client.close()
        running.should_exit = True
        thread.join(timeout=10)


class Events:
    """Reads Server-Sent Events one by one from a streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        self.lines = response.iter_lines()
        self.comments: list[str] = []

    def next(self) -> tuple[str, dict]:
        import json

        event, data = "message", ""
        for line in self.lines:
            if line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
            elif not line and data:
                return event, json.loads(data)
        raise EOFError("the stream ended")

    def rest(self) -> list[str]:
        return list(self.lines)


def test_job_events_follow_each_change_until_the_end(lab: Lab, server: httpx.Client) -> None:
    job_id = _run(lab)["job_id"]
    with server.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        events = Events(response)
        assert events.next() == ("job", lab.api.get(f"/api/v1/jobs/{job_id}").json())
        _set_job(job_id, status="running", progress=0.25, message="epoch 1/4")
        event, job = events.next()
        assert (event, job["status"], job["progress"], job["message"]) == (
            "job",
            "running",
            0.25,
            "epoch 1/4",
        )
        _set_job(job_id, heartbeat_at=datetime.now(UTC))  # a heartbeat alone is no change
        _set_job(job_id, progress=0.5, message="epoch 2/4")
        assert events.next()[1]["progress"] == 0.5
        _set_job(job_id, status="succeeded", progress=1.0, message="done")
        assert events.next()[1]["status"] == "succeeded"
        assert events.next() == ("end", {})
        assert events.rest() == []  # the server closed the stream


def test_a_quiet_stream_gets_keep_alive_comments(
    lab: Lab, server: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.api.routes import jobs

    monkeypatch.setattr(jobs, "KEEPALIVE_SECONDS", 0.2)
    job_id = _run(lab)["job_id"]
    with server.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        events = Events(response)
        events.next()
        threading.Timer(1.5, _set_job, args=(job_id,), kwargs={"status": "failed"}).start()
        assert events.next()[1]["status"] == "failed"
        assert ": keep-alive" in events.comments


def test_run_events_carry_the_run_its_job_and_new_metric_points(
    lab: Lab, server: httpx.Client
) -> None:
    run = _run(lab)
    with server.stream("GET", f"/api/v1/runs/{run['id']}/events") as response:
        events = Events(response)
        event, body = events.next()
        assert (event, body["id"], body["status"]) == ("run", run["id"], "queued")
        event, body = events.next()
        assert (event, body["id"], body["status"]) == ("job", run["job_id"], "queued")
        _add_metrics(run["id"], 1, loss_c=0.7, val_auroc=0.5)
        event, points = events.next()
        assert event == "metrics" and points["run_id"] == run["id"]
        assert {(p["name"], p["epoch"], p["value"]) for p in points["data"]} == {
            ("loss_c", 1, 0.7),
            ("val_auroc", 1, 0.5),
        }
        _add_metrics(run["id"], 2, loss_c=0.6)
        assert [p["epoch"] for p in events.next()[1]["data"]] == [2]  # only the new point
        _set_run(run["id"], status="succeeded", metrics={"test_auroc": 0.9})
        _set_job(run["job_id"], status="succeeded", progress=1.0)
        event, body = events.next()
        assert event == "run" and body["metrics"] == {"test_auroc": 0.9}
        assert events.next()[1]["status"] == "succeeded"  # the job
        assert events.next() == ("end", {})


def test_event_streams_check_access(lab: Lab) -> None:
    run = _run(lab)
    for path in (f"/api/v1/jobs/{run['job_id']}/events", f"/api/v1/runs/{run['id']}/events"):
        assert lab.outsider.get(path).status_code == 404
        assert TestClient(lab.api.app).get(path).status_code == 401
    assert lab.api.get("/api/v1/jobs/999/events").status_code == 404
    assert lab.api.get("/api/v1/runs/999/events").status_code == 404


# --------------------------------------------------------------------------- retry


def test_retry_queues_a_new_job_for_a_failed_or_cancelled_run(lab: Lab) -> None:
    run = _run(lab)
    busy = lab.api.post(f"/api/v1/runs/{run['id']}/retry")
    assert busy.status_code == 409 and "queued" in busy.json()["detail"]
    cancelled = lab.api.post(f"/api/v1/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert lab.clinician.post(f"/api/v1/runs/{run['id']}/retry").status_code == 403
    assert lab.outsider.post(f"/api/v1/runs/{run['id']}/retry").status_code == 404

    retried = lab.api.post(f"/api/v1/runs/{run['id']}/retry")
    assert retried.status_code == 202, retried.text
    again = retried.json()
    assert again["id"] == run["id"] and again["status"] == "queued"
    assert again["job_id"] != run["job_id"]
    job = lab.api.get(f"/api/v1/jobs/{again['job_id']}").json()
    assert job["status"] == "queued" and job["attempts"] == 0
    assert _job_status(run["job_id"]) == "cancelled"  # the earlier job is kept as it ended

    _set_run(run["id"], status="failed")
    _set_job(again["job_id"], status="failed", error="boom")
    assert lab.api.post(f"/api/v1/runs/{run['id']}/retry").status_code == 202
    _set_run(run["id"], status="succeeded")
    assert lab.api.post(f"/api/v1/runs/{run['id']}/retry").status_code == 409
    assert lab.api.get("/api/v1/runs").json()["count"] == 1  # the run row is reused


def test_cancel_of_a_queued_job_revokes_its_task(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.core import queue

    revoked: list[str] = []
    run = _run(lab)  # sent through the real client first
    monkeypatch.setattr(queue, "client", lambda settings=None: _FakeCelery(revoked))
    task_id = _task_id(run["job_id"])
    assert lab.api.post(f"/api/v1/jobs/{run['job_id']}/cancel").json()["status"] == "cancelled"
    assert revoked == [task_id]


class _FakeCelery:
    def __init__(self, revoked: list[str]) -> None:
        self.control = self
        self.revoked = revoked

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)


def _job_status(job_id: int) -> str:
    from backend.core.db import session_scope
    from backend.models import Job

    with session_scope() as session:
        return session.get(Job, job_id).status


def _task_id(job_id: int) -> str:
    from backend.core.db import session_scope
    from backend.models import Job

    with session_scope() as session:
        task_id = session.get(Job, job_id).celery_task_id
    assert task_id
    return task_id


# --------------------------------------------------------------------------- compare


def test_compare_flags_differing_config_and_gives_series(lab: Lab) -> None:
    first = _run(lab, "a", epochs=2, lambda_a={"value": 1.0})
    second = _run(lab, "b", epochs=3, lambda_a={"value": 0.5})
    _set_run(first["id"], metrics={"test_auroc": 0.8, "epochs_completed": 2})
    _set_run(second["id"], metrics={"test_auroc": 0.9})
    for epoch, (a, b) in enumerate([(0.7, 0.6), (0.5, 0.4)], start=1):
        _add_metrics(first["id"], epoch, loss_c=a, val_auroc=0.5)
        _add_metrics(second["id"], epoch, loss_c=b)

    ids = f"ids={second['id']}&ids={first['id']}"
    resp = lab.api.get(f"/api/v1/runs/compare?{ids}&metrics=loss_c")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["name"] for r in body["runs"]] == ["b", "a"]  # the order asked for
    assert set(body["differing"]) == {"epochs", "lambda_a.value"}
    config = {row["key"]: row for row in body["config"]}
    assert config["epochs"]["values"] == [3, 2] and config["epochs"]["differs"]
    assert config["grid"]["differs"] is False
    metrics = {row["key"]: row for row in body["metrics"]}
    assert metrics["test_auroc"]["values"] == [0.9, 0.8]
    assert metrics["epochs_completed"]["values"] == [None, 2]
    series = [(s["run_id"], s["name"], s["epochs"], s["values"]) for s in body["series"]]
    assert series == [
        (second["id"], "loss_c", [1, 2], [0.6, 0.4]),
        (first["id"], "loss_c", [1, 2], [0.7, 0.5]),
    ]
    everything = lab.api.get(f"/api/v1/runs/compare?{ids}").json()["series"]
    assert {s["name"] for s in everything} == {"loss_c", "val_auroc"}

    assert lab.clinician.get(f"/api/v1/runs/compare?{ids}").status_code == 200
    assert lab.outsider.get(f"/api/v1/runs/compare?{ids}").status_code == 404
    assert lab.api.get(f"/api/v1/runs/compare?ids={first['id']}&ids=999").status_code == 404
    assert lab.api.get("/api/v1/runs/compare").status_code == 422


# --------------------------------------------------------------------------- filters


def test_runs_are_filtered_by_setting_network_status_and_time(lab: Lab) -> None:
    plain = _run(lab, "plain", loss_setting="lc_only", network="small_cnn")
    constrained = _run(lab, "constrained", loss_setting="lc_la_supervised", network="resnet10")
    old = datetime.now(UTC) - timedelta(days=3)
    _set_run(plain["id"], created_at=old, status="failed")

    def names(query: str, client: TestClient | None = None) -> list[str]:
        resp = (client or lab.api).get(f"/api/v1/runs?{query}")
        assert resp.status_code == 200, resp.text
        return [r["name"] for r in resp.json()["data"]]

    assert names("") == ["constrained", "plain"]
    assert names("loss_setting=lc_la_supervised") == ["constrained"]
    assert names("network=small_cnn") == ["plain"]
    assert names("status=failed") == ["plain"]
    day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert names(f"created_after={day_ago.replace('+', '%2B')}") == ["constrained"]
    assert names(f"created_before={day_ago.replace('+', '%2B')}") == ["plain"]
    assert names(f"dataset_id={lab.dataset_id}&network=resnet10") == ["constrained"]
    assert names(f"dataset_id={lab.dataset_id + 1}") == []
    assert names("", lab.outsider) == []
    assert names("network=resnet10", lab.clinician) == ["constrained"]
    assert constrained["config"]["network"] == "resnet10"
