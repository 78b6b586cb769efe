"""Job-status latency under concurrent clients: GET /api/v1/jobs/{id} polled by 50 at once.

``python -m bench.bench_status [--clients 50] [--seconds 30] [--out docs/benchmarks.md]``

Starts the real server (``python -m backend.cli serve --no-worker``: uvicorn, one process,
SQLite and the filesystem broker in a temporary data directory), creates a user, a project, a
dataset with one subject and a run through the API (its job stays queued: there is no
worker), then ``--clients`` clients (asyncio tasks sharing one httpx connection pool, one
connection each) poll ``getJob`` back to back for ``--seconds``, after a warm-up of
``--warmup`` seconds that is not counted. Every request carries the bearer token, so each one
resolves the token, reads the job and checks project membership, as a browser's would.

The result goes between ``<!-- status:begin -->`` and ``<!-- status:end -->`` in the output
file (other sections are kept), with the command, date and machine. Client and server share
the machine, so the client's own CPU time is part of the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import io
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

from bench.bench_upload import PASSWORD, start_server, stop_server
from bench.docs import cpu_model, replace_section, write_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "status"
HEADING = "Job status: latency of getJob under concurrent clients"
INTRO = """# Benchmarks

Every timing claim of the project lives on this page. The sections between the markers are
written by the commands in `bench/`; re-running one replaces its section.
"""


def _log(message: str) -> None:
    print(f"[bench_status] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the server


def nifti_volume() -> bytes:
    """A small gzipped NIfTI volume of noise (16x20x16), the same each call."""
    image = nib.Nifti1Image(np.random.default_rng(0).normal(size=(16, 20, 16)), np.eye(4))
    return gzip.compress(image.to_bytes())


def queue_a_run(base: str) -> tuple[str, int]:
    """Log in, create a project, a dataset with one subject and a run; its token and job id."""
    token = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
    ).json()["access_token"]
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        project = client.post("/api/v1/projects", json={"name": "bench"}).json()["id"]
        dataset = client.post("/api/v1/datasets", json={"name": "bench", "project_id": project})
        dataset_id = dataset.json()["id"]
        subject = client.post(
            f"/api/v1/datasets/{dataset_id}/subjects",
            data={"subject_key": "s0", "label": "0"},
            files={"image": ("s0.nii.gz", io.BytesIO(nifti_volume()))},
        )
        subject.raise_for_status()
        run = client.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "bench"})
        run.raise_for_status()
        return token, int(run.json()["job_id"])


# --------------------------------------------------------------------------- the clients


@dataclass
class Result:
    clients: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def requests_per_second(self) -> float:
        return (len(self.latencies) + self.errors) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


async def _poll(
    client: httpx.AsyncClient, path: str, start: float, stop: float, result: Result
) -> None:
    while (sent := time.perf_counter()) < stop:
        try:
            response = await client.get(path)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if sent >= start:
            if ok:
                result.latencies.append(time.perf_counter() - sent)
            else:
                result.errors += 1


async def measure(
    base: str, token: str, job_id: int, *, clients: int, seconds: float, warmup: float
) -> Result:
    result = Result(clients=clients, seconds=seconds, latencies=[], errors=0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=30,
    ) as client:
        start = time.perf_counter() + warmup
        stop = start + seconds
        path = f"/api/v1/jobs/{job_id}"
        await asyncio.gather(*(_poll(client, path, start, stop, result) for _ in range(clients)))
    return result


# --------------------------------------------------------------------------- the report


def render(result: Result) -> str:
    ms = [result.percentile(q) * 1000 for q in (50, 90, 99)]
    worst = max(result.latencies) * 1000 if result.latencies else float("nan")
    return "\n".join(
        [
            f"{result.clients} clients poll `GET /api/v1/jobs/{{id}}` (getJob: bearer token, "
            f"membership check, one job row) back to back for {result.seconds:.0f} s after a "
            "warm-up; one uvicorn process, SQLite, the job queued (no worker).",
            "",
            "| clients | requests | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
            "|---|---|---|---|---|---|---|---|",
            f"| {result.clients} | {len(result.latencies) + result.errors} | "
            f"{result.requests_per_second:.0f} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | "
            f"{worst:.1f} | {result.errors} |",
        ]
    )


def machine_line() -> str:
    model = cpu_model()
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, 1-minute load average "
        f"{os.getloadavg()[0]:.2f} at the start (client and server on this machine)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_status", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent pollers")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not counted")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench.bench_status" + (f" {shlex.join(arguments)}" if arguments else "")
    machine = machine_line()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="attrivue-status-") as tmp:
        server = start_server(Path(tmp) / "data", None, Path(tmp) / "server.log")
        base = server.base_url
        try:
            token, job_id = queue_a_run(base)
            _log(f"{args.clients} clients poll job {job_id} for {args.seconds:.0f} s")
            result = asyncio.run(
                measure(
                    base,
                    token,
                    job_id,
                    clients=args.clients,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
            )
        finally:
            stop_server(server)
    body = "\n".join(
        [f"- Command: `{command}`", f"- Date: {date}", f"- Machine: {machine}", "", render(result)]
    )
    out: Path = args.out
    text = out.read_text() if out.exists() else INTRO
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, replace_section(text, SECTION, body, HEADING))
    _log(
        f"{result.requests_per_second:.0f} requests/s, p50 {result.percentile(50) * 1000:.1f} ms, "
        f"p99 {result.percentile(99) * 1000:.1f} ms, {result.errors} errors; written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
