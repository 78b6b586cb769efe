"""Issue 16, resource limits before any parsing or authentication work (items 3, 4 and 6).

Bodies are driven straight through the ASGI app from a generator that counts what the server
consumed, so a test can tell "refused before reading" from "read, then refused" without ever
holding a large body: the caps are set small for the test.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.parametrize("app_env", ["sqlite"], indirect=True)

PIECE = 64 * 1024
SECURITY_HEADERS = ("x-content-type-options", "x-frame-options", "content-security-policy")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    consumed: int  # body bytes the app asked for


def _pieces(total: int, *, head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
    """``total`` bytes of body made piece by piece (never held whole)."""
    yield head
    left = total - len(head) - len(tail)
    while left > 0:
        n = min(PIECE, left)
        yield b"a" * n
        left -= n
    yield tail


def drive(
    app,  # type: ignore[no-untyped-def]
    method: str,
    path: str,
    body: Iterator[bytes],
    *,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request through the ASGI app; counts the body bytes it consumed."""
    consumed = 0
    sent: list[dict] = []
    finished = False

    async def receive() -> dict:
        nonlocal consumed, finished
        if finished:
            await asyncio.sleep(3600)  # what a server does: wait for a disconnect that never comes
        piece = next(body, None)
        if piece is None:
            finished = True
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=60)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={k.decode().lower(): v.decode() for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        consumed=consumed,
    )


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "limits"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _multipart_head(field: str = "image", name: str = "big.nii") -> tuple[bytes, bytes, str]:
    boundary = "attrivue-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="subject_key"\r\n\r\ns1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\n0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- item 3


def test_item3_json_body_over_the_cap_is_refused_while_it_streams(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge JSON body to /auth/login (public) is stopped at the JSON cap, never parsed; a
    declared Content-Length over the cap is refused before a byte is read."""
    from backend.core.config import get_settings

    cap = 256 * 1024
    monkeypatch.setattr(get_settings(), "max_json_bytes", cap)
    total = 64 * 1024**2
    streamed = drive(
        api.app,
        "POST",
        "/api/v1/auth/login",
        _pieces(total, head=b'{"username": "admin", "password": "'),
        headers={"content-type": "application/json"},
    )
    assert streamed.status == 413, streamed.body
    assert str(cap) in streamed.body.decode()
    assert streamed.consumed <= cap + PIECE + 64, streamed.consumed
    declared = drive(
        api.app,
        "POST",
        "/api/v1/auth/login",
        _pieces(total),
        headers={"content-type": "application/json", "content-length": str(200 * 1024**2)},
    )
    assert declared.status == 413 and declared.consumed == 0
    # Under the cap, the route still works.
    ok = api.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert ok.status_code == 200, ok.text


def test_item3_anonymous_writes_are_refused_before_their_body_is_read(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    """No token, or a bad one: 401 on every upload and JSON write route, with not one body
    byte consumed and nothing spooled under tmp/."""
    head, tail, content_type = _multipart_head()
    routes = [
        ("POST", f"/api/v1/datasets/{dataset_id}/subjects", content_type),
        ("POST", f"/api/v1/datasets/{dataset_id}/imports", content_type),
        ("PUT", "/api/v1/uploads/0123456789abcdef", "application/octet-stream"),
        ("PUT", "/api/v1/reviews/1/correction", "application/octet-stream"),
        ("POST", "/api/v1/datasets", "application/json"),
    ]
    for credentials in (
        {},
        {"authorization": "Bearer not-a-token"},
        {"cookie": "attrivue_session=x"},
    ):
        for method, path, kind in routes:
            answer = drive(
                api.app,
                method,
                path,
                _pieces(8 * 1024**2, head=head, tail=tail),
                headers={"content-type": kind, **credentials},
            )
            assert answer.status == 401, (path, answer.body)
            assert answer.consumed == 0, (path, answer.consumed)
            assert answer.headers.get("www-authenticate") == "Bearer"
            assert _files_under(app_env / "tmp") == []
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0


def test_item3_upload_over_its_limit_stops_while_it_streams(
    api: TestClient, dataset_id: int, app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a token and a small upload limit, a large multipart body is stopped near the
    route's cap (not spooled whole), and nothing stays under tmp/ or datasets/."""
    from backend.api.limits import body_limit
    from backend.core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 50_000)
    token = api.headers["Authorization"]
    head, tail, content_type = _multipart_head()
    total = 64 * 1024**2
    for operation, path in (
        ("uploadSubject", f"/api/v1/datasets/{dataset_id}/subjects"),
        ("importSubjects", f"/api/v1/datasets/{dataset_id}/imports"),
    ):
        cap = body_limit(operation, get_settings())
        assert cap < total // 2
        answer = drive(
            api.app,
            "POST",
            path,
            _pieces(total, head=head, tail=tail),
            headers={"content-type": content_type, "authorization": token},
        )
        assert answer.status == 413, (path, answer.body)
        assert "limit" in answer.body.decode()
        assert answer.consumed <= cap + 2 * 1024**2, (path, answer.consumed, cap)
        assert _files_under(app_env / "tmp") == []
        assert _files_under(app_env / "datasets") == []


def test_item3_validation_errors_do_not_echo_large_inputs(api: TestClient) -> None:
    """A 422 names the problem and shows the beginning of a large input, not the input."""
    resp = api.post("/api/v1/datasets", json={"name": "x" * 500_000})
    assert resp.status_code == 422, resp.text[:300]
    assert len(resp.content) < 2_000, len(resp.content)
    assert "name" in resp.text and "cut short" in resp.text
    nested = api.post("/api/v1/datasets", json={"name": ["y" * 1000] * 300})
    assert nested.status_code == 422 and len(nested.content) < 2_000, len(nested.content)


# --------------------------------------------------------------------------- item 6


def test_item6_lone_surrogate_in_login_username_is_a_422_with_security_headers(
    api: TestClient,
) -> None:
    client = TestClient(api.app, raise_server_exceptions=False)
    for body in (
        b'{"username": "a\\ud800", "password": "x"}',
        b'{"username": "a\\ud800"}',
        b'{"username": "\\udfff\\ud800", "password": "\\ud800"}',
    ):
        resp = client.post(
            "/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 422, resp.text
        assert "username" in resp.text and "unicode" in resp.text.lower()
        for name in SECURITY_HEADERS:
            assert name in resp.headers, name


def test_item6_a_server_error_carries_the_security_headers(app_env: Path) -> None:
    """A 500 (an unexpected exception in a route) is short JSON and has every security
    header; Starlette sends it from outside the app's middleware."""
    from backend.api.deps import Public
    from backend.core.db import upgrade_database
    from backend.main import create_app

    upgrade_database()
    app = create_app()

    def fault() -> None:
        raise RuntimeError("a fault the route did not expect")

    app.add_api_route("/api/v1/test-fault", fault, methods=["POST"], dependencies=[Public])
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.post("/api/v1/test-fault")
    assert resp.status_code == 500
    assert resp.json() == {"detail": "internal server error"}
    assert "a fault" not in resp.text
    for name in SECURITY_HEADERS:
        assert name in resp.headers, name
    assert resp.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------- also


def test_also_unknown_api_path_is_404_whatever_the_method(api: TestClient) -> None:
    """A POST (or PUT, PATCH, DELETE) to an API path no route serves is 404, as a GET is;
    a known path with a method it lacks stays 405."""
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        resp = api.request(method, "/api/v1/no-such-thing", content=b"{}")
        assert resp.status_code == 404, (method, resp.status_code)
        assert re.search("no such API route", resp.json()["detail"])
    assert api.delete("/api/v1/health").status_code == 405
