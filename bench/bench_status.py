"""Job-status throughput and latency under concurrent clients, against a bare FastAPI route.

``python -m bench.bench_status [--clients 50] [--seconds 4] [--rounds 6] [--workers 2]
[--postgres URL] [--out docs/benchmarks.md]``

Starts the real server (``python -m backend.cli serve --no-worker``: uvicorn, SQLite and the
filesystem broker in a temporary data directory), creates a user, a project, a dataset with one
subject and a run through the API (its job stays queued: there is no worker). Then, on the same
database, the baseline: ``bench.bare_status_app``, a bare FastAPI route that reads the same job
row with SQLAlchemy (same engine settings, same uvicorn options, no authentication). Each of
the two is served by one process and by ``--workers`` processes (``attrivue serve --workers``),
four servers in all, running side by side.

``--clients`` clients (asyncio tasks sharing one httpx connection pool, one connection each)
poll one server back to back for ``--seconds`` after a warm-up of ``--warmup`` seconds that is
not counted; every server is measured once per round, ``--rounds`` rounds, the order reversed
every other round, so that a change of the machine's load hits all of them. ``getJob`` requests
carry the bearer token, so each one resolves the token, reads the job and checks project
membership, as a browser's would. With ``--postgres`` (a server URL whose role may create
databases) the same four servers are measured again on a scratch database there (the
distributed layout's database), which is dropped at the end.

The result goes between ``<!-- status:begin -->`` and ``<!-- status:end -->`` in the output
file (other sections are kept), with the command, date, machine and load averages. Client and
servers share the machine, so the client's own CPU time is part of the latencies.
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
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
from sqlalchemy import create_engine, make_url, text

from bench.bench_upload import PASSWORD, Server, stop_server
from bench.docs import cpu_model, replace_section, write_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "status"
HEADING = "Job status: getJob against a bare FastAPI route, one and several API processes"
INTRO = """# Benchmarks

Every timing claim of the project lives on this page. The sections between the markers are
written by the commands in `bench/`; re-running one replaces its section.
"""
GOAL_THROUGHPUT = 0.7  # getJob's requests/s at least this times the bare route's
GOAL_P99 = 1.3  # getJob's p99 at most this times the bare route's


def _log(message: str) -> None:
    print(f"[bench_status] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the servers


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {**os.environ, "ATTRIVUE_DATA_DIR": str(data_dir), "ATTRIVUE_ENVIRONMENT": "test"}
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL", "ATTRIVUE_API_WORKERS"):
        env.pop(name, None)
    if database_url:
        env["ATTRIVUE_DATABASE_URL"] = database_url
    return env


def _spawn(argv: list[str], env: dict[str, str], log: Path, health: str, port: int) -> Server:
    """Start a server process and wait until ``health`` answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(server.base_url + health, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(server)
    raise TimeoutError("the server did not answer within 120 s")


@dataclass
class Target:
    """One server under test and the path its clients poll."""

    label: str
    app: str  # "getJob" or "bare"
    workers: int
    server: Server
    path: str
    headers: dict[str, str]


@dataclass
class Result:
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rounds: list[tuple[float, float]] = field(default_factory=list)  # requests/s, p99 s
    cpu_seconds: float = 0.0  # the server's processes, over the whole round (warm-up too)
    cpu_requests: int = 0  # the requests answered meanwhile (warm-up too)

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds / self.cpu_requests * 1000 if self.cpu_requests else float("nan")

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")


@contextmanager
def scratch_postgres(url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of ``url``; its URL. Dropped at the end."""
    name = f"attrivue_bench_status_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def servers(tmp: Path, database_url: str | None, workers: int) -> Iterator[list[Target]]:
    """The four servers on one database: getJob and the bare route, 1 and ``workers`` processes."""
    data = tmp / "data"
    env = _environment(data, database_url)
    cli = [sys.executable, "-m", "backend.cli"]
    subprocess.run(
        [*cli, "create-user", "bench", "--role", "admin", "--password", PASSWORD],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    started: list[Server] = []
    try:
        targets = []
        token = ""
        job_id = 0
        for count in sorted({1, workers}):
            port = _free_port()
            argv = [*cli, "serve", "--no-worker", "--port", str(port), "--workers", str(count)]
            log = tmp / f"serve-{count}.log"
            api = _spawn(argv, env, log, "/api/v1/health", port)
            started.append(api)
            if not token:
                token, job_id = queue_a_run(api.base_url)
            port = _free_port()
            argv = [sys.executable, "-m", "bench.bare_status_app", "--port", str(port)]
            argv += ["--workers", str(count)]
            bare = _spawn(argv, env, tmp / f"bare-{count}.log", "/bare/health", port)
            started.append(bare)
            auth = {"Authorization": f"Bearer {token}"}
            targets += [
                Target(
                    f"bare route, {count} proc.", "bare", count, bare, f"/bare/jobs/{job_id}", {}
                ),
                Target(
                    f"getJob, {count} proc.", "getJob", count, api, f"/api/v1/jobs/{job_id}", auth
                ),
            ]
        for target in targets:  # every answer is the job, before anything is timed
            answer = httpx.get(target.server.base_url + target.path, headers=target.headers)
            answer.raise_for_status()
            assert answer.json()["id"] == job_id, answer.text
        yield targets
    finally:
        for server in started:
            stop_server(server)


# --------------------------------------------------------------------------- the clients


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server process and its live children (uvicorn's workers).

    Unlike throughput, it hardly depends on what else loads the machine.
    """
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return total


async def _poll(
    client: httpx.AsyncClient, path: str, start: float, stop: float, result: Result
) -> None:
    while (sent := time.perf_counter()) < stop:
        try:
            response = await client.get(path)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        result.cpu_requests += 1
        if sent >= start:
            if ok:
                result.latencies.append(time.perf_counter() - sent)
            else:
                result.errors += 1


async def measure(target: Target, *, clients: int, seconds: float, warmup: float) -> Result:
    """One round: ``clients`` pollers on ``target`` for ``seconds`` after ``warmup``."""
    result = Result(clients=clients, seconds=seconds)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=target.server.base_url, headers=target.headers, limits=limits, timeout=30
    ) as client:
        start = time.perf_counter() + warmup
        stop = start + seconds
        cpu = server_cpu_seconds(target.server.process.pid)
        await asyncio.gather(
            *(_poll(client, target.path, start, stop, result) for _ in range(clients))
        )
        result.cpu_seconds = server_cpu_seconds(target.server.process.pid) - cpu
    return result


def measure_all(
    targets: list[Target], *, clients: int, seconds: float, warmup: float, rounds: int
) -> dict[str, Result]:
    """Every target once per round, the order reversed every other round; results pooled."""
    pooled = {t.label: Result(clients=clients) for t in targets}
    for number in range(rounds):
        order = targets if number % 2 == 0 else targets[::-1]
        for target in order:
            one = asyncio.run(measure(target, clients=clients, seconds=seconds, warmup=warmup))
            total = pooled[target.label]
            total.seconds += one.seconds
            total.latencies += one.latencies
            total.errors += one.errors
            total.cpu_seconds += one.cpu_seconds
            total.cpu_requests += one.cpu_requests
            total.rounds.append((one.requests_per_second, one.percentile(99)))
            _log(
                f"round {number + 1}/{rounds} {target.label}: {one.requests_per_second:.0f} "
                f"requests/s, p99 {one.percentile(99) * 1000:.1f} ms, {one.errors} errors "
                f"(load {os.getloadavg()[0]:.2f})"
            )
    return pooled


# --------------------------------------------------------------------------- the report


def _table(results: dict[str, Result]) -> list[str]:
    lines = [
        "| server | requests | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU ms per request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, result in results.items():
        ms = [result.percentile(q) * 1000 for q in (50, 90, 99)]
        worst = max(result.latencies) * 1000 if result.latencies else float("nan")
        lines.append(
            f"| {label} | {result.requests} | {result.requests_per_second:.0f} | {ms[0]:.1f} | "
            f"{ms[1]:.1f} | {ms[2]:.1f} | {worst:.1f} | {result.errors} | "
            f"{result.cpu_ms_per_request:.2f} |"
        )
    return lines


def _ratios(results: dict[str, Result], workers: int) -> list[str]:
    lines = [
        "| processes | getJob / bare requests/s | getJob / bare p99 | median of the rounds "
        "| per round (requests/s; p99) | goal (>= 0.7; <= 1.3) | bare / getJob server CPU per "
        "request |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in sorted({1, workers}):
        bare, api = results[f"bare route, {count} proc."], results[f"getJob, {count} proc."]
        rps = api.requests_per_second / bare.requests_per_second
        p99 = api.percentile(99) / bare.percentile(99)
        pairs = [(a[0] / b[0], a[1] / b[1]) for a, b in zip(api.rounds, bare.rounds, strict=True)]
        per_round = ", ".join(f"{r:.2f}; {p:.2f}" for r, p in pairs)
        median = (
            f"{float(np.median([r for r, _ in pairs])):.2f}x; "
            f"{float(np.median([p for _, p in pairs])):.2f}x"
        )
        met = rps >= GOAL_THROUGHPUT and p99 <= GOAL_P99
        cpu = bare.cpu_ms_per_request / api.cpu_ms_per_request
        lines.append(
            f"| {count} | **{rps:.2f}x** | **{p99:.2f}x** | {median} | {per_round} | "
            f"{'met' if met else 'not met'} | {cpu:.2f} |"
        )
    if workers > 1:
        one, many = results["getJob, 1 proc."], results[f"getJob, {workers} proc."]
        lines += [
            "",
            f"getJob with {workers} API processes against 1: "
            f"**{many.requests_per_second / one.requests_per_second:.2f}x** the requests/s, "
            f"p99 **{many.percentile(99) / one.percentile(99):.2f}x**.",
        ]
    return lines


def render(
    results: dict[str, dict[str, Result]],
    *,
    clients: int,
    seconds: float,
    rounds: int,
    workers: int,
) -> str:
    lines = [
        f"{clients} clients poll one server at a time back to back, {rounds} rounds of "
        f"{seconds:.0f} s per server after a warm-up (the order reversed every other round, "
        "results pooled over the rounds). `getJob` is `GET /api/v1/jobs/{id}` on `attrivue serve "
        "--no-worker --workers N` (bearer token, membership check, the job row; the job queued, "
        "no worker). The bare route is `bench/bare_status_app.py`: FastAPI, one SQLAlchemy "
        "`session.get` of the same job row, no authentication, same engine and uvicorn options. "
        "Server CPU ms per request: the CPU time (user + system, from /proc) of the server's "
        "processes during its rounds, warm-ups included, over the requests answered meanwhile; "
        "bare / getJob of it is the throughput ratio the servers' own cost allows when the "
        "CPU is the limit, and depends far less on what else runs on the machine than "
        "requests/s and latencies do (with a load average above the core count, these move "
        "by 2x from one round to the next: see the per-round ratios).",
    ]
    for database, table in results.items():
        lines += ["", f"**{database}**", "", *_table(table), "", *_ratios(table, workers)]
    return "\n".join(lines)


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
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds over the servers")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--workers", type=int, default=2, help="API processes against 1")
    parser.add_argument(
        "--postgres", help="also measure on a scratch database of this PostgreSQL server"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    return parser.parse_args(argv)


def _redacted(arguments: list[str]) -> list[str]:
    """The command line as recorded: a PostgreSQL URL without its password."""
    shown = list(arguments)
    for i, value in enumerate(shown):
        if value.startswith("postgresql"):
            shown[i] = make_url(value).render_as_string(hide_password=True)
        elif value.startswith("--postgres="):
            url = value.split("=", 1)[1]
            shown[i] = "--postgres=" + make_url(url).render_as_string(hide_password=True)
    return shown


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench.bench_status" + (
        f" {shlex.join(_redacted(arguments))}" if arguments else ""
    )
    machine = machine_line()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    databases: list[tuple[str, str | None]] = [("SQLite (the default layout)", None)]
    results: dict[str, dict[str, Result]] = {}
    for name, url in databases + ([("PostgreSQL", args.postgres)] if args.postgres else []):
        with tempfile.TemporaryDirectory(prefix="attrivue-status-") as tmp:
            with (
                scratch_postgres(url) if url else _nothing() as database_url,
                servers(Path(tmp), database_url, args.workers) as targets,
            ):
                _log(f"{name}: {len(targets)} servers, {args.clients} clients")
                results[name] = measure_all(
                    targets,
                    clients=args.clients,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    rounds=args.rounds,
                )
    loads = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    body = "\n".join(
        [
            f"- Command: `{command}`",
            f"- Date: {date}",
            f"- Machine: {machine}; load average at the end (1 / 5 / 15 min) {loads}",
            "",
            render(
                results,
                clients=args.clients,
                seconds=args.seconds,
                rounds=args.rounds,
                workers=args.workers,
            ),
        ]
    )
    out: Path = args.out
    text_ = out.read_text() if out.exists() else INTRO
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, replace_section(text_, SECTION, body, HEADING))
    _log(f"written to {out}")
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    raise SystemExit(main())
