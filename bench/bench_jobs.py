"""Job throughput with one and with two GPU workers: short jobs per minute, and the ratio.

``python -m bench.bench_jobs [--jobs 36] [--out docs/benchmarks.md]``

Runs docker-compose.yml's services as processes, the way tests/scale/test_scale_out.py does
(``tests.scale.stack.ComposeStack``): a fresh database on the PostgreSQL server at
127.0.0.1:5432 (or ATTRIVUE_TEST_DATABASE_URL's), a redis-server of its own, ``backend``
and ``worker-gpu0`` (and later ``worker-gpu1``) with the compose file's commands and
environment, ATTRIVUE_DEVICE=cpu (no GPU here). The CPU worker is not started, so that only
the GPU workers compete for the cores.

Through the API: a dataset of twelve 16x20x16 subjects, one small training run, then short
jobs (saliency maps of single subjects, one job each, queued in batches of twelve). Each
worker is warmed up first (its first job imports torch and MONAI), then ``--jobs`` jobs are
queued at once and timed from their creation to the last one's end (the job rows' server
timestamps): with ``worker-gpu0`` alone, then with ``worker-gpu0`` and ``worker-gpu1``.

The result goes between ``<!-- jobs:begin -->`` and ``<!-- jobs:end -->`` in the output
file, with the command, date and machine. Workers, API, PostgreSQL and Redis share this
machine's cores: with two cores, two workers cannot be twice as fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.docs import cpu_model, replace_section, write_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "jobs"
HEADING = "Jobs: throughput with one and two GPU workers"
TERMINAL = ("succeeded", "failed", "cancelled")
QUICK_RUN = {"epochs": 1, "batch_size": 4, "grid": [16, 20, 16], "device": "cpu", "seed": 1}


def _log(message: str) -> None:
    print(f"[bench_jobs] {message}", file=sys.stderr, flush=True)


@dataclass
class Phase:
    workers: int
    jobs: int
    seconds: float  # first job created -> last job finished (server clock)
    per_worker: dict[str, int]
    failed: int
    median_job: float  # started -> finished of one job, the median

    @property
    def per_minute(self) -> float:
        return 60.0 * self.jobs / self.seconds


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Bench:
    def __init__(self, stack, http: httpx.Client, run_id: int, subject_ids: list[int]) -> None:
        self.stack = stack
        self.http = http
        self.run_id = run_id
        self.subject_ids = subject_ids

    def queue(self, count: int) -> list[int]:
        job_ids: list[int] = []
        while len(job_ids) < count:
            batch = self.subject_ids[: count - len(job_ids)]
            body = {"run_id": self.run_id, "subject_ids": batch, "method": "saliency"}
            response = self.http.post("/api/v1/attributions/batch", json=body)
            response.raise_for_status()
            job_ids += [m["job_id"] for m in response.json()["data"]]
        return job_ids

    def wait(self, job_ids: list[int], timeout: float = 600) -> list[dict]:
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.stack.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.stack.log(name)}")
            rows = self.http.get("/api/v1/jobs", params={"limit": 500}).json()["data"]
            mine = [r for r in rows if r["id"] in wanted]
            if len(mine) == len(wanted) and all(r["status"] in TERMINAL for r in mine):
                return mine
            time.sleep(0.2)
        raise TimeoutError(f"{len(wanted)} jobs did not finish in {timeout:.0f} s")

    def measure(self, jobs: int, workers: int) -> Phase:
        rows = self.wait(self.queue(jobs))
        start = min(_parse(r["created_at"]) for r in rows)
        end = max(_parse(r["finished_at"]) for r in rows)
        spread = Counter(r["worker"].rpartition(":")[0].partition("@")[0] for r in rows)
        failed = sum(r["status"] != "succeeded" for r in rows)
        each = [(_parse(r["finished_at"]) - _parse(r["started_at"])).total_seconds() for r in rows]
        span = (end - start).total_seconds()
        return Phase(workers, jobs, span, dict(spread), failed, statistics.median(each))


def _start_stack(root: Path):
    sys.path.insert(0, str(REPO))
    from tests.scale.stack import ComposeStack

    return ComposeStack(root, overrides={"ATTRIVUE_DEVICE": "cpu"})


def _wait_workers(http: httpx.Client, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(http.get("/api/v1/health").json()["workers"]) == count:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{count} workers did not appear in /health")


def run(jobs: int, root: Path) -> tuple[Phase, Phase]:
    from tests.conftest import clear_caches
    from tests.helpers import wait_for
    from tests.worker.conftest import PASSWORD, make_dataset

    with _start_stack(root) as stack:
        for key in [k for k in os.environ if k.startswith("ATTRIVUE_")]:
            del os.environ[key]
        os.environ.update(stack.environment("backend"))
        clear_caches()
        stack.start("backend")
        http = httpx.Client(base_url=stack.api_url, timeout=60)

        def api_up() -> bool:
            try:
                return http.get("/api/v1/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(api_up, timeout=120, interval=0.3, what="the API")
        stack.start("worker-gpu0")
        (root / "sources").mkdir()
        _, dataset_id = make_dataset(root / "sources")
        token = http.post("/api/v1/auth/login", json={"username": "r", "password": PASSWORD})
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        _wait_workers(http, 1)
        run_row = http.post(
            "/api/v1/runs", json={"dataset_id": dataset_id, "name": "b", "config": QUICK_RUN}
        ).json()
        subjects = http.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
        bench = Bench(stack, http, run_row["id"], [s["id"] for s in subjects])
        (trained,) = bench.wait([run_row["job_id"]])
        if trained["status"] != "succeeded":
            raise RuntimeError(f"the training run failed: {trained['error']}")
        _log("warming up worker-gpu0")
        bench.wait(bench.queue(2))
        _log(f"{jobs} jobs, one worker")
        one = bench.measure(jobs, workers=1)
        stack.start("worker-gpu1")
        _wait_workers(http, 2)
        _log("warming up worker-gpu1")
        for _ in range(10):  # until the new worker has run a job (its imports are done)
            rows = bench.wait(bench.queue(4))
            if any(r["worker"].startswith("gpu1@") for r in rows):
                break
        else:
            raise RuntimeError("worker-gpu1 took no job")
        _log(f"{jobs} jobs, two workers")
        two = bench.measure(jobs, workers=2)
        clear_caches()
        return one, two


def render(one: Phase, two: Phase) -> str:
    ratio = two.per_minute / one.per_minute
    rows = [
        f"| {p.workers} | {p.jobs} | {p.seconds:.1f} | {p.per_minute:.0f} | {p.median_job:.2f} | "
        + ", ".join(f"{k}: {v}" for k, v in sorted(p.per_worker.items()))
        + f" | {p.failed} |"
        for p in (one, two)
    ]
    return "\n".join(
        [
            "Short jobs: a saliency map of one 16x20x16 subject (load the checkpoint, one "
            "forward and backward pass, store the map), each its own job and Celery task on the "
            "gpu queue. The compose file's `worker-gpu0` and `worker-gpu1` (solo pool, "
            "concurrency 1, ATTRIVUE_DEVICE=cpu), API, PostgreSQL and Redis as processes; "
            "workers warmed up; time from the first job's creation to the last one's end.",
            "",
            "| GPU workers | jobs | seconds | jobs/min | median s per job | jobs per worker "
            "| failed |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Two workers against one: **{ratio:.2f}x** the jobs per minute, on a machine with "
            f"**{os.cpu_count()} CPU cores** shared by both workers, the API, PostgreSQL, "
            "Redis and this client (no GPU here, and other processes may load the machine: "
            "see the load average above). The workers compute on the same cores (torch uses "
            "every core in each worker), so each job takes longer with two workers (median s "
            "per job): the ratio shows the queue sharing jobs between workers, not what a "
            "second GPU adds. With one GPU per worker, the jobs of different workers do not "
            "compete for the device.",
        ]
    )


def machine_line() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, 1-minute load average "
        f"{os.getloadavg()[0]:.2f} at the start (everything on this machine)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_jobs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=36, help="jobs per measurement")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench.bench_jobs" + (f" {shlex.join(arguments)}" if arguments else "")
    machine = machine_line()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="attrivue-jobs-") as tmp:
        one, two = run(args.jobs, Path(tmp))
    body = "\n".join(
        [
            f"- Command: `{command}`",
            f"- Date: {date}",
            f"- Machine: {machine}",
            "",
            render(one, two),
        ]
    )
    out: Path = args.out
    text = out.read_text() if out.exists() else ""
    write_atomically(out, replace_section(text, SECTION, body, HEADING))
    _log(
        f"1 worker: {one.per_minute:.0f} jobs/min; 2 workers: {two.per_minute:.0f} jobs/min "
        f"({two.per_minute / one.per_minute:.2f}x); written to {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
