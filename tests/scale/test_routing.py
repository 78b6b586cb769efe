"""Routing and worker identity, in process: queues, the device report, the healthcheck."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.cli import main as cli_main
from backend.core import queue


def test_every_task_goes_to_its_queue_and_an_unrouted_one_is_refused(app_env: Path) -> None:
    from kombu import Connection

    from backend.core.config import get_settings

    queue.send("attrivue.train", 1)
    queue.send("attrivue.attribute", 2)
    queue.send("attrivue.map_products", 3)
    with pytest.raises(KeyError, match="no queue for task 'attrivue.nothing'"):
        queue.send("attrivue.nothing", 4)
    # What the filesystem broker holds, per queue: a worker on `cpu` sees only the light task.
    app = queue.client(get_settings())
    seen: dict[str, list[str]] = {}
    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as c:
        for name in queue.QUEUES:
            q = c.SimpleQueue(name)
            while True:
                try:
                    message = q.get(block=False)
                except q.Empty:
                    break
                seen.setdefault(name, []).append(message.headers["task"])
                message.ack()
            q.close()
    # Which queue each task reached; the filesystem broker does not keep the order of two
    # messages sent within the same clock tick, so the order inside a queue is not compared.
    assert {queue: sorted(tasks) for queue, tasks in seen.items()} == {
        "gpu": ["attrivue.attribute", "attrivue.train"],
        "cpu": ["attrivue.map_products"],
    }


def test_a_worker_refuses_an_unknown_queue(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["worker", "--queues", "gpu,gpus"]) == 2
    assert "unknown queue(s) gpus; the queues are gpu, cpu" in capsys.readouterr().err


def _fake_torch(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    """torch.cuda as a machine with these GPUs would answer (there is no GPU here)."""
    cuda = types.SimpleNamespace(
        is_available=lambda: bool(names),
        device_count=lambda: len(names),
        get_device_name=lambda i: names[i],
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))


@pytest.mark.parametrize(
    ("device", "visible", "gpus", "report"),
    [
        ("cpu", "0", ["NVIDIA H100"], "cpu"),
        ("cuda", "-1", ["NVIDIA H100"], "cpu"),
        ("cuda", "2", ["NVIDIA H100"], "cuda:0 = GPU 2 (NVIDIA H100)"),
        ("auto", None, ["A", "B"], "cuda:0 = GPU 0 (A), cuda:1 = GPU 1 (B)"),
        ("cuda", "0", [], "cpu (no CUDA device visible)"),
    ],
)
def test_a_worker_reports_the_gpu_it_picked(
    monkeypatch: pytest.MonkeyPatch,
    device: str,
    visible: str | None,
    gpus: list[str],
    report: str,
) -> None:
    from backend.core.config import get_settings
    from worker.tasks import common

    monkeypatch.setenv("ATTRIVUE_DEVICE", device)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    _fake_torch(monkeypatch, gpus)
    get_settings.cache_clear()
    try:
        assert common.gpu_report() == report
    finally:
        get_settings.cache_clear()


def test_the_worker_healthcheck_follows_the_heartbeat(
    app_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.core.db import session_scope, upgrade_database
    from backend.services.jobs import register_worker
    from worker import healthcheck

    upgrade_database()
    with session_scope() as session:
        register_worker(session, name="gpu0@box:7", hostname="box", queues=["gpu"], gpu="0", pid=7)
        register_worker(session, name="gpu10@box:8", hostname="box", queues=["gpu"], gpu="1", pid=8)
    assert healthcheck.main(["gpu0@box"]) == 0
    assert "gpu0@box: alive (gpu0@box:7)" in capsys.readouterr().out
    assert healthcheck.main(["gpu1@box"]) == 1  # no process of node gpu1@box
    from backend.models import Worker

    with session_scope() as session:
        row = session.query(Worker).filter_by(name="gpu0@box:7").one()
        row.last_seen_at = datetime.now(UTC) - timedelta(minutes=5)  # beyond the stale window
    assert healthcheck.main(["gpu0@box"]) == 1
    assert "no recent heartbeat" in capsys.readouterr().out
    assert healthcheck.main([]) == 2
