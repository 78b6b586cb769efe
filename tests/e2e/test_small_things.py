"""Issue 17 item 13: the small things seen by new users.

Against the stub API: the menu's links stand apart; the launch form with device cpu neither
offers nor refuses mixed precision, and a refused submit moves the focus to the first invalid
field; a clinician who types /runs/new is told why there is no form; the viewer's breadcrumb
names the dataset; the corrections-from-reviews form shows its controls whole and warns when
every corrected subject is in the test split; the run page fits 800 px.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api, stub_runs
from tests.e2e.browser import DIST_INDEX, chromium_page, login, open_viewer, save_screenshot

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
    runs = stub_runs.add_runs(api)
    api.role = "researcher"  # type: ignore[attr-defined]
    api.launched = []  # type: ignore[attr-defined]

    def projects(_query: dict) -> dict:
        project = {**api.extra_json["/api/v1/projects/1"], "role": api.role}  # type: ignore[attr-defined]
        return {"data": [project], "count": 1}

    def launch(body: dict) -> tuple[int, dict]:
        api.launched.append(body)  # type: ignore[attr-defined]
        return 201, runs[stub_runs.PARENT_RUN]

    api.extra_json["/api/v1/projects"] = projects
    api.post_routes["/api/v1/runs"] = launch
    review = {
        "review_id": 5,
        "reviewer": "dr-a",
        "reviewer_id": 2,
        "attribution_id": stub_api.ATTRIBUTION_ID,
        "method": "integrated_gradients",
        "missed_voxels": 40,
        "spurious_voxels": 12,
        "created_at": api.created,
    }
    api.extra_json[f"/api/v1/runs/{stub_runs.PARENT_RUN}/corrections"] = {
        "run_id": stub_runs.PARENT_RUN,
        "n_reviews": 1,
        "n_subjects": 1,
        "subjects": [
            {
                "subject_id": stub_api.SUBJECT_ID,
                "subject_key": "stub-lesion-01",
                "label": 1,
                "split": "test",
                "reviews": [review],
            }
        ],
    }
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    stub.api.role = "researcher"  # type: ignore[attr-defined]
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def test_menu_links_stand_apart(stub: stub_api.RunningStub, page: Page) -> None:
    links = page.locator(".topnav a")
    links.first.wait_for(timeout=30_000)  # the app has rendered its menu
    texts = links.all_inner_texts()
    assert texts[:2] == ["Datasets & runs", "Review"], texts
    boxes = [links.nth(i).bounding_box() for i in range(links.count())]
    assert all(b is not None for b in boxes)
    for left, right in zip(boxes, boxes[1:], strict=False):
        gap = right["x"] - (left["x"] + left["width"])
        assert gap >= 12, f"menu links {gap:.1f} px apart: {texts}"


def test_launch_form_cpu_and_focus(stub: stub_api.RunningStub, page: Page) -> None:
    page.goto(f"{stub.base_url}/runs/new")
    form = page.get_by_role("form", name="Launch run")
    form.wait_for(timeout=30_000)
    page.locator("select[name=device]").select_option("cpu")
    amp = page.locator("input[name=amp]")
    assert amp.is_disabled() and not amp.is_checked()
    assert "not used with device cpu" in amp.locator("xpath=..").inner_text()

    # Nothing chosen: refused, and the focus is on the first invalid field (the dataset).
    form.get_by_role("button", name="Launch").click()
    page.wait_for_function("() => document.activeElement?.getAttribute('name') === 'dataset'")
    assert page.locator(".field-invalid").count() >= 1
    save_screenshot(page, "launch-refused")

    # Valid with device cpu: launched, with amp off and no complaint about it.
    page.locator("select[name=dataset]").select_option("1")
    page.locator("input[name=name]").fill("cpu run")
    form.get_by_role("button", name="Launch").click()
    page.wait_for_url(f"**/runs/{stub_runs.PARENT_RUN}", timeout=10_000)
    (body,) = stub.api.launched  # type: ignore[attr-defined]
    assert body["config"]["device"] == "cpu" and body["config"]["amp"] is False, json.dumps(body)


def test_clinician_on_runs_new_gets_an_explanation(stub: stub_api.RunningStub, page: Page) -> None:
    stub.api.role = "clinician"  # type: ignore[attr-defined]
    page.goto(f"{stub.base_url}/runs/new")
    note = page.get_by_test_id("no-launch-rights")
    note.wait_for(timeout=30_000)
    text = note.inner_text()
    assert "researcher" in text and "clinician in stub project" in text, text
    assert page.get_by_role("form", name="Launch run").count() == 0
    save_screenshot(page, "clinician")


def test_viewer_breadcrumb_names_the_dataset(stub: stub_api.RunningStub, page: Page) -> None:
    open_viewer(page, f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}")
    assert page.get_by_test_id("dataset-crumb").inner_text() == stub.api.dataset["name"]


def test_from_reviews_form_is_whole_and_warns_about_the_test_split(
    stub: stub_api.RunningStub, page: Page
) -> None:
    page.goto(f"{stub.base_url}/runs/{stub_runs.PARENT_RUN}")
    panel = page.get_by_test_id("from-reviews")
    panel.wait_for(timeout=30_000)
    warning = panel.get_by_test_id("split-warning").inner_text()
    assert "test split" in warning and "would not change" in warning, warning
    # Every select is wide enough for its longest option, and every control stays in the form.
    clipped = panel.locator("form").evaluate(
        """form => {
            const out = [];
            const box = form.getBoundingClientRect();
            const ctx = document.createElement('canvas').getContext('2d');
            for (const el of form.querySelectorAll('input, select, button')) {
                const r = el.getBoundingClientRect();
                if (r.left < box.left - 1 || r.right > box.right + 1) out.push(el.name || el.textContent);
                if (el.tagName === 'SELECT') {
                    const style = getComputedStyle(el);
                    ctx.font = `${style.fontSize} ${style.fontFamily}`;
                    const longest = Math.max(...[...el.options].map(o => ctx.measureText(o.text).width));
                    // the text plus the arrow and padding
                    if (longest + 28 > r.width) out.push(`${el.name}: ${longest} px text in ${r.width} px`);
                }
            }
            return out;
        }"""
    )
    assert clipped == [], clipped
    panel.scroll_into_view_if_needed()
    save_screenshot(page, "from-reviews")


def test_run_page_fits_800_px(stub: stub_api.RunningStub, page: Page) -> None:
    page.set_viewport_size({"width": 800, "height": 900})
    page.goto(f"{stub.base_url}/runs/{stub_runs.CHILD_RUN}")
    page.locator(".chart [data-series]").first.wait_for(timeout=30_000)
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the run page is {overflow} px wider than 800 px"
    for chart in page.locator(".chart").all():
        box = chart.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 800, box
    save_screenshot(page, "run-800px")
