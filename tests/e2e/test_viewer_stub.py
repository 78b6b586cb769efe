"""The viewer in headless Chromium against a stub API with known volumes (no backend needed).

The stub's map has one positive blob on the lesion and one negative blob in the mirrored
healthy tissue, so the screenshot must show red, blue and the green lesion rim, and the
layer toggles must remove exactly what they control.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import (
    DIST_INDEX,
    chromium_page,
    count_colours,
    login,
    open_viewer,
    screenshot_canvas,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

MIN_PIXELS = 40


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    case = stub_api.write_synthetic_case(tmp_path_factory.mktemp("stub-volumes"))
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def test_viewer_draws_relevance_and_lesion(stub: stub_api.RunningStub, page: Page) -> None:
    url = f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={stub_api.ATTRIBUTION_ID}"
    open_viewer(page, url)

    counts = count_colours(screenshot_canvas(page, "viewer-stub.png"))
    assert counts.gray > counts.total * 0.02, f"the MR volume is not visible: {counts}"
    assert counts.red >= MIN_PIXELS, f"no positive (red) relevance: {counts}"
    assert counts.blue >= MIN_PIXELS, f"no negative (blue) relevance: {counts}"
    assert counts.green >= MIN_PIXELS, f"no lesion outline (green): {counts}"

    shown = page.get_by_test_id("convergence-delta").inner_text()
    assert math.isclose(float(shown), stub_api.CONVERGENCE_DELTA, rel_tol=6e-3)
    assert "stub run" in page.locator(".provenance").inner_text()

    page.get_by_role("checkbox", name="Relevance").uncheck()
    hidden = count_colours(screenshot_canvas(page, "viewer-stub-no-relevance.png", 800))
    assert hidden.red < MIN_PIXELS / 4 and hidden.blue < MIN_PIXELS / 4, hidden
    assert hidden.green >= MIN_PIXELS, f"the lesion outline went with the relevance: {hidden}"

    page.get_by_role("checkbox", name="Lesion outline").uncheck()
    bare = count_colours(screenshot_canvas(page, "viewer-stub-bare.png", 800))
    assert bare.green < MIN_PIXELS / 4, bare
    assert bare.gray > counts.total * 0.02, bare


def test_viewer_without_attribution_shows_volume_and_newest_map(
    stub: stub_api.RunningStub,
    page: Page,
) -> None:
    # Without ?attribution= the newest succeeded attribution of the subject is shown.
    open_viewer(page, f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}")
    counts = count_colours(screenshot_canvas(page, "viewer-stub-default.png"))
    assert counts.red >= MIN_PIXELS and counts.blue >= MIN_PIXELS, counts


def test_viewer_reports_errors(stub: stub_api.RunningStub, page: Page) -> None:
    page.goto(f"{stub.base_url}/viewer/999")
    viewer = page.locator('[data-viewer-state="error"]')
    viewer.wait_for(timeout=30_000)
    assert "no such API route" in viewer.get_by_role("alert").inner_text()


def test_writes_carry_the_csrf_header(stub: stub_api.RunningStub, page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{stub.base_url}/login")
    assert stub.api.csrf_failures == 0


def test_login_shows_the_server_message(stub: stub_api.RunningStub, tmp_path: Path) -> None:
    with chromium_page(tmp_path / "profile") as page:
        page.goto(f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}")
        page.wait_for_url(f"{stub.base_url}/login")  # not logged in: sent to the form
        page.get_by_label("Username").fill(stub_api.USERNAME)
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        alert = page.get_by_role("alert")
        alert.wait_for(timeout=10_000)
        assert alert.inner_text() == "Incorrect username or password"
        page.get_by_label("Password").fill(stub_api.PASSWORD)
        page.get_by_role("button", name="Log in").click()
        # Back where the user was going.
        page.wait_for_url(f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}", timeout=10_000)
