"""Issue 17 item 8: the continuous target (regression runs) without the API.

Against the stub API: the dataset names its target (EDSS); the subject table has a Target
column that saves a typed value (a decimal comma too) and refuses text; the upload form sends
the target with the subject; the bulk import says the manifest may carry a target column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api, stub_runs
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    case = stub_api.write_synthetic_case(tmp_path_factory.mktemp("stub-volumes"))
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    api = running.api
    stub_runs.add_runs(api)
    api.dataset["target_name"] = "EDSS"
    api.subject["target"] = None
    api.patches = []  # type: ignore[attr-defined]
    api.uploads = []  # type: ignore[attr-defined]

    def patch_subject(body: dict) -> tuple[int, dict]:
        api.patches.append(body)  # type: ignore[attr-defined]
        api.subject.update(body)
        return 200, api.subject

    def upload(body: bytes) -> tuple[int, dict]:
        api.uploads.append(body)  # type: ignore[attr-defined]
        return 201, {**api.subject, "id": 2, "subject_key": "sub-02", "target": 4.0}

    api.patch_routes[f"/api/v1/subjects/{stub_api.SUBJECT_ID}"] = patch_subject
    api.post_routes["/api/v1/datasets/1/subjects"] = upload
    api.extra_json["/api/v1/uploads"] = {"data": [], "count": 0}
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def _form_field(raw: bytes, name: str) -> str | None:
    match = re.search(rb'name="' + name.encode() + rb'"\r\n\r\n([^\r]*)\r\n', raw)
    return match.group(1).decode() if match else None


def test_target_in_table_upload_and_import(stub: stub_api.RunningStub, page: Page) -> None:
    page.goto(f"{stub.base_url}/datasets/1")
    cell = page.get_by_label("Target of stub-lesion-01")
    cell.wait_for(timeout=30_000)
    assert "Target (EDSS)" in page.locator("table thead").first.text_content()
    assert cell.input_value() == ""

    cell.fill("high")
    cell.press("Enter")
    assert "must be a number" in page.locator(".site-error").inner_text()
    assert stub.api.patches == []  # type: ignore[attr-defined]

    cell.fill("2,5")
    cell.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('[name=target-1]').value === '2.5' && !document.querySelector('.site-error')"
    )
    assert stub.api.patches == [{"target": 2.5}]  # type: ignore[attr-defined]

    # The upload form sends the target with the subject.
    form = page.get_by_role("form", name="Upload subject")
    form.locator("input[name=subject_key]").fill("sub-02")
    form.locator("input[name=image]").set_input_files(str(stub.api.case.image))
    target = form.get_by_label("Target: EDSS (optional, regression)")
    target.fill("4")
    form.get_by_role("button", name="Upload").click()
    form.locator(".ok").wait_for(timeout=10_000)
    (sent,) = stub.api.uploads  # type: ignore[attr-defined]
    assert _form_field(sent, "target") == "4" and _form_field(sent, "subject_key") == "sub-02"

    help_text = page.locator("p", has_text="manifest.csv").first.inner_text()
    assert "target is the continuous value of regression runs" in help_text, help_text
    page.get_by_label("Target of stub-lesion-01").scroll_into_view_if_needed()
    save_screenshot(page, "dataset")
