"""The baseline of ``bench.bench_status``: a bare FastAPI route that reads one job row.

``python -m bench.bare_status_app --port PORT [--workers N]`` serves ``GET /bare/jobs/{id}`` on
the settings' database (the same ``ATTRIVUE_*`` environment as the server it is compared with),
through ``backend.core.db.get_engine`` (the same engine, pool and SQLite pragmas) and with
``attrivue serve``'s uvicorn options (``backend.cli.uvicorn_options``). No authentication, no
middleware, no response model: what any FastAPI app pays to answer with one row. Benchmark
use only; it is never part of the served app.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy.orm import Session

from backend.core.db import get_engine
from backend.models import Job

__all__ = ["create_app"]


def create_app() -> FastAPI:
    engine = get_engine()
    app = FastAPI()

    @app.get("/bare/jobs/{job_id}")
    def bare_job(job_id: int) -> dict[str, Any]:
        with Session(engine) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise HTTPException(404, detail=f"job {job_id} not found")
            return {
                "id": job.id,
                "kind": job.kind,
                "status": job.status,
                "progress": job.progress,
                "message": job.message,
                "error": job.error,
                "attempts": job.attempts,
                "cancel_requested": job.cancel_requested,
                "worker": job.worker,
                "created_at": job.created_at,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
                "heartbeat_at": job.heartbeat_at,
            }

    @app.get("/bare/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    from backend.cli import uvicorn_options

    parser = argparse.ArgumentParser(prog="python -m bench.bare_status_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "bench.bare_status_app:create_app",
        host="127.0.0.1",
        port=args.port,
        **uvicorn_options(args.workers),
    )


if __name__ == "__main__":
    main()
