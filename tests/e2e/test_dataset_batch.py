"""Issue 17 item 10: maps for several subjects, or a whole split, from the dataset page.

Against the stub API with two subjects (a test one and a train one) and a finished run: ticking
subjects and "Compute IG for N selected" posts one batch request naming them; choosing a split
posts one naming the split; each new map's status shows in its row until it is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api, stub_runs
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

TRAIN_SUBJECT = 2


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    case = stub_api.write_synthetic_case(tmp_path_factory.mktemp("stub-volumes"))
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    api = running.api
    stub_runs.add_runs(api)
    api.attribution["run_id"] = stub_runs.CHILD_RUN  # run 3 has no map yet
    train = {**api.subject, "id": TRAIN_SUBJECT, "subject_key": "stub-healthy-02", "split": "train"}
    subjects = [api.subject, train]
    api.extra_json["/api/v1/datasets/1/subjects"] = {"data": subjects, "count": 2}
    api.extra_json["/api/v1/uploads"] = {"data": [], "count": 0}
    posted: list[dict] = []
    made: list[dict] = []
    polls: dict[int, int] = {}
    api.posted = posted  # type: ignore[attr-defined]

    def job_route(job_id: int):
        def job(_query: dict) -> dict:
            polls[job_id] = polls.get(job_id, 0) + 1
            done = polls[job_id] > 2
            if done:
                next(a for a in made if a["job_id"] == job_id)["status"] = "succeeded"
            return {
                **stub_runs.job_body(api, job_id),
                "kind": "attribute",
                "status": "succeeded" if done else "running",
                "progress": 1.0 if done else 0.5,
            }

        return job

    def batch(body: dict) -> tuple[int, dict]:
        posted.append(body)
        ids = body.get("subject_ids") or [
            s["id"] for s in subjects if s["split"] == body.get("split")
        ]
        out = []
        for subject_id in ids:
            attribution_id = 30 + len(made)
            row = {
                **api.attribution,
                "id": attribution_id,
                "run_id": body["run_id"],
                "subject_id": subject_id,
                "status": "queued",
                "job_id": 100 + attribution_id,
            }
            made.append(row)
            api.extra_json[f"/api/v1/jobs/{row['job_id']}"] = job_route(row["job_id"])
            out.append(row)
        return 201, {"data": out, "count": len(out)}

    def listing(query: dict) -> dict:
        rows = [a for a in [api.attribution, *made] if str(a["run_id"]) in query.get("run_id", [])]
        return {"data": rows, "count": len(rows)}

    api.post_routes["/api/v1/attributions/batch"] = batch
    api.extra_json["/api/v1/attributions"] = listing
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def test_compute_selected_subjects_and_a_split(stub: stub_api.RunningStub, page: Page) -> None:
    posted = stub.api.posted  # type: ignore[attr-defined]
    page.goto(f"{stub.base_url}/datasets/1")
    bar = page.get_by_test_id("batch-bar")
    selected_button = bar.get_by_role("button", name="Compute IG for 0 selected")
    selected_button.wait_for(timeout=30_000)
    assert selected_button.is_disabled()

    page.get_by_label("Select stub-lesion-01").check()
    bar.get_by_role("button", name="Compute IG for 1 selected").click()
    bar.get_by_role("status").wait_for(timeout=10_000)
    assert posted[0]["subject_ids"] == [stub_api.SUBJECT_ID] and "split" not in posted[0]
    assert posted[0]["run_id"] == stub_runs.PARENT_RUN
    assert posted[0]["params"] == {"steps": 32, "baseline": "zero"}
    row = page.locator(f"tr[data-subject-id='{stub_api.SUBJECT_ID}']")
    row.get_by_role("link", name="View").wait_for(timeout=20_000)

    page.get_by_label("Split to compute").select_option("train")
    bar.get_by_role("button", name="Compute IG for the train split (1)").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=batch-bar] [role=status]')?.textContent.includes('train split')"
    )
    assert posted[1]["split"] == "train" and "subject_ids" not in posted[1]
    train_row = page.locator(f"tr[data-subject-id='{TRAIN_SUBJECT}']")
    train_row.get_by_role("link", name="View").wait_for(timeout=20_000)
    save_screenshot(page, "dataset-batch")
