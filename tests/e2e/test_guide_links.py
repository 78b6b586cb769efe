"""Issue 17 item 11: the user guide and the API reference inside the app, and a README that
opens with a picture of the viewer showing a map.

Against the stub API: the menu links to both; the guide renders docs/user-guide.md with every
screenshot loaded; the API reference lists the operations of the OpenAPI document, including
the batch endpoint, and links the raw document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import DIST_INDEX, REPO, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


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


def test_guide_and_api_reference_in_the_app(stub: stub_api.RunningStub, page: Page) -> None:
    page.locator(".topnav").get_by_role("link", name="User guide").click()
    guide = page.get_by_test_id("user-guide")
    guide.wait_for(timeout=30_000)
    assert guide.locator("h1").inner_text() == "Attrivue user guide"
    written = re.findall(r"!\[[^\]]*\]\(img/([^)]+)\)", (REPO / "docs/user-guide.md").read_text())
    images = guide.locator("img")
    assert images.count() == len(written) >= 5
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=user-guide] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=20_000,
    )
    assert "Keyboard shortcuts" in guide.inner_text() or "shortcuts" in guide.inner_text()
    save_screenshot(page, "guide")

    page.locator(".topnav").get_by_role("link", name="API").click()
    reference = page.get_by_test_id("api-reference")
    reference.wait_for(timeout=30_000)
    doc = json.loads((REPO / "frontend/openapi.json").read_text())
    operations = sum(
        1
        for item in doc["paths"].values()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )
    assert reference.locator("tr[data-operation]").count() == operations
    batch = reference.locator("tr[data-operation=createAttributionBatch]").inner_text()
    assert "POST" in batch and "/api/v1/attributions/batch" in batch
    assert reference.get_by_role("link", name="/api/v1/openapi.json").get_attribute("href") == (
        "/api/v1/openapi.json"
    )
    save_screenshot(page, "api")


def test_readme_opens_with_a_picture_of_the_viewer() -> None:
    readme = (REPO / "README.md").read_text()
    before_first_section = readme.split("\n## ", 1)[0]
    pictures = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", before_first_section)
    assert pictures, "no picture before the README's first section"
    alt, path = pictures[0]
    assert "viewer" in alt.lower(), alt
    assert (REPO / path).is_file() and (REPO / path).stat().st_size < 200_000, path
