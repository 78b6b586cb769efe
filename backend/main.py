"""Builds the FastAPI app: the v1 API under /api/v1 and the built frontend at /."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp

from backend.api.deps import Public, credentials_problem
from backend.api.limits import RequestGate
from backend.api.main import api_router
from backend.api.middleware import SecurityHeaders, TrustedProxies
from backend.core.config import get_settings
from backend.core.db import DATABASE_DOWN
from backend.core.security import dummy_password_hash
from backend.services.errors import ServiceError

API_PREFIX = "/api/v1"

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Imports cut short by a crash or restart of an earlier API process leave staging
        # folders (never subjects: those are committed all at once); remove them.
        from backend.services.imports import sweep_orphaned_staging
        from backend.storage import get_storage

        removed = sweep_orphaned_staging(get_storage(settings))
        if removed:
            log.warning("removed %d staging folders of interrupted imports", len(removed))
        # Made now, so that even the first login of an unknown user takes a normal login's time.
        dummy_password_hash()
        yield

    app = _Attrivue(
        title="Attrivue",
        version="0.1.0",
        openapi_url=f"{API_PREFIX}/openapi.json",
        # FastAPI's own /docs and /redoc load scripts from a CDN and run an inline script,
        # both refused by the CSP; _api_docs serves Swagger UI from this server instead.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.include_router(api_router, prefix=API_PREFIX)
    app.add_middleware(
        RequestGate,
        routes=app.router.routes,
        api_prefix=API_PREFIX,
        authenticate=credentials_problem,
    )
    if settings.cors_origin_list:
        # Closed by default: only origins named in ATTRIVUE_CORS_ORIGINS may call the API from
        # a browser page they serve (with cookies, so never "*").
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_credentials=True,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Content-Range", "X-CSRF-Token"],
            expose_headers=["Upload-Offset", "Upload-Length", "Content-Disposition"],
        )
    # Outermost: everything inside sees the client address a configured proxy forwarded.
    app.add_middleware(TrustedProxies, networks=settings.trusted_proxy_networks)

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

    # The database went away (restart, network cut, pool exhausted): a clear 503 the client may
    # retry, not a 500. The pool pre-pings connections, so requests recover once it is back.
    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "database unavailable during %s %s: %s",
            request.method,
            request.url.path,
            type(getattr(exc, "orig", exc)).__name__,
        )
        return JSONResponse(
            {"detail": DATABASE_DOWN}, status_code=503, headers={"Retry-After": "5"}
        )

    # FastAPI's own 422 echoes the input: a large input is cut short (a 200 MB string must
    # not come back), text that UTF-8 cannot encode (a lone surrogate) is escaped, and JSON
    # has no NaN or Infinity, so a non-finite number is echoed as text.
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {**error, "input": _shortened(error["input"])} if "input" in error else error
            for error in exc.errors()
        ]
        return JSONResponse({"detail": _echoable(jsonable_encoder(errors))}, status_code=422)

    # Text with a lone surrogate ("a\ud800", valid JSON) cannot be stored or compared by the
    # database driver: it is bad input, wherever it is first encoded.
    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the request holds text that is not valid Unicode ({exc.reason})"},
            status_code=422,
        )

    # Anything else is a fault of the server: a short JSON answer, never a traceback; the
    # exception is logged by the server. _Attrivue keeps the security headers on it.
    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s during %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    _api_docs(app)

    dist = settings.frontend_dir
    if (dist / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="assets")

    @app.get("/{path:path}", include_in_schema=False, response_model=None, dependencies=[Public])
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


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Attrivue API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

DOCS_INIT = f"""window.ui = SwaggerUIBundle({{
  url: "{API_PREFIX}/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
"""


def swagger_ui_dir() -> Path | None:
    """Swagger UI's files as the ``swagger-ui-py`` package ships them, if it is installed."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def _api_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from this server's own files, under the app's CSP unchanged.

    The API documentation is public, like the schema at /api/v1/openapi.json: it describes the
    routes (as the source does) and holds no data; every route it lists still needs a login.
    """
    static = swagger_ui_dir()
    if static is not None:
        app.mount("/docs/assets", StaticFiles(directory=static), name="docs-assets")

    @app.get("/docs", include_in_schema=False, dependencies=[Public])
    def docs() -> HTMLResponse:
        if static is None:
            return HTMLResponse(
                "<h1>Attrivue API</h1><p>Swagger UI is not installed (pip install swagger-ui-py)."
                f' The schema is at <a href="{API_PREFIX}/openapi.json">{API_PREFIX}/openapi.json'
                "</a>.</p>",
                status_code=503,
            )
        return HTMLResponse(DOCS_PAGE)

    @app.get("/docs/init.js", include_in_schema=False, dependencies=[Public])
    def docs_init() -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")


class _Attrivue(FastAPI):
    """FastAPI with the security headers outside every other layer.

    Middleware added with ``add_middleware`` runs inside Starlette's ServerErrorMiddleware,
    so the 500 that layer sends would lack the headers; here SecurityHeaders wraps it too.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), api_prefix=API_PREFIX)


ECHO_LIMIT = 200  # characters of an invalid input a 422 echoes


def _shortened(value: Any) -> Any:
    """An invalid input as a 422 may echo it: text and containers over ``ECHO_LIMIT``
    characters are cut to their beginning, with their size."""
    if isinstance(value, str | bytes) and len(value) > ECHO_LIMIT:
        kind = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:ECHO_LIMIT]!s}... ({len(value)} {kind}, cut short)"
    if isinstance(value, dict | list | tuple):
        text = repr(value)
        if len(text) > ECHO_LIMIT:
            return (
                f"{text[:ECHO_LIMIT]}... ({type(value).__name__} of {len(value)} items, cut short)"
            )
    return value


def _echoable(value: Any) -> Any:
    """``value`` made safe to send as JSON: a non-finite float becomes its text (``"inf"``),
    and text UTF-8 cannot encode (lone surrogates) gets them escaped (``"a\\ud800"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_echoable(key): _echoable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_echoable(item) for item in value]
    return value
