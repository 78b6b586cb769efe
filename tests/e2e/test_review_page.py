"""Issue 17 item 12: the review page at 1280x800 against the stub API.

The selected queue item stands out with readable contrast; the drawing tools, the rating and
the submit button are on screen together beside the map; the Shortcuts button and "?" open
the help, which lists the drawing keys; 1 is the axial view as in the viewer (not a pen) and
the pens have their own letters; a submitted review can be reopened with its answers and its
correction, amended, and both versions stay.

The stub answers as a blinded round does: maps are named by an item token only, and the map's
id answers 404 (reopening goes by the token the review carries).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import DIST_INDEX, READY_TIMEOUT_MS, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

ITEM = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # the map's opaque token for the stub user


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    folder = tmp_path_factory.mktemp("stub-volumes")
    case = stub_api.write_synthetic_case(folder)
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    api = running.api
    reviews: list[dict] = []
    corrections: dict[int, bytes] = {}
    api.reviews = reviews  # type: ignore[attr-defined]
    api.corrections = corrections  # type: ignore[attr-defined]
    api.extra_json["/api/v1/projects"] = {
        "data": [
            {
                "id": 1,
                "name": "stub project",
                "description": "",
                "role": "clinician",
                "created_at": api.created,
            }
        ],
        "count": 1,
    }

    item = {
        "item": ITEM,
        "attribution_id": None,
        "subject_id": stub_api.SUBJECT_ID,
        "label": "Map A",
        "stats": case.stats,
        "run_id": None,
        "run_name": None,
        "method": None,
    }

    def queue(_query: dict) -> dict:
        done = {r["item"] for r in reviews}
        items = [item]
        pending = [i for i in items if i["item"] not in done]
        return {
            "project_id": 1,
            "blinded": True,
            "enforced": True,
            "data": pending,
            "count": len(pending),
            "reviewed": len(items) - len(pending),
        }

    def create(body: dict) -> tuple[int, dict]:
        if "attribution_id" in body or body.get("item") != ITEM:
            return 404, {"detail": "review item not found"}  # a blinded round: tokens only
        review = {
            "id": 100 + len(reviews),
            "attribution_id": None,
            "item": body["item"],
            "label": "Map A",
            "reviewer_id": api.user["id"],
            "rating": body["rating"],
            "trust": body["trust"],
            "comment": body.get("comment", ""),
            "created_at": api.created,
            "has_correction": False,
        }
        reviews.append(review)
        return 201, review

    def put_correction(review_id: int):
        def handler(body: bytes) -> tuple[int, dict]:
            corrections[review_id] = body
            path = folder / f"correction-{review_id}.nii.gz"
            path.write_bytes(gzip.compress(body))
            api.extra_files[f"/api/v1/reviews/{review_id}/correction.nii.gz"] = path
            next(r for r in reviews if r["id"] == review_id)["has_correction"] = True
            return 200, {"review_id": review_id, "voxels": 1}

        return handler

    api.extra_json["/api/v1/reviews/queue"] = queue
    api.extra_json[f"/api/v1/reviews/items/{ITEM}"] = lambda _q: item
    api.extra_files[f"/api/v1/reviews/items/{ITEM}/display.nii.gz"] = case.display
    # A blinded reviewer gets 404 for the map by id: the page must not need it.
    api.errors[f"/api/v1/attributions/{stub_api.ATTRIBUTION_ID}"] = (404, "attribution 7 not found")
    api.extra_json["/api/v1/reviews"] = lambda _q: {"data": reviews, "count": len(reviews)}
    api.extra_json["/api/v1/reviews/agreement"] = {
        "project_id": 1,
        "run_id": None,
        "n_maps": 0,
        "n_raters": 1,
        "n_reviews": len(reviews),
        "mean_kappa": None,
        "trust_agreement": None,
        "pairs": [],
    }
    api.post_routes["/api/v1/reviews"] = create
    for review_id in range(100, 105):
        api.put_routes[f"/api/v1/reviews/{review_id}/correction"] = put_correction(review_id)
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        page.set_viewport_size({"width": 1280, "height": 800})
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def _wait_ready(page: Page) -> None:
    page.wait_for_function(
        """() => {
            const v = document.querySelector('.review-item [data-viewer-state]');
            return v && ['ready', 'error'].includes(v.dataset.viewerState);
        }""",
        timeout=READY_TIMEOUT_MS,
    )
    state = page.locator(".review-item [data-viewer-state]").get_attribute("data-viewer-state")
    assert state == "ready", page.locator(".review-item [role=alert]").all_inner_texts()


def _contrast(page: Page, selector: str) -> float:
    """WCAG contrast ratio of an element's text colour against its background colour."""
    return page.eval_on_selector(
        selector,
        """el => {
            const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
            const lum = c => {
                const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                return 0.2126 * r + 0.7152 * g + 0.0722 * b;
            };
            const st = getComputedStyle(el);
            const a = lum(rgb(st.color)), b = lum(rgb(st.backgroundColor));
            return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        }""",
    )


def _drawn(page: Page) -> int:
    return int(page.locator("[data-drawn-voxels]").get_attribute("data-drawn-voxels") or 0)


def test_review_page_keys_layout_and_amending(stub: stub_api.RunningStub, page: Page) -> None:
    page.goto(f"{stub.base_url}/review?project=1")
    current = page.locator(".review-queue .queue-item.current")
    current.wait_for(timeout=30_000)
    assert current.get_attribute("aria-current") == "true"
    contrast = _contrast(page, ".review-queue .queue-item.current")
    assert contrast >= 4.5, f"selected queue item contrast {contrast:.2f}"
    _wait_ready(page)

    # Drawing tools, rating and submit on screen together, beside the map, at 1280x800.
    page.locator(".review-item > h2").scroll_into_view_if_needed()
    page.evaluate("() => document.querySelector('.review-item').scrollIntoView()")
    tools = page.locator(".draw-tools").bounding_box()
    rating = page.locator(".review-form fieldset").first.bounding_box()
    submit = page.get_by_role("button", name="Submit review").bounding_box()
    canvas = page.locator(".review-item canvas.viewer-canvas").bounding_box()
    assert tools and rating and submit and canvas
    for name, box in (("drawing tools", tools), ("rating", rating), ("submit", submit)):
        assert box["y"] >= 0 and box["y"] + box["height"] <= 800, (name, box)
        assert box["x"] >= canvas["x"] + canvas["width"] - 1, (name, "not beside the map")
    save_screenshot(page, "layout-1280x800")

    # "?" and the Shortcuts button open the help with the drawing keys; Escape closes it.
    page.locator(".review-item > h2").click()
    page.keyboard.press("?")
    help_box = page.get_by_role("dialog", name="Keyboard shortcuts")
    help_box.wait_for(timeout=5_000)
    assert "Pen 1: draw a missed lesion" in help_box.inner_text()
    assert "Axial slice" in help_box.inner_text()
    save_screenshot(page, "help")
    page.keyboard.press("Escape")
    help_box.wait_for(state="detached", timeout=5_000)
    page.get_by_role("button", name="Shortcuts").click()
    help_box.wait_for(timeout=5_000)
    page.keyboard.press("Escape")
    help_box.wait_for(state="detached", timeout=5_000)

    # 1 is the axial view, as in the viewer; it does not pick a pen. d picks pen 1.
    viewer = page.locator(".review-item [data-viewer-view]")
    page.keyboard.press("1")
    page.wait_for_function(
        "() => document.querySelector('.review-item [data-viewer-view]').dataset.viewerView === 'axial'"
    )
    assert page.locator(".draw-tools").get_attribute("data-draw-tool") == "off"
    page.keyboard.press("d")
    assert page.locator(".draw-tools").get_attribute("data-draw-tool") == "missed"
    box = page.locator(".review-item canvas.viewer-canvas").bounding_box()
    assert box is not None
    for fy in (0.4, 0.45, 0.5):
        y = box["y"] + box["height"] * fy
        page.mouse.move(box["x"] + box["width"] * 0.35, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=12)
        page.mouse.up()
    page.wait_for_timeout(300)
    first_drawn = _drawn(page)
    assert first_drawn > 0, "no voxels were drawn"
    assert viewer.get_attribute("data-viewer-view") == "axial"

    page.get_by_label("4 – mostly on the lesions").check()
    page.locator("input[name=trust][value=yes]").check()
    page.locator("textarea[name=comment]").fill("first look")
    page.get_by_role("button", name="Submit review").click()
    saved = page.locator("[data-review-status=saved]")
    saved.wait_for(timeout=30_000)
    reviews = stub.api.reviews  # type: ignore[attr-defined]
    assert len(reviews) == 1 and reviews[0]["rating"] == 4 and reviews[0]["item"] == ITEM
    assert reviews[0]["id"] in stub.api.corrections  # type: ignore[attr-defined]

    # Reopen: the answers and the correction come back; amend the rating.
    reopen = page.locator(f"[data-reopen-item='{ITEM}']")
    reopen.click()
    _wait_ready(page)
    assert page.get_by_label("4 – mostly on the lesions").is_checked()
    assert page.locator("textarea[name=comment]").input_value() == "first look"
    page.wait_for_function(
        "() => Number(document.querySelector('[data-drawn-voxels]').dataset.drawnVoxels) > 0"
    )
    assert _drawn(page) == first_drawn, "the earlier correction did not come back whole"
    page.get_by_label("2 – mostly off the lesions").check()
    page.get_by_role("button", name="Submit amended review").click()
    page.wait_for_function(
        "() => document.querySelector('[data-review-status=saved]')?.textContent.includes('1 earlier version kept')"
    )
    assert [r["rating"] for r in reviews] == [4, 2], reviews
    reopen.click()
    history = page.get_by_test_id("review-history")
    history.wait_for(timeout=10_000)
    assert history.locator("li").count() == 2
    assert page.get_by_label("2 – mostly off the lesions").is_checked()
    save_screenshot(page, "reopened")
