"""Issue 17 item 1: the relevance overlay is drawn in stat-map colours, never darker than the MR.

Against the stub API (known volumes: a positive blob on the lesion, a negative one in the
mirrored healthy tissue). The same view is captured with and without the relevance layer; of
the screen pixels the overlay changes, at least 90 % must be red- or blue-dominant and none
darker than the MR beneath (tests/e2e/browser.py: overlay_colours). The colour-blind-safe scale
is measured the same way, with its own hues (orange and blue).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import (
    DIST_INDEX,
    chromium_page,
    login,
    open_viewer,
    overlay_colours,
    save_screenshot,
    screenshot_canvas,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

MIN_CHANGED = 200
MIN_DOMINANT = 0.90


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


def _measure(page: Page, name: str):
    relevance = page.get_by_role("checkbox", name="Relevance")
    relevance.check()
    on = screenshot_canvas(page, f"overlay-{name}-on.png", settle_ms=1500)
    relevance.uncheck()
    off = screenshot_canvas(page, f"overlay-{name}-off.png", settle_ms=1000)
    relevance.check()
    return overlay_colours(on, off)


def test_overlay_is_red_and_blue_and_never_darkens_the_mr(
    stub: stub_api.RunningStub, page: Page
) -> None:
    url = f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={stub_api.ATTRIBUTION_ID}"
    open_viewer(page, url)
    page.get_by_role("checkbox", name="Lesion outline").uncheck()  # green is not relevance

    stat = _measure(page, "statmap")
    print(f"stat-map scale: {stat}")
    assert stat.changed >= MIN_CHANGED, f"the overlay changes almost nothing: {stat}"
    assert stat.dominant_fraction >= MIN_DOMINANT, str(stat)
    assert stat.red > 0.2 * stat.changed and stat.blue > 0.1 * stat.changed, str(stat)
    assert stat.darker == 0, f"{stat} (mean brightness drop {stat.mean_drop:.1f})"
    save_screenshot(page, "statmap-page")

    # Threshold 0 shows all the faint relevance and the two signs touch: still no dark end, and
    # no dim purple seam where a red voxel meets a blue one (the canvas box has whole pixels).
    page.locator("input[name=threshold-positive]").fill("0")
    page.locator("input[name=threshold-negative]").fill("0")
    low = _measure(page, "statmap-threshold-0")
    print(f"stat-map scale, threshold 0: {low}")
    assert low.changed > 2 * stat.changed, (low, stat)
    assert low.dominant_fraction >= MIN_DOMINANT, str(low)
    assert low.darker == 0, str(low)

    # The colour-blind-safe pair: orange to yellow and blue to light blue; the caption says so.
    page.locator("select[name=colour-scale]").select_option("colourblind")
    # The choice is remembered: a reload keeps it and restores the default thresholds.
    open_viewer(page, url)
    assert page.locator("select[name=colour-scale]").input_value() == "colourblind"
    page.get_by_role("checkbox", name="Lesion outline").uncheck()
    safe = _measure(page, "colourblind")
    print(f"colour-blind-safe scale: {safe}")
    assert safe.changed >= MIN_CHANGED and safe.darker == 0, str(safe)
    assert safe.dominant_fraction >= MIN_DOMINANT, str(safe)
    legend = page.get_by_test_id("relevance-legend").inner_text()
    assert "orange" in legend.lower() and "blue" in legend.lower(), legend
    save_screenshot(page, "colourblind-page")


def test_overlay_colours_on_a_trained_map(pipeline, tmp_path: Path) -> None:
    """The same measurement on a real IG map of the live pipeline (noisy, both signs adjacent)."""
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        open_viewer(
            page,
            f"{pipeline.base_url}/viewer/{pipeline.subject_id}?attribution={pipeline.attribution_id}",
        )
        page.get_by_role("checkbox", name="Lesion outline").uncheck()
        measured = _measure(page, "trained")
        print(f"trained IG map, stat-map scale: {measured}")
        assert measured.changed >= MIN_CHANGED // 4, str(measured)
        assert measured.dominant_fraction >= MIN_DOMINANT, str(measured)
        assert measured.darker == 0, str(measured)
        save_screenshot(page, "trained-page")
