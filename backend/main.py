"""Builds the FastAPI app: the v1 API under /api/v1 and the built frontend at /."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
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

    # FastAPI's own 422 echoes the input, and JSON has no NaN or Infinity: a non-finite number
    # sent where a finite one is required would turn the 422 into a 500. Echo it as text.
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)

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


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its text (``"inf"``, ``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
