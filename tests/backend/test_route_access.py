"""Every route has an access check: it depends on ``current_user`` (through CurrentUser,
Writer, Admin or AuditDep) or carries the ``Public`` marker, and only health, login and the
browser app carry that marker. A route added without either fails here. The one exception,
named below, is getJob (the route clients poll, issue 21): it authenticates in its own body,
marked ``authenticates_in_body``, and must answer as ``current_user`` would.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount, Route

from backend.api.deps import SELF_AUTHENTICATED, current_user, public_route
from backend.main import API_PREFIX, create_app

PUBLIC = {
    ("POST", f"{API_PREFIX}/auth/login"),
    ("GET", f"{API_PREFIX}/health"),
    ("GET", "/{path:path}"),  # the browser app's files; API paths under it answer 404
    # The API documentation is public (docs/deployment.md): Swagger UI, served locally.
    ("GET", "/docs"),
    ("GET", "/docs/init.js"),
}
# Routes that make current_user's check in their own body (GET only: no CSRF check there).
SELF_CHECKED = {("GET", f"{API_PREFIX}/jobs/{{job_id}}")}
# Starlette's own routes: the OpenAPI document (no data) and built and Swagger UI assets.
FRAMEWORK = {
    f"{API_PREFIX}/openapi.json",
    "/assets",
    "/docs/assets",
}


def _calls(dependant: Dependant) -> set[object]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


@dataclass
class Endpoint:
    path: str
    methods: set[str]
    dependant: Dependant  # with the dependencies of every router that includes it


def _routes() -> list[Endpoint]:
    """Every route the app serves, routers flattened (as the OpenAPI generator walks them)."""
    routes = []
    for context in iter_route_contexts(create_app().routes):
        if isinstance(context.original_route, APIRoute):
            routes.append(Endpoint(context.path, set(context.methods), context.dependant))
        else:
            assert isinstance(context.original_route, Route | Mount), context
            assert context.path in FRAMEWORK, context.path
    return routes


def _checked(route: Endpoint) -> bool:
    return current_user in _calls(route.dependant) or route.dependant.call in SELF_AUTHENTICATED


def test_every_route_checks_access_or_is_a_declared_public_one() -> None:
    unchecked, public, self_checked = [], set(), set()
    routes = _routes()
    for route in routes:
        calls = _calls(route.dependant)
        for method in route.methods:
            if current_user in calls:
                continue
            if route.dependant.call in SELF_AUTHENTICATED:
                self_checked.add((method, route.path))
                continue
            if public_route in calls:
                public.add((method, route.path))
            else:
                unchecked.append(f"{method} {route.path}")
    assert not unchecked, f"routes without an access check: {unchecked}"
    assert public == PUBLIC, f"public routes changed: {sorted(public ^ PUBLIC)}"
    assert self_checked == SELF_CHECKED, sorted(self_checked ^ SELF_CHECKED)
    assert len(routes) > 50, "the app's routes were enumerated"


def test_the_walk_finds_a_missing_check() -> None:
    """The check itself can fail: a route with no user dependency is reported."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/open")
    def open_route() -> dict:
        return {}

    route = next(r for r in app.routes if isinstance(r, APIRoute))
    calls = _calls(route.dependant)
    assert current_user not in calls and public_route not in calls


def test_protected_routes_answer_401_without_credentials(api) -> None:  # type: ignore[no-untyped-def]
    """Each protected GET, asked with no token or cookie, is refused before any work."""
    import re

    api.headers.pop("Authorization")
    refused = []
    for route in _routes():
        if "GET" not in route.methods or not _checked(route):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        response = api.get(path)
        if response.status_code != 401:
            refused.append(f"{path}: {response.status_code}")
    assert not refused, refused
