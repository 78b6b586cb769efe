"""Issue 17 item 6: from a finished run, the test split's maps in one click, then the viewer.

Against the stub API: run 3 has succeeded and its dataset has one test subject. "Compute maps
for the test split" posts the batch request (checked: run and split), the page follows the
map's job through its progress to the end, and then offers "Open in viewer" (which shows the
map) and "Compare" (the compare page with the new map and the subject's other map).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api, stub_runs
from tests.e2e.browser import DIST_INDEX, chromium_page, login, open_viewer, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

NEW_MAP = 20
NEW_JOB = 120
# The job reports running with this progress for this many polls, then succeeds.
RUNNING_POLLS = 3


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    case = stub_api.write_synthetic_case(tmp_path_factory.mktemp("stub-volumes"))
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    api = running.api
    stub_runs.add_runs(api)
    run_id = stub_runs.PARENT_RUN
    # The subject's existing map comes from the other run: run 3 has no map yet.
    api.attribution["run_id"] = stub_runs.CHILD_RUN
    state: dict = {"posted": [], "job_polls": 0}
    new_map = {
        **api.attribution,
        "id": NEW_MAP,
        "run_id": run_id,
        "status": "queued",
        "job_id": NEW_JOB,
    }

    def job(_query: dict) -> dict:
        state["job_polls"] += 1
        polls = state["job_polls"]
        finished = polls > RUNNING_POLLS
        if finished:
            new_map["status"] = "succeeded"
        return {
            **stub_runs.job_body(api, NEW_JOB),
            "kind": "attribute",
            "status": "succeeded" if finished else "running",
            "progress": 1.0 if finished else polls / (RUNNING_POLLS + 1),
            "message": "map stored" if finished else "computing integrated_gradients",
        }

    def listing(query: dict) -> dict:
        maps = [api.attribution, *([new_map] if state["posted"] else [])]
        return {"data": maps, "count": len(maps)}

    def batch(body: dict) -> tuple[int, dict]:
        state["posted"].append(body)
        new_map["status"] = "queued"
        return 201, {"data": [new_map], "count": 1}

    api.extra_json["/api/v1/attributions"] = listing
    api.extra_json[f"/api/v1/attributions/{NEW_MAP}"] = new_map
    api.extra_json[f"/api/v1/jobs/{NEW_JOB}"] = job
    api.extra_files[f"/api/v1/attributions/{NEW_MAP}/display.nii.gz"] = case.display
    api.post_routes["/api/v1/attributions/batch"] = batch
    running.state = state  # type: ignore[attr-defined]
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def test_compute_test_split_maps_then_open_and_compare(
    stub: stub_api.RunningStub, page: Page
) -> None:
    state = stub.state  # type: ignore[attr-defined]
    page.goto(f"{stub.base_url}/runs/{stub_runs.PARENT_RUN}")
    panel = page.get_by_test_id("next-steps")
    button = panel.get_by_role("button", name="Compute maps for the test split")
    button.wait_for(timeout=30_000)
    assert panel.locator("tbody tr").count() == 0
    button.click()

    # Progress while the job runs, then the map and its two links.
    progress = page.get_by_role("progressbar", name="Maps of the test split")
    progress.wait_for(timeout=10_000)
    assert state["posted"] == [{"run_id": stub_runs.PARENT_RUN, "split": "test"}]
    seen = set()
    for _ in range(40):
        seen.add(int(progress.get_attribute("aria-valuenow") or 0))
        if panel.get_by_role("link", name="Open in viewer").count():
            break
        page.wait_for_timeout(500)
    save_screenshot(page, "done")
    assert 100 in seen and any(0 < v < 100 for v in seen), f"no progress shown: {sorted(seen)}"
    assert "1 of 1 maps computed" in panel.inner_text()
    assert state["job_polls"] > RUNNING_POLLS
    row = panel.locator(f'tr[data-attribution-id="{NEW_MAP}"]')
    assert row.get_attribute("data-status") == "succeeded"
    assert "stub-lesion-01" in row.inner_text()

    compare_href = row.get_by_role("link", name="Compare").get_attribute("href")
    assert compare_href == (
        f"/compare?subject={stub_api.SUBJECT_ID}&attributions={NEW_MAP},{stub_api.ATTRIBUTION_ID}"
    ), compare_href
    row.get_by_role("link", name="Open in viewer").click()
    page.wait_for_url(f"**/viewer/{stub_api.SUBJECT_ID}?attribution={NEW_MAP}")
    open_viewer(page, page.url)
    assert page.get_by_test_id("method").inner_text() == "Integrated gradients"
    save_screenshot(page, "viewer")
