"""The gate every request passes before the app reads its body.

``RequestGate`` is a plain ASGI middleware that decides, from the request line and headers
alone, what a body may cost:

- a path under the API prefix that names no route answers 404 at once (whatever the method);
- a request with a body (any method but GET, HEAD, OPTIONS) to a protected route answers 401
  unless its bearer token or session cookie resolves to an active user, so an anonymous
  client cannot make the server spool or parse anything (503, as elsewhere, while the
  database that holds the tokens is unreachable);
- every body has a cap, by route class (``body_limit``): small for JSON routes, the
  configured limits for upload routes. A declared ``Content-Length`` over the cap answers
  413 before a byte is read; a body that streams past it is stopped at the piece that
  crosses it (``BodyTooLarge``, an HTTP 413 that FastAPI's body parsing passes on).

The route's own dependencies still authenticate and authorise it; the gate only refuses
early what would be refused anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.config import Settings, get_settings
from backend.core.db import DATABASE_DOWN

__all__ = ["BodyTooLarge", "RequestGate", "body_limit", "UPLOAD_ROUTES"]

_BODILESS = {"GET", "HEAD", "OPTIONS"}
_FORM_OVERHEAD = 1024 * 1024  # multipart headers, form fields and boundaries of one upload

# operationId -> route class; every other route is a JSON route (``max_json_bytes``).
UPLOAD_ROUTES = {
    "uploadSubject": "subject",
    "importSubjects": "import",
    "appendUpload": "chunk",
    "putReviewCorrection": "correction",
    "importModel": "model",
}


def body_limit(operation_id: str | None, settings: Settings) -> int:
    """The largest body, in bytes, the route with this operationId accepts."""
    from backend.services.imports import MAX_TABLE_BYTES, Limits

    kind = UPLOAD_ROUTES.get(operation_id or "")
    limits = Limits.from_settings(settings)
    if kind == "subject":  # an image and its mask
        return 2 * limits.per_file + _FORM_OVERHEAD
    if kind == "import":  # as MultipartReceiver counts: the archive limit and a table
        return limits.total + MAX_TABLE_BYTES + _FORM_OVERHEAD
    if kind == "chunk":  # one chunk of the largest upload (a zip)
        return limits.total
    if kind == "correction":
        return settings.max_correction_bytes
    if kind == "model":  # one model file and its spec's form fields
        return settings.max_model_bytes + _FORM_OVERHEAD
    return settings.max_json_bytes


class BodyTooLarge(HTTPException):
    """The request body passed its route's cap (413); nothing more of it is read."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"the request body is larger than this route's limit of {limit} bytes",
        )


def _is_public(dependant: Dependant) -> bool:
    from backend.api.deps import public_route

    return dependant.call is public_route or any(_is_public(d) for d in dependant.dependencies)


@dataclass(frozen=True)
class _Entry:
    """One route as the gate sees it."""

    context: RouteContext
    path: str
    operation_id: str | None
    public: bool
    is_api: bool  # a FastAPI route (not the OpenAPI document, the docs or static files)
    literal: str  # the path up to its first parameter: a path it matches starts with it

    @classmethod
    def of(cls, context: RouteContext) -> _Entry:
        is_api = isinstance(context.original_route, APIRoute)
        return cls(
            context=context,
            path=context.path or "",
            operation_id=context.operation_id if is_api else None,
            public=_is_public(context.dependant) if is_api else True,
            is_api=is_api,
            literal=(context.path or "").split("{", 1)[0],
        )

    def api_path(self, prefix: str) -> bool:
        """Whether this is a route of the API (not the browser app's catch-all)."""
        return self.path.startswith(prefix + "/")


class RequestGate:
    """Refuses unknown API paths, anonymous writes and oversized bodies before reading them.

    Args:
        app: The wrapped application.
        routes: The application's routes (``app.router.routes``; read at each request, so
            routes added after the middleware count).
        api_prefix: Paths under this prefix are API paths.
        authenticate: Given the request's connection, None when its credentials resolve to
            an active user, else the 401 message (called in the threadpool: it may query).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: list[BaseRoute],
        api_prefix: str,
        authenticate: Callable[[HTTPConnection], str | None],
    ) -> None:
        self.app = app
        self.routes = routes
        self.api_prefix = api_prefix.rstrip("/")
        self.authenticate = authenticate
        self._table: list[_Entry] | None = None

    def _entries(self) -> list[_Entry]:
        """The app's routes, included routers flattened (built at the first request, when
        every route is registered)."""
        if self._table is None:
            self._table = [_Entry.of(context) for context in iter_route_contexts(self.routes)]
        return self._table

    def _route(self, scope: Scope) -> _Entry | None:
        """The route that will serve the request: a full match, else the first partial one
        (a known path asked with another method, which the router answers 405)."""
        partial = None
        path = _route_path(scope)
        for entry in self._entries():
            # A route's literal start is compared first: matching a route costs ~100 times as
            # much, and most routes of the app fail this cheap test.
            if not path.startswith(entry.literal):
                continue
            match, _ = entry.context.matches(scope)
            if match is Match.FULL:
                return entry
            if match is Match.PARTIAL and partial is None:
                partial = entry
        return partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = self._route(scope)
        api_route = route if route is not None and route.api_path(self.api_prefix) else None
        if (path == self.api_prefix or path.startswith(self.api_prefix + "/")) and not api_route:
            await _answer(scope, receive, send, 404, f"no such API route: {path}")
            return
        if api_route is not None and not api_route.public and scope["method"] not in _BODILESS:
            try:
                problem = await run_in_threadpool(self.authenticate, HTTPConnection(scope))
            except (OperationalError, PoolTimeout):  # as the app answers it (backend.main)
                headers = {"Retry-After": "5"}
                await _answer(scope, receive, send, 503, DATABASE_DOWN, headers)
                return
            if problem is not None:
                headers = {"WWW-Authenticate": "Bearer"}
                await _answer(scope, receive, send, 401, problem, headers)
                return
        limit = body_limit(api_route.operation_id if api_route else None, get_settings())
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(scope, receive, send, 413, BodyTooLarge(limit).detail)
            return
        await self._capped(scope, receive, send, limit)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, watching_send)
        except BodyTooLarge as exc:  # raised where no exception handler turned it into a 413
            if started:
                raise
            await _answer(scope, receive, send, 413, exc.detail)


def _route_path(scope: Scope) -> str:
    """The path the routes match: without the ``root_path`` an ASGI server may put before it
    (as Starlette's routing strips it)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, Any] | None = None,
) -> None:
    """A JSON error sent without reading the body. When a body may follow (a method with
    one, or a 413) the connection is closed after it, so its unread rest is never waited for."""
    extra = dict(headers or {})
    if status == 413 or scope["method"] not in _BODILESS:
        extra["Connection"] = "close"
    response = JSONResponse({"detail": detail}, status_code=status, headers=extra)
    await response(scope, receive, send)
