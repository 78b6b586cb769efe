"""The Content-Security-Policy the app sends does not break the viewer (NiiVue: WebGL, blob:
volumes, workers, wasm decoders): the stub API of the viewer tests, serving every answer with
the app's security headers, drives the same viewer in headless Chromium; no CSP violation is
reported and the relevance and lesion layers are drawn."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from backend.api.middleware import CONTENT_SECURITY_POLICY
from tests.e2e import stub_api
from tests.e2e.browser import (
    DIST_INDEX,
    chromium_page,
    count_colours,
    login,
    open_viewer,
    screenshot_canvas,
)

pytestmark = pytest.mark.e2e


def test_viewer_works_under_the_apps_csp(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert DIST_INDEX.is_file(), "make frontend builds the app"
    original = BaseHTTPRequestHandler.end_headers

    def end_headers(self: BaseHTTPRequestHandler) -> None:
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("X-Content-Type-Options", "nosniff")
        original(self)

    monkeypatch.setattr(BaseHTTPRequestHandler, "end_headers", end_headers)
    case = stub_api.write_synthetic_case(tmp_path / "volumes")
    stub = stub_api.start_stub(DIST_INDEX.parent, case)
    violations: list[str] = []
    try:
        with chromium_page(tmp_path / "profile") as page:
            page.on(
                "console",
                lambda msg: (
                    violations.append(msg.text)
                    if "Content Security Policy" in msg.text or "Refused to" in msg.text
                    else None
                ),
            )
            login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
            open_viewer(
                page,
                f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}"
                f"?attribution={stub_api.ATTRIBUTION_ID}",
            )
            headers = page.request.get(f"{stub.base_url}/").headers
            counts = count_colours(screenshot_canvas(page, "viewer-csp.png"))
    finally:
        stub.close()
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert violations == [], violations
    assert counts.red >= 40 and counts.blue >= 40 and counts.green >= 40, counts


def test_also_api_docs_render_under_the_apps_csp(app_env: Path, tmp_path: Path) -> None:
    """Issue 16 "Also": /docs drew nothing under the CSP (CDN script, inline script). Swagger
    UI is now served from the server's own files with the app's CSP unchanged."""
    import threading

    import uvicorn

    from backend.main import create_app
    from tests.helpers import free_port, wait_for

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="the server to start")
    violations: list[str] = []
    try:
        with chromium_page(tmp_path / "profile") as page:
            page.on(
                "console",
                lambda msg: (
                    violations.append(msg.text)
                    if "Content Security Policy" in msg.text or "Refused to" in msg.text
                    else None
                ),
            )
            page.goto(f"http://127.0.0.1:{port}/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
            assert "Attrivue" in page.inner_text(".swagger-ui .info .title")
            assert page.locator(".opblock").count() > 20  # the operations are listed
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert violations == []
