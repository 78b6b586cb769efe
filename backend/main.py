"""Builds the FastAPI app: the v1 API under /api/v1 and the built frontend at /."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError

from backend.api.main import api_router
from backend.core.config import get_settings
from backend.services.errors import ServiceError

API_PREFIX = "/api/v1"


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="Attrivue", version="0.1.0", openapi_url=f"{API_PREFIX}/openapi.json")
    app.include_router(api_router, prefix=API_PREFIX)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    # An id or number beyond what the database stores (SQLite: OverflowError; PostgreSQL:
    # DataError) is bad input, not a server fault.
    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "a number in the request is out of the range the database stores"},
            status_code=422,
        )

    dist = settings.frontend_dir
    if (dist / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False, response_model=None)
    def spa(path: str) -> FileResponse | HTMLResponse | JSONResponse:
        if path.startswith("api/"):
            return JSONResponse({"detail": f"no such API route: /{path}"}, status_code=404)
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(dist.resolve()):
            return FileResponse(candidate)
        index = dist / "index.html"
        if index.is_file():
            return FileResponse(index)
        return HTMLResponse(
            "<h1>Attrivue</h1><p>The frontend is not built: run <code>make run</code>.</p>",
            status_code=503,
        )

    return app
