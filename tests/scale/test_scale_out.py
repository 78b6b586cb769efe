"""Scale-out, for real: the compose file's API, two GPU workers and the CPU worker as processes.

PostgreSQL (a fresh database on the server at 127.0.0.1:5432), a redis-server of our own, and
``backend``, ``worker-gpu0``, ``worker-gpu1`` and ``worker-cpu`` started with the commands and
environment of docker-compose.yml (``tests.scale.stack``; ATTRIVUE_DEVICE=cpu, as there is no
GPU here, and ATTRIVUE_HEARTBEAT_SECONDS / ATTRIVUE_JOB_STALE_SECONDS set short through the
compose variables an operator would set in .env).

Through the API: one small training run, then ten attribution jobs that both GPU workers
share (each job row names its worker) while the CPU worker makes the maps' display copies and
statistics (queue cpu); then a longer training run whose worker is killed with SIGKILL
after its first epoch's checkpoint: the other GPU worker's heartbeat finds the job lost,
re-queues it, and finishes it from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import clear_caches
from tests.helpers import wait_for
from tests.scale.stack import ComposeStack
from tests.worker.conftest import PASSWORD, make_dataset

pytestmark = pytest.mark.integration

GPU_WORKERS = ("worker-gpu0", "worker-gpu1")
TERMINAL = ("succeeded", "failed", "cancelled")
QUICK_RUN = {"epochs": 1, "batch_size": 4, "grid": [16, 20, 16], "device": "cpu", "seed": 1}
# Four steps of a few tenths of a second per epoch (the IG constraint): long enough to be
# killed in the middle, short enough to finish in seconds.
SLOW_RUN = {
    "epochs": 2,
    "batch_size": 2,
    "grid": [24, 28, 24],
    "device": "cpu",
    "seed": 3,
    "loss_setting": "lc_la_supervised",
    "train_attribution": ["integrated_gradients"],
    "ig_steps": 8,
    "val_attribution": False,
}


def _node(worker: str | None) -> str:
    """``gpu0@host`` of a ``jobs.worker`` / ``workers.name`` value ``gpu0@host:pid``."""
    assert worker, "the job row names no worker"
    return worker.rpartition(":")[0]


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    variables = {"ATTRIVUE_HEARTBEAT_SECONDS": "1", "ATTRIVUE_JOB_STALE_SECONDS": "4"}
    with ComposeStack(tmp_path, variables=variables, overrides={"ATTRIVUE_DEVICE": "cpu"}) as s:
        # This process builds the dataset in the same database and data directory.
        for key in [k for k in os.environ if k.startswith("ATTRIVUE_")]:
            monkeypatch.delenv(key)
        for key, value in s.environment("backend").items():
            monkeypatch.setenv(key, value)
        clear_caches()
        try:
            yield s
        finally:
            clear_caches()


def test_gpu_workers_share_jobs_and_take_over_a_killed_workers_job(
    stack: ComposeStack, tmp_path: Path
) -> None:
    from backend.storage import get_storage

    began = time.monotonic()

    def mark(what: str) -> None:  # where the time goes, shown with -s or on a failure
        print(f"[scale] {time.monotonic() - began:6.1f} s  {what}", flush=True)

    stack.start("backend")
    http = httpx.Client(base_url=stack.api_url, timeout=30)

    def api_up() -> bool:
        assert stack.alive("backend"), stack.log("backend")
        try:
            return http.get("/api/v1/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(api_up, timeout=180, interval=0.3, what="the API (migrations on start)")
    mark("API up")
    for name in (*GPU_WORKERS, "worker-cpu"):
        stack.start(name)
    (tmp_path / "sources").mkdir()
    _, dataset_id = make_dataset(tmp_path / "sources")  # while the workers start

    def workers() -> list[dict] | None:
        for name in (*GPU_WORKERS, "worker-cpu"):
            assert stack.alive(name), stack.log(name)
        listed = http.get("/api/v1/health").json()["workers"]
        # One row per worker process: worker-cpu (prefork, concurrency 2) has two.
        nodes = {_node(w["name"]).partition("@")[0] for w in listed}
        return listed if nodes == {"gpu0", "gpu1", "cpu"} else None

    # Three workers import torch and MONAI at once on a 2-core CI machine: generous waits
    # (they return as soon as the condition holds; no timing is asserted).
    listed = wait_for(workers, timeout=180, interval=0.3, what="three workers in /health")
    queues = {_node(w["name"]).partition("@")[0]: w["queues"] for w in listed}
    assert queues == {"gpu0": ["gpu"], "gpu1": ["gpu"], "cpu": ["cpu"]}
    assert {w["gpu"] for w in listed} == {"cpu"}  # ATTRIVUE_DEVICE=cpu: no GPU here
    for name in (*GPU_WORKERS, "worker-cpu"):
        check = stack.healthcheck(name)
        assert check.returncode == 0, check.stdout + check.stderr
    assert stack.healthcheck("backend").returncode == 0
    mark("three workers registered")

    token = http.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
    http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def job(job_id: int) -> dict:
        return http.get(f"/api/v1/jobs/{job_id}").json()

    def ended(job_ids: list[int]) -> list[dict] | None:
        for name in (*GPU_WORKERS, "worker-cpu"):
            assert stack.alive(name), stack.log(name)
        rows = [job(i) for i in job_ids]
        return rows if all(r["status"] in TERMINAL for r in rows) else None

    # A trained model for the attribution jobs.
    run = http.post(
        "/api/v1/runs", json={"dataset_id": dataset_id, "name": "quick", "config": QUICK_RUN}
    ).json()
    (trained,) = wait_for(lambda: ended([run["job_id"]]), timeout=300, what="the first run")
    assert trained["status"] == "succeeded", trained
    mark("first run trained")

    # Ten short jobs: attribution maps of ten subjects, spread over both GPU workers.
    subjects = http.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
    body = {
        "run_id": run["id"],
        "subject_ids": [s["id"] for s in subjects[:10]],
        "method": "saliency",
    }
    maps = http.post("/api/v1/attributions/batch", json=body).json()["data"]
    assert len(maps) == 10
    rows = wait_for(lambda: ended([m["job_id"] for m in maps]), timeout=300, what="ten jobs")
    assert [r["status"] for r in rows] == ["succeeded"] * 10, rows
    ran_on = Counter(_node(r["worker"]).partition("@")[0] for r in rows)
    assert set(ran_on) == {"gpu0", "gpu1"}, f"not spread over both workers: {ran_on}"
    mark("ten jobs done")

    # The CPU worker made each map's display copy and statistics (queue cpu), unasked.
    maps_dir = Path(stack.environment("backend")["ATTRIVUE_DATA_DIR"])

    def products() -> bool:
        stats = list(maps_dir.rglob("*.stats.json"))
        return len(stats) == 10

    wait_for(products, timeout=180, interval=0.3, what="the maps' statistics from worker-cpu")

    # A longer run; its worker is killed (SIGKILL) after the first epoch's checkpoint.
    slow = http.post(
        "/api/v1/runs", json={"dataset_id": dataset_id, "name": "slow", "config": SLOW_RUN}
    ).json()

    def first_epoch_done() -> dict | None:
        row = job(slow["job_id"])
        metrics = http.get(f"/api/v1/runs/{slow['id']}/metrics").json()
        done = row["status"] == "running" and any(p["epoch"] == 1 for p in metrics["data"])
        return (
            row
            if done and (get_storage().checkpoint_dir(slow["id"]) / "last.pt").is_file()
            else None
        )

    victim = wait_for(first_epoch_done, timeout=300, interval=0.2, what="the slow run's epoch 1")
    victim_node = _node(victim["worker"]).partition("@")[0]
    killed = f"worker-{victim_node}"
    survivor = next(name for name in GPU_WORKERS if name != killed)
    assert int(victim["worker"].rpartition(":")[2]) == stack.processes[killed].pid
    os.kill(stack.processes[killed].pid, signal.SIGKILL)
    stack.processes[killed].wait()
    mark("worker killed after epoch 1")

    def slow_ended() -> dict | None:
        assert stack.alive(survivor), stack.log(survivor)
        row = job(slow["job_id"])
        return row if row["status"] in TERMINAL else None

    final = wait_for(slow_ended, timeout=300, interval=0.3, what="the killed worker's job")
    assert final["status"] == "succeeded", (final, stack.log(survivor))
    mark("killed worker's job finished by the other")
    assert final["attempts"] == 2
    assert _node(final["worker"]) != _node(victim["worker"])
    assert _node(final["worker"]).startswith(survivor.removeprefix("worker-") + "@")
    run_row = http.get(f"/api/v1/runs/{slow['id']}").json()
    assert run_row["status"] == "succeeded" and run_row["metrics"]["resumed_from_epoch"] >= 1
    # Whichever live worker's heartbeat found the job lost re-queued it.
    assert "re-queued" in stack.log(survivor) + stack.log("worker-cpu")
    # The killed worker's healthcheck now fails (its heartbeat is stale); the other's passes.
    assert stack.healthcheck(killed).returncode == 1
    assert stack.healthcheck(survivor).returncode == 0
