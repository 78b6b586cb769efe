"""Upload throughput and the server's memory: a ~1 GB NIfTI through the chunked upload API.

``python -m bench.bench_upload [--quick] [--out docs/benchmarks.md]``

Starts the real server (``python -m backend.cli serve --no-worker``) on a temporary data
directory, generates a float64 NIfTI volume on disk slab by slab (512 x 512 x 512: 1 GiB, the
largest volume the validator accepts), and streams it from disk through ``createUpload`` and
``appendUpload`` in chunks, the way a resumable client does. A thread samples the server's
resident memory (``/proc/PID/status``: VmRSS, and RssAnon, its anonymous part, for the server
and its children) every 20 ms. The import of the uploaded file into a dataset
(``importSubjects``: validation, de-identification, storage, the computed brain mask) is
measured the same way, in the same run: its throughput is given as a ratio to the upload's.

The result goes between ``<!-- upload:begin -->`` and ``<!-- upload:end -->`` in the output
file (other sections are kept), with the command, date and machine. ``--quick`` uploads a
2 MiB volume: it checks that the command works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np

from bench.docs import cpu_model, replace_section, write_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "upload"
HEADING = "Upload: chunked upload and import throughput, server memory"
INTRO = """# Benchmarks

Every timing claim of the project lives on this page. The sections between the markers are
written by `python -m bench` (see `bench/`); re-running it replaces them. Tests never assert
timings; `tests/test_bench.py` only checks that the command writes its tables.
"""
MIB = 1024**2
PASSWORD = "bench-password-123"
MEMORY_GOAL_MB = 100
IMPORT_RATIO_GOAL = 0.6  # the import's throughput over the upload's, same run


def _log(message: str) -> None:
    print(f"[bench_upload] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the volume


def write_volume(path: Path, shape: tuple[int, int, int], *, seed: int = 0) -> int:
    """Write a float64 NIfTI-1 of random values slab by slab; returns its size in bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float64)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    rng = np.random.default_rng(seed)
    per_slab = max(1, (32 * MIB) // (shape[0] * shape[1] * 8))
    with path.open("wb") as out:
        header.write_to(out)
        out.write(bytes(int(header["vox_offset"]) - out.tell()))
        for start in range(0, shape[2], per_slab):
            depth = min(per_slab, shape[2] - start)
            slab = rng.standard_normal((shape[0], shape[1], depth))
            out.write(slab.tobytes(order="F"))
    return path.stat().st_size


# --------------------------------------------------------------------------- memory


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) in kB, summed over the process and its descendants."""
    rss = anon = 0
    for p in _descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon += int(line.split()[1])
        except OSError:
            continue
    return rss, anon


class MemorySampler:
    """Samples a process tree's memory in a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peak = (0, 0)
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, anon = _memory_kb(self.pid)
            with self._lock:
                self._peak = (max(self._peak[0], rss), max(self._peak[1], anon))
                self.samples += 1
            time.sleep(self.interval)

    def reset(self) -> tuple[int, int]:
        now = _memory_kb(self.pid)
        with self._lock:
            self._peak = now
        return now

    def peak(self) -> tuple[int, int]:
        with self._lock:
            return self._peak


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


def start_server(
    data_dir: Path, max_upload_bytes: int | None, log: Path, *, worker: bool = False
) -> Server:
    """``attrivue serve`` on ``data_dir`` with a user "bench"; with ``worker``, its Celery worker.

    ``max_upload_bytes`` ``None`` keeps the setting's default. Every benchmark that needs a live
    server starts it here.
    """
    env = {**os.environ, "ATTRIVUE_DATA_DIR": str(data_dir), "ATTRIVUE_ENVIRONMENT": "test"}
    if max_upload_bytes is not None:
        env["ATTRIVUE_MAX_UPLOAD_BYTES"] = str(max_upload_bytes)
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        env.pop(name, None)
    cli = [sys.executable, "-m", "backend.cli"]
    subprocess.run(
        [*cli, "create-user", "bench", "--role", "admin", "--password", PASSWORD],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*cli, "serve", *([] if worker else ["--no-worker"]), "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(f"{server.base_url}/api/v1/health", timeout=2)
            return server
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_server(server)
    raise TimeoutError("the server did not answer within 120 s")


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# --------------------------------------------------------------------------- the client


def _read(path: Path, start: int, length: int, piece: int = MIB) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(start)
        while length > 0:
            data = fh.read(min(piece, length))
            if not data:
                raise OSError(f"{path} ended early")
            length -= len(data)
            yield data


def upload_file(client: httpx.Client, project_id: int, path: Path, name: str, chunk: int) -> str:
    """Send a file through the chunked upload API, streaming each chunk from disk."""
    size = path.stat().st_size
    created = client.post(
        "/api/v1/uploads", json={"project_id": project_id, "filename": name, "size": size}
    )
    created.raise_for_status()
    upload_id = str(created.json()["id"])
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        resp = client.put(
            f"/api/v1/uploads/{upload_id}",
            content=_read(path, offset, length),
            headers={
                "Content-Range": f"bytes {offset}-{offset + length - 1}/{size}",
                "Content-Length": str(length),
                "Content-Type": "application/octet-stream",
            },
        )
        resp.raise_for_status()
        offset = int(resp.json()["received"])  # a resuming client trusts the server's count
    return upload_id


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    file_bytes: int
    shape: tuple[int, int, int]
    chunk_bytes: int
    upload_seconds: float
    baseline_kb: tuple[int, int]
    upload_peak_kb: tuple[int, int]
    import_seconds: float | None
    import_peak_kb: tuple[int, int] | None
    samples: int
    import_baseline_kb: tuple[int, int] | None = None

    @property
    def mb_per_s(self) -> float:
        return self.file_bytes / 1e6 / self.upload_seconds


def run(*, shape: tuple[int, int, int], chunk: int, do_import: bool, workdir: Path) -> Result:
    volume = workdir / "volume.nii"
    _log(f"writing a {shape} float64 volume to {volume}")
    size = write_volume(volume, shape)
    server = start_server(workdir / "data", max(2 * size, 2 * 1024**3), workdir / "server.log")
    try:
        token = httpx.post(
            f"{server.base_url}/api/v1/auth/login",
            json={"username": "bench", "password": PASSWORD},
        ).json()["access_token"]
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=600
        ) as client:
            project = client.post("/api/v1/projects", json={"name": "bench"}).json()["id"]
            dataset = client.post(
                "/api/v1/datasets", json={"name": "bench", "project_id": project}
            ).json()["id"]
            manifest = workdir / "manifest.csv"
            manifest.write_text("subject,image,label\nbench,volume.nii,0\n")
            # Warm-up: every code path of the measured calls runs once before the baseline.
            upload_file(client, project, manifest, "warmup.csv", chunk)
            with MemorySampler(server.process.pid) as sampler:
                baseline = sampler.reset()
                _log(f"uploading {size / 1e6:.0f} MB in chunks of {_size(chunk)}")
                started = time.perf_counter()
                upload_id = upload_file(client, project, volume, "volume.nii", chunk)
                upload_seconds = time.perf_counter() - started
                upload_peak = sampler.peak()
                import_seconds = import_peak = import_baseline = None
                if do_import:
                    manifest_id = upload_file(client, project, manifest, "manifest.csv", chunk)
                    import_baseline = sampler.reset()
                    _log(
                        "importing the uploaded volume (validation, de-identification, brain mask)"
                    )
                    started = time.perf_counter()
                    resp = client.post(
                        f"/api/v1/datasets/{dataset}/imports",
                        json={"upload_ids": [upload_id, manifest_id]},
                    )
                    import_seconds = time.perf_counter() - started
                    if resp.status_code != 201:
                        raise RuntimeError(f"import failed: {resp.status_code} {resp.text}")
                    import_peak = sampler.peak()
                samples = sampler.samples
    finally:
        stop_server(server)
    return Result(
        size,
        shape,
        chunk,
        upload_seconds,
        baseline,
        upload_peak,
        import_seconds,
        import_peak,
        samples,
        import_baseline,
    )


# --------------------------------------------------------------------------- the markdown


def _size(n: int) -> str:
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def render(result: Result) -> str:
    def mb(kb: int) -> str:
        return f"{kb / 1024:.0f} MiB"

    def growth(peak: tuple[int, int]) -> tuple[float, float]:
        return (peak[0] - result.baseline_kb[0]) / 1024, (peak[1] - result.baseline_kb[1]) / 1024

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    up_rss, up_anon = growth(result.upload_peak_kb)
    lines = [
        f"A {result.shape[0]}x{result.shape[1]}x{result.shape[2]} float64 NIfTI "
        f"({result.file_bytes / 1e6:,.0f} MB, uncompressed, random values) streamed from disk "
        f"through `createUpload` + `appendUpload` in chunks of {_size(result.chunk_bytes)} "
        "(client and server on the same machine, loopback), then imported into a dataset "
        "(`importSubjects` with the upload and a one-row manifest: validation of every voxel, "
        "de-identified header, the voxels streamed into the stored .nii.gz (ISA-L gzip, level 1), "
        "the brain mask computed and stored). Both phases run one after the other on the same "
        "server in this run; the ratio is the import's throughput over the upload's. Memory: "
        f"the server process tree from `/proc/PID/status`, {result.samples} samples at 20 ms; "
        "growth is the peak minus the value just before the phase (after a warm-up upload). "
        "RssAnon is the anonymous part of VmRSS (heap), without mapped files.",
        "",
        "| phase | time | throughput | ratio to upload | peak VmRSS (growth) "
        "| peak RssAnon (growth) |",
        "|---|---|---|---|---|---|",
        f"| baseline | | | | {mb(result.baseline_kb[0])} | {mb(result.baseline_kb[1])} |",
        f"| upload | {result.upload_seconds:.1f} s | {result.mb_per_s:.0f} MB/s | 1 | "
        f"{mb(result.upload_peak_kb[0])} (+{up_rss:.1f} MiB) | "
        f"{mb(result.upload_peak_kb[1])} (+{up_anon:.1f} MiB) |",
    ]
    goals = [
        f"- the server's memory grows by less than {MEMORY_GOAL_MB} MB during the upload: "
        f"{met(up_rss * MIB / 1e6 < MEMORY_GOAL_MB)} (+{up_rss:.1f} MiB VmRSS)"
    ]
    if (
        result.import_seconds is not None
        and result.import_peak_kb is not None
        and result.import_baseline_kb is not None
    ):
        im_rss = (result.import_peak_kb[0] - result.import_baseline_kb[0]) / 1024
        im_anon = (result.import_peak_kb[1] - result.import_baseline_kb[1]) / 1024
        rate = result.file_bytes / 1e6 / result.import_seconds
        ratio = rate / result.mb_per_s
        lines.append(
            f"| import (validate, de-identify, store, brain mask) | "
            f"{result.import_seconds:.1f} s | {rate:.0f} MB/s | {ratio:.2f} | "
            f"{mb(result.import_peak_kb[0])} (+{im_rss:.1f} MiB) | "
            f"{mb(result.import_peak_kb[1])} (+{im_anon:.1f} MiB) |"
        )
        goals += [
            f"- the import runs at least {IMPORT_RATIO_GOAL:.0%} of the upload's throughput: "
            f"{met(ratio >= IMPORT_RATIO_GOAL)} ({ratio:.2f})",
            f"- the server's memory grows by less than {MEMORY_GOAL_MB} MB during the import: "
            f"{met(im_rss * MIB / 1e6 < MEMORY_GOAL_MB)} (+{im_rss:.1f} MiB VmRSS, "
            f"{im_rss * MIB / 1e6:.1f} MB)",
        ]
    lines += ["", "Goals:", "", *goals, "", "MB = 10^6 bytes, MiB = 2^20 bytes."]
    return "\n".join(lines) + "\n"


def machine_line() -> str:
    model = cpu_model()
    try:
        total = Path("/proc/meminfo").read_text().split()[1]
        memory = f"{int(total) / 1024**2:.0f} GiB RAM"
    except (OSError, IndexError, ValueError):
        memory = "RAM unknown"
    load = os.getloadavg()[0]
    return (
        f"{model}, {os.cpu_count()} cores, {memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, 1-minute load average {load:.2f} at the start"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_upload", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a 2 MiB volume: a smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    parser.add_argument("--depth", type=int, default=512, help="slices of 512x512 float64")
    parser.add_argument("--chunk-mib", type=int, default=64, help="bytes per appendUpload")
    parser.add_argument("--no-import", action="store_true", help="measure the upload only")
    parser.add_argument("--workdir", type=Path, help="where the volume and server data go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench.bench_upload" + (f" {shlex.join(arguments)}" if arguments else "")
    shape = (64, 64, 64) if args.quick else (512, 512, args.depth)
    chunk = 512 * 1024 if args.quick else args.chunk_mib * MIB
    machine = machine_line()
    started = time.perf_counter()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="attrivue-upload-", dir=args.workdir) as tmp:
        result = run(shape=shape, chunk=chunk, do_import=not args.no_import, workdir=Path(tmp))
    seconds = time.perf_counter() - started
    body = "\n".join(
        [
            f"- Command: `{command}`",
            f"- Date: {date}; the run took {seconds:.0f} s",
            f"- Machine: {machine}",
            "",
            render(result),
        ]
    )
    out: Path = args.out
    text = out.read_text() if out.exists() else INTRO
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, replace_section(text, SECTION, body, HEADING))
    imported = (
        f", import {result.file_bytes / 1e6 / result.import_seconds:.0f} MB/s"
        if result.import_seconds
        else ""
    )
    _log(
        f"upload {result.mb_per_s:.0f} MB/s{imported}, peak VmRSS growth "
        f"{(result.upload_peak_kb[0] - result.baseline_kb[0]) / 1024:.1f} MiB; written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
