"""Load: concurrent readers, status pollers and uploaders against one real server.

``python -m bench.bench_load [--clients 50] [--uploaders 10] [--seconds 60] [--out docs/benchmarks.md]``

Starts the real server as ``bench.bench_status`` does (``serve --no-worker``: one uvicorn
process, SQLite, the filesystem broker, a temporary data directory), creates a project, a
dataset with one subject and a queued run, then for ``--seconds`` (after ``--warmup``):

- ``--clients`` clients send back-to-back GETs, cycling through the read and status routes a
  browser uses (job, run, lists of jobs, runs, datasets and subjects, a subject, the user,
  health), each with the bearer token (token lookup and membership check every time);
- ``--uploaders`` clients upload subjects one after another (a 16x20x16 .nii.gz each,
  validated, de-identified and stored: the full upload path).

Every answer other than the expected 2xx counts as an error, as does a transport failure.
The latencies (p50, p95, p99, max) and rates per kind go between ``<!-- load:begin -->`` and
``<!-- load:end -->`` in the output file, with the command, date and machine. Clients and
server share the machine: the clients' CPU time is part of the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from bench.bench_status import DEFAULT_OUT, INTRO, machine_line, nifti_volume
from bench.bench_status import queue_a_run as _queue_a_run
from bench.bench_upload import start_server, stop_server
from bench.docs import replace_section, write_atomically

SECTION = "load"
HEADING = "Load: readers, status pollers and uploaders at once"


def _log(message: str) -> None:
    print(f"[bench_load] {message}", file=sys.stderr, flush=True)


@dataclass
class Kind:
    """The outcomes of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def record(self, seconds: float, problem: str | None) -> None:
        if problem is None:
            self.latencies.append(seconds)
        else:
            self.errors[problem] += 1

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")


@dataclass
class Result:
    clients: int
    uploaders: int
    seconds: float
    kinds: dict[str, Kind]

    @property
    def errors(self) -> int:
        return sum(sum(k.errors.values()) for k in self.kinds.values())


def read_paths(dataset_id: int, subject_id: int, run_id: int, job_id: int) -> list[tuple[str, str]]:
    """(kind, path) of the routes the readers cycle through."""
    return [
        ("status", f"/api/v1/jobs/{job_id}"),
        ("status", f"/api/v1/runs/{run_id}"),
        ("status", "/api/v1/jobs"),
        ("status", "/api/v1/health"),
        ("read", "/api/v1/runs"),
        ("read", "/api/v1/datasets"),
        ("read", f"/api/v1/datasets/{dataset_id}/subjects"),
        ("read", f"/api/v1/subjects/{subject_id}"),
        ("read", "/api/v1/projects"),
        ("read", "/api/v1/auth/me"),
    ]


async def _timed(
    kinds: dict[str, Kind], kind: str, counted: bool, call: Callable[[], Awaitable[httpx.Response]]
) -> None:
    sent = time.perf_counter()
    problem: str | None
    try:
        response = await call()
        problem = None if response.is_success else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        problem = type(exc).__name__
    if counted:
        kinds[kind].record(time.perf_counter() - sent, problem)


async def _reader(
    client: httpx.AsyncClient,
    paths: Sequence[tuple[str, str]],
    offset: int,
    start: float,
    stop: float,
    kinds: dict[str, Kind],
) -> None:
    i = offset
    while (now := time.perf_counter()) < stop:
        kind, path = paths[i % len(paths)]
        i += 1
        await _timed(kinds, kind, now >= start, partial(client.get, path))


async def _uploader(
    client: httpx.AsyncClient,
    dataset_id: int,
    number: int,
    volume: bytes,
    start: float,
    stop: float,
    kinds: dict[str, Kind],
) -> None:
    i = 0
    while (now := time.perf_counter()) < stop:
        i += 1

        def send(key: str = f"u{number}-{i}", label: str = str(i % 2)) -> Awaitable[httpx.Response]:
            return client.post(
                f"/api/v1/datasets/{dataset_id}/subjects",
                data={"subject_key": key, "label": label, "split": "train"},
                files={"image": (f"{key}.nii.gz", volume)},
            )

        await _timed(kinds, "upload", now >= start, send)


async def measure(
    base: str,
    token: str,
    ids: tuple[int, int, int, int],
    *,
    clients: int,
    uploaders: int,
    seconds: float,
    warmup: float,
) -> Result:
    kinds = {name: Kind() for name in ("status", "read", "upload")}
    dataset_id = ids[0]
    paths = read_paths(*ids)
    volume = nifti_volume()
    total = clients + uploaders
    limits = httpx.Limits(max_connections=total, max_keepalive_connections=total)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60
    ) as client:
        start = time.perf_counter() + warmup
        stop = start + seconds
        tasks = [_reader(client, paths, n, start, stop, kinds) for n in range(clients)]
        tasks += [
            _uploader(client, dataset_id, n, volume, start, stop, kinds) for n in range(uploaders)
        ]
        await asyncio.gather(*tasks)
    return Result(clients=clients, uploaders=uploaders, seconds=seconds, kinds=kinds)


def _ids(base: str, token: str, job_id: int) -> tuple[int, int, int, int]:
    """(dataset, subject, run, job) ids of what ``queue_a_run`` created."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        run = client.get("/api/v1/runs").json()["data"][0]
        subjects = client.get(f"/api/v1/datasets/{run['dataset_id']}/subjects").json()
        return run["dataset_id"], subjects["data"][0]["id"], run["id"], job_id


def render(result: Result) -> str:
    lines = [
        f"{result.clients} clients cycle through 10 read and status routes (bearer token on "
        f"every request) while {result.uploaders} clients upload subjects one after another "
        f"(16x20x16 .nii.gz, validated, de-identified, stored), for {result.seconds:.0f} s "
        "after a warm-up; one uvicorn process, SQLite, no worker.",
        "",
        "| requests | clients | count | requests/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, who in (("status", "readers"), ("read", "readers"), ("upload", "uploaders")):
        kind = result.kinds[name]
        worst = max(kind.latencies) * 1000 if kind.latencies else float("nan")
        count = result.clients if who == "readers" else result.uploaders
        errors = ", ".join(f"{n} x {p}" for p, n in kind.errors.items()) or "0"
        lines.append(
            f"| {name} | {count} {who} | {kind.requests} | {kind.requests / result.seconds:.1f} "
            f"| {kind.ms(50):.1f} | {kind.ms(95):.1f} | {kind.ms(99):.1f} | {worst:.1f} "
            f"| {errors} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent readers")
    parser.add_argument("--uploaders", type=int, default=10, help="concurrent uploaders")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not counted")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench.bench_load" + (f" {shlex.join(arguments)}" if arguments else "")
    machine = machine_line()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="attrivue-load-") as tmp:
        server = start_server(Path(tmp) / "data", None, Path(tmp) / "server.log")
        base = server.base_url
        try:
            token, job_id = _queue_a_run(base)
            ids = _ids(base, token, job_id)
            _log(f"{args.clients} readers and {args.uploaders} uploaders for {args.seconds:.0f} s")
            result = asyncio.run(
                measure(
                    base,
                    token,
                    ids,
                    clients=args.clients,
                    uploaders=args.uploaders,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
            )
            alive = server.process.poll() is None
        finally:
            stop_server(server)
        server_log = (Path(tmp) / "server.log").read_text(errors="replace")
    tracebacks = server_log.count("Traceback")
    if result.errors or tracebacks:
        _log("server log (last 60 lines):\n" + "\n".join(server_log.splitlines()[-60:]))
    body = "\n".join(
        [
            f"- Command: `{command}`",
            f"- Date: {date}",
            f"- Machine: {machine}",
            f"- Errors: {result.errors}; the server {'stayed up' if alive else 'DIED'}, "
            f"its log holds {tracebacks} tracebacks",
            "",
            render(result),
        ]
    )
    out: Path = args.out
    text = out.read_text() if out.exists() else INTRO
    write_atomically(out, replace_section(text, SECTION, body, HEADING))
    for name, kind in result.kinds.items():
        _log(
            f"{name}: {kind.requests} requests, p50 {kind.ms(50):.1f} ms, p95 {kind.ms(95):.1f} "
            f"ms, p99 {kind.ms(99):.1f} ms, errors {dict(kind.errors)}"
        )
    _log(f"written to {out}")
    return 0 if result.errors == 0 and alive else 1


if __name__ == "__main__":
    raise SystemExit(main())
