"""Job lifecycle shared by the tasks, and the worker process's presence: the row is the truth.

A task claims its job with one conditional UPDATE (queued, or running with a stale heartbeat,
becomes running with one more attempt), so a job never runs twice at once. The claim's
attempt number then fences every later write: a worker that lost its job (re-queued because it
looked dead) sees so at its next cancel check (before each training step, and at most once a
second inside steps and map computations), stops, and writes nothing more.

Each worker process keeps a row in ``workers`` (``Presence``): registered at start, refreshed
with the running job's heartbeat every ``heartbeat_seconds`` by a daemon thread that also
re-queues the jobs of lost workers (``backend.services.jobs.recover_lost_jobs``), and removed
at shutdown. A worker killed with SIGKILL leaves a row that goes stale: that is how the others
know.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import Job, JobStatus
from backend.services import jobs as job_svc

__all__ = [
    "Claim",
    "subject_channels",
    "JobReporter",
    "Presence",
    "claim_job",
    "claimed",
    "finish_job",
    "gpu_report",
    "owns",
    "retrying",
    "set_fields",
    "start_presence",
    "stop_presence",
    "worker_name",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def retrying(write: Callable[[], T], *, what: str) -> T:
    """Run one short database transaction, retried while the database is unreachable.

    A worker's status writes (progress, epochs, the end of a job) must survive a database
    restart or a network cut: they are retried with backoff for up to twice
    ``job_stale_seconds``. Each write is its own transaction, fenced by the claim, so running
    it again after a failure is safe; a write that still fails after that raises.
    """
    deadline = time.monotonic() + 2 * get_settings().job_stale_seconds
    delay = 0.25
    while True:
        try:
            return write()
        except (OperationalError, PoolTimeout) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "database unavailable while %s (%s); retrying in %.1f s",
                what,
                type(getattr(exc, "orig", exc)).__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class Claim:
    """A job this process runs: the attempt number fences its writes."""

    job_id: int
    attempt: int
    worker: str


def _owned(claim: Claim) -> list[Any]:
    return [
        Job.id == claim.job_id,
        Job.status == JobStatus.running.value,
        Job.attempts == claim.attempt,
        Job.worker == claim.worker,
    ]


def owns(session: Session, claim: Claim) -> bool:
    """Whether the job is still this claim's (not re-queued, taken over or finished)."""
    return session.scalar(select(Job.id).where(*_owned(claim))) is not None


def set_fields(
    model: type[Any], row_id: int, claim: Claim | None = None, *, what: str, **fields: object
) -> None:
    """Write ``fields`` on the row ``row_id`` of ``model`` (retried while the database is
    unreachable), unless ``claim`` is given and no longer holds the job."""

    def write() -> None:
        with session_scope() as session:
            if claim is not None and not owns(session, claim):
                return
            row = session.get(model, row_id)
            if row is not None:
                for key, value in fields.items():
                    setattr(row, key, value)

    retrying(write, what=what)


def claim_job(job_id: int) -> Claim | None:
    """Mark the job running for this process; None when it is not to be run here.

    One conditional UPDATE: a queued job, or a running one whose heartbeat is older than
    ``job_stale_seconds`` (its worker died), without a cancel request. A task that gets None
    does nothing: the job is finished, cancelled, or running elsewhere.
    """
    now = _now()
    stale = now - timedelta(seconds=get_settings().job_stale_seconds)
    me = worker_name()
    claimable = or_(
        Job.status == JobStatus.queued.value,
        and_(
            Job.status == JobStatus.running.value,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale),
        ),
    )
    with session_scope() as session:
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.cancel_requested.is_(False), claimable)
            .values(
                status=JobStatus.running.value,
                attempts=Job.attempts + 1,
                started_at=func.coalesce(Job.started_at, now),
                heartbeat_at=now,
                worker=me,
            )
        )
        if won.rowcount:  # type: ignore[attr-defined]  # typed Result; a DML statement returns a CursorResult
            attempt = int(session.scalar(select(Job.attempts).where(Job.id == job_id)) or 1)
            message = "started" if attempt == 1 else f"resumed (attempt {attempt})"
            session.execute(update(Job).where(Job.id == job_id).values(message=message))
            return Claim(job_id=job_id, attempt=attempt, worker=me)
        job = session.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist; dropping the task", job_id)
        elif job.status == JobStatus.queued.value and job.cancel_requested:
            job.status = JobStatus.cancelled.value
            job.finished_at = now
            job.message = "cancelled before it started"
        else:
            log.info("job %s is %s (worker %s); nothing to do", job_id, job.status, job.worker)
        return None


@contextmanager
def claimed(job_id: int) -> Iterator[Claim | None]:
    """``claim_job``, with the job's heartbeat kept by this process's presence meanwhile."""
    claim = claim_job(job_id)
    if claim is None:
        yield None
        return
    if _presence is not None:
        _presence.hold(claim)
    try:
        yield claim
    finally:
        if _presence is not None:
            _presence.release(claim)


def finish_job(claim: Claim, status: JobStatus, *, message: str, error: str | None = None) -> bool:
    """Record the end of the claim's attempt; False (and nothing written) if it lost the job."""
    values: dict[str, Any] = {
        "status": status.value,
        "message": message,
        "error": error,
        "finished_at": _now(),
    }
    if status is JobStatus.succeeded:
        values["progress"] = 1.0

    def write() -> bool:
        with session_scope() as session:
            result = session.execute(update(Job).where(*_owned(claim)).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]  # typed Result; a DML statement returns a CursorResult

    return retrying(write, what=f"finishing job {claim.job_id}")


class JobReporter:
    """Progress to the job row (at most every ``interval`` s), and the stop check.

    ``cancel_requested`` reads the row on every call (one small indexed read, so training can
    check it before every step): True when a cancel was requested, or when the job is no
    longer this claim's (``lost``), in which case the task must write nothing more.
    """

    def __init__(self, claim: Claim, *, interval: float = 1.0) -> None:
        self.claim = claim
        self.interval = interval
        self.lost = False
        self._last = 0.0
        self._stop = False

    def report(self, fraction: float, message: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now

        def write() -> None:
            with session_scope() as session:
                session.execute(
                    update(Job)
                    .where(*_owned(self.claim))
                    .values(
                        progress=max(0.0, min(1.0, float(fraction))),
                        message=message,
                        heartbeat_at=_now(),
                    )
                )

        retrying(write, what=f"reporting progress of job {self.claim.job_id}")

    def cancel_requested(self) -> bool:
        if self._stop:
            return True

        def read() -> Any:
            with session_scope() as session:
                return session.execute(
                    select(Job.cancel_requested, Job.status, Job.attempts, Job.worker).where(
                        Job.id == self.claim.job_id
                    )
                ).one_or_none()

        row = retrying(read, what=f"reading the state of job {self.claim.job_id}")
        mine = (
            row is not None
            and row.status == JobStatus.running.value
            and row.attempts == self.claim.attempt
            and row.worker == self.claim.worker
        )
        self.lost = not mine
        self._stop = self.lost or bool(row and row.cancel_requested)
        return self._stop


# --------------------------------------------------------------------------- presence


def gpu_report() -> str:
    """What this process computes on, as /health shows it (``workers.gpu``).

    "cpu" when ATTRIVUE_DEVICE is cpu or CUDA_VISIBLE_DEVICES hides every GPU; otherwise each
    GPU torch sees, as ``cuda:<index> = GPU <CUDA_VISIBLE_DEVICES entry> (<name>)``, and
    "cpu (no CUDA device visible)" for a worker meant for a GPU that found none.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if get_settings().device == "cpu" or (visible is not None and visible.strip() in ("", "-1")):
        return "cpu"
    import torch  # the worker has it; only asked when the settings allow a GPU

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        if get_settings().device == "cuda":
            log.warning("ATTRIVUE_DEVICE is cuda but torch sees no CUDA device")
        return "cpu (no CUDA device visible)"
    ids = [v.strip() for v in visible.split(",")] if visible else []
    names = [
        f"cuda:{i} = GPU {ids[i] if i < len(ids) else i} ({torch.cuda.get_device_name(i)})"
        for i in range(count)
    ]
    return ", ".join(names)[:255]


class Presence:
    """This worker process's row in ``workers`` and its heartbeat thread."""

    def __init__(self, *, name: str, queues: list[str]) -> None:
        self.name = name
        self.queues = queues
        self.interval = get_settings().heartbeat_seconds
        self._claims: dict[int, Claim] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="attrivue-heartbeat", daemon=True)

    def start(self) -> None:
        """Register, re-queue what lost workers left (a replacement picks it up), then beat."""
        self._register()
        self._recover()
        self._thread.start()
        log.info("worker %s registered (queues %s)", self.name, ",".join(self.queues))

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        try:
            with session_scope() as session:
                job_svc.remove_worker(session, name=self.name)
        except Exception:
            log.warning("could not remove worker %s", self.name, exc_info=True)

    def hold(self, claim: Claim) -> None:
        with self._lock:
            self._claims[claim.job_id] = claim
        self._touch_quietly()

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._claims.pop(claim.job_id, None)
        self._touch_quietly()

    def beat(self) -> None:
        """One heartbeat: the worker row, the held jobs' heartbeats, then the recovery."""
        self._touch()
        self._recover()

    def _touch_quietly(self) -> None:
        """Show ``current_job_id`` at once; the next beat retries if the database is away."""
        try:
            self._touch()
        except Exception:
            log.warning("worker %s could not update its row", self.name, exc_info=True)

    def _touch(self) -> None:
        with self._lock:
            claims = list(self._claims.values())
        current = claims[0].job_id if claims else None
        with session_scope() as session:
            if not job_svc.touch_worker(session, name=self.name, current_job_id=current):
                self._register_in(session)
                job_svc.touch_worker(session, name=self.name, current_job_id=current)
            for claim in claims:
                session.execute(update(Job).where(*_owned(claim)).values(heartbeat_at=_now()))

    def _register(self) -> None:
        with session_scope() as session:
            self._register_in(session)

    def _register_in(self, session: Session) -> None:
        job_svc.register_worker(
            session,
            name=self.name,
            hostname=socket.gethostname(),
            queues=self.queues,
            gpu=gpu_report(),
            pid=os.getpid(),
        )

    def _recover(self) -> None:
        with session_scope() as session:
            job_svc.recover_lost_jobs(session, get_settings())
            job_svc.prune_workers(session)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a database hiccup must not end the heartbeats for good
                log.warning("heartbeat of worker %s failed", self.name, exc_info=True)


_presence: Presence | None = None


def worker_name() -> str:
    """This process as ``workers.name`` and ``jobs.worker`` know it."""
    if _presence is not None:
        return _presence.name
    return f"{socket.gethostname()}:{os.getpid()}"


def start_presence(*, nodename: str, queues: list[str]) -> Presence | None:
    """Register this process (once) and start its heartbeats."""
    global _presence
    if _presence is None:
        _presence = Presence(name=f"{nodename}:{os.getpid()}", queues=queues)
        try:
            _presence.start()
        except Exception:  # the worker still runs tasks; their progress keeps them alive
            log.exception("could not register worker %s; no heartbeats", _presence.name)
            _presence = None
    return _presence


def stop_presence() -> None:
    global _presence
    if _presence is not None:
        _presence.stop()
        _presence = None


def subject_channels(storage: Any, subject: Any) -> tuple[Path, ...]:
    """The absolute paths of a stored subject's channels 1.. in its dataset's order (channel 0
    is ``subject.image_path``); empty for a dataset of one modality. Every task that feeds a
    subject to a network passes these on (``worker.ml.transforms.subject_on_grid``)."""
    from backend.services.datasets import channel_paths

    return tuple(storage.absolute(p) for p in channel_paths(subject, subject.dataset)[1:])
