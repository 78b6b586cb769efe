"""Jobs: their state and progress, also as a stream of Server-Sent Events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from backend.api.deps import (
    CurrentUser,
    SessionDep,
    SettingsDep,
    authenticates_in_body,
    authorize,
    not_authenticated,
    request_token,
)
from backend.core.db import connect
from backend.schemas.job import JobPublic, JobsPublic
from backend.services import jobs as svc
from backend.services import projects

router = APIRouter(prefix="/jobs", tags=["jobs"])

KEEPALIVE_SECONDS = 15.0
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "Server-Sent Events; the last one is `end`, after which the stream closes",
    }
}


def event_stream(
    changes: AsyncIterator[list[svc.Change] | None],
    render: Callable[[str, Any], str],
    request: Request,
) -> StreamingResponse:
    """Frame the changes as Server-Sent Events (``render`` gives an event's JSON data).

    A comment every ``KEEPALIVE_SECONDS`` keeps proxies from closing a quiet stream; the final
    ``end`` event tells an EventSource not to reconnect.
    """

    async def frames() -> AsyncIterator[str]:
        sent = 0
        last_write = time.monotonic()
        async for batch in changes:
            if await request.is_disconnected():
                return
            if batch is None:
                if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
                    last_write = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            for event, payload in batch:
                sent += 1
                yield f"id: {sent}\nevent: {event}\ndata: {render(event, payload)}\n\n"
            last_write = time.monotonic()
        yield "event: end\ndata: {}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)


@router.get("", operation_id="listJobs")
def list_jobs(user: CurrentUser, session: SessionDep, status: str | None = None) -> JobsPublic:
    """Jobs, newest first."""
    jobs = svc.list_jobs(
        session, project_ids=projects.open_project_ids(session, user), status=status
    )
    return JobsPublic(data=[JobPublic.model_validate(j) for j in jobs], count=len(jobs))


@router.get("/{job_id}", operation_id="getJob", response_model=JobPublic)
@authenticates_in_body
def get_job(job_id: int, request: Request) -> Response:
    """One job."""
    # The route clients poll: token, user, job and access check in one query on plain rows,
    # in one threadpool trip (no dependencies), answered with the model's JSON as FastAPI's
    # response_model would write it, without validating again what the columns hold.
    token = request_token(request)
    with connect() as connection:
        job = projects.job_status(connection, token, job_id)
    if job is None:
        raise not_authenticated()
    body = JobPublic.model_construct(**job).model_dump_json()
    return Response(body, media_type="application/json")


@router.get(
    "/{job_id}/events",
    operation_id="streamJobEvents",
    response_class=StreamingResponse,
    responses=EVENT_STREAM,
)
def stream_job_events(
    job_id: int, request: Request, user: CurrentUser, session: SessionDep
) -> StreamingResponse:
    """The job's state as `job` events (JobPublic): now, then at every change, until it ends."""
    authorize(session, user, svc.get_job(session, job_id))
    session.close()  # the stream reads with sessions of its own; hold no connection meanwhile
    return event_stream(
        svc.job_changes(job_id),
        lambda _, job: JobPublic.model_validate(job).model_dump_json(),
        request,
    )


@router.post("/{job_id}/cancel", operation_id="cancelJob")
def cancel_job(
    job_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> JobPublic:
    """Ask a job to stop: a queued job ends at once, a running one within about a second
    (inside the step or map computation it is running)."""
    job = svc.get_job(session, job_id)
    authorize(session, user, job, projects.WRITE)
    job = svc.cancel_job(session, job)
    session.commit()
    if job.status == "cancelled":
        svc.revoke_job(job, settings)
    return JobPublic.model_validate(job)
