"""Issue 17 item 2: map compare with one colour scale, the viewer's controls and a sound layout.

Against the stub API with two maps of one subject: the stub's map and the same map at a quarter
of its strength (a weaker method). With the default shared scale a colour means the same value
in both panels, so the weak map shows fewer coloured pixels and never reaches the peak colour
(yellow); fitted per panel, both panels look alike, and the page says which scale is in use.
One set of controls (layers, opacity, thresholds) drives both panels. No panel has an empty
tile, and at 800 px the page does not overflow and the panels stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e import stub_api
from tests.e2e.browser import (
    ARTIFACTS,
    DIST_INDEX,
    READY_TIMEOUT_MS,
    chromium_page,
    login,
    save_screenshot,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

WEAK_ID = 8
WEAK_FACTOR = 0.25


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    folder = tmp_path_factory.mktemp("stub-volumes")
    case = stub_api.write_synthetic_case(folder)
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    stub_api.add_scaled_map(
        running, folder, WEAK_ID, WEAK_FACTOR, method="saliency", params={}, convergence_delta=None
    )
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def _open(page: Page, base_url: str, extra: str = "") -> None:
    page.goto(
        f"{base_url}/compare?subject={stub_api.SUBJECT_ID}"
        f"&attributions={stub_api.ATTRIBUTION_ID},{WEAK_ID}{extra}"
    )
    page.wait_for_function(
        """() => {
            const el = document.querySelector('[data-compare-state]');
            return el && ['ready', 'error'].includes(el.dataset.compareState);
        }""",
        timeout=READY_TIMEOUT_MS,
    )
    assert page.locator("[data-compare-state]").get_attribute("data-compare-state") == "ready"


def _panels(page: Page, name: str, settle_ms: int = 1500) -> list[np.ndarray]:
    page.wait_for_timeout(settle_ms)
    ARTIFACTS.mkdir(exist_ok=True)
    out = []
    for i in range(page.locator(".compare-panel").count()):
        path = ARTIFACTS / f"compare-controls-{name}-{i}.png"
        page.locator(".compare-panel").nth(i).locator("canvas.viewer-canvas").screenshot(
            path=str(path)
        )
        out.append(np.asarray(Image.open(path).convert("RGB")).astype(np.int16))
    return out


# The panels without relevance (MR, crosshair, lesion outline), set by the test first.
BARE: list[np.ndarray] = []


def _changed(rgb: np.ndarray, index: int) -> np.ndarray:
    return np.abs(rgb - BARE[index]).max(axis=-1) > 12


def _coloured(rgb: np.ndarray, index: int) -> int:
    """Pixels the relevance overlay changes in panel `index`."""
    return int(_changed(rgb, index).sum())


def _yellow(rgb: np.ndarray, index: int) -> int:
    """Changed pixels in the peak colour of the red-yellow ramp."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int((_changed(rgb, index) & (r > 235) & (g > 225) & (b < 120)).sum())


def _no_empty_tile(rgb: np.ndarray) -> None:
    """Every quarter of a panel shows MR: a multiplanar grid's empty fourth tile would not."""
    h, w = rgb.shape[:2]
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    mr = (spread <= 12) & (rgb[..., 0] >= 40)
    for rows in (slice(0, h // 2), slice(h // 2, h)):
        for cols in (slice(0, w // 2), slice(w // 2, w)):
            share = mr[rows, cols].mean()
            assert share > 0.02, f"a quarter of the panel shows no MR ({share:.3f})"


def test_compare_shares_one_scale_and_drives_all_panels(
    stub: stub_api.RunningStub, page: Page
) -> None:
    _open(page, stub.base_url)
    relevance = page.locator(".compare-controls input[name=relevance]")
    relevance.uncheck()
    BARE[:] = _panels(page, "no-relevance")
    relevance.check()
    note = page.get_by_test_id("scale-note").inner_text()
    assert "One colour scale for all 2 panels" in note, note
    assert page.get_by_test_id("shared-colorbar").count() == 1
    assert page.locator(".compare-panel .colorbar").count() == 0
    # The shared bar runs to the strongest map's peak.
    ticks = page.get_by_test_id("shared-colorbar").locator(".colorbar-ticks span").all_inner_texts()
    assert f"{stub.api.attribution['stats']['max']:.3g}" in ticks, ticks
    strong, weak = _panels(page, "shared")
    for rgb in (strong, weak):
        _no_empty_tile(rgb)
    print(
        f"shared: changed {_coloured(strong, 0)} / {_coloured(weak, 1)} px, "
        f"yellow {_yellow(strong, 0)} / {_yellow(weak, 1)}"
    )
    assert _coloured(strong, 0) > 200
    assert _coloured(weak, 1) < 0.6 * _coloured(strong, 0), (
        "the weak map looks as strong as the other"
    )
    assert _yellow(strong, 0) > 20 and _yellow(weak, 1) == 0
    save_screenshot(page, "shared")

    # Per panel: said on screen, each panel its own bar, and the weak map looks like the other.
    page.get_by_label("Each panel to its own peak").click()  # click: see "Shared" below
    page.wait_for_url("**scale=panel**")
    # The page re-renders from the URL after the URL changes: wait for the note, not the URL.
    expect(page.get_by_test_id("scale-note")).to_contain_text("not comparable")
    page.wait_for_function(
        "() => document.querySelector('[data-compare-state]')?.dataset.compareState === 'ready'"
    )
    assert page.locator(".compare-panel .colorbar").count() == 2
    assert page.get_by_test_id("shared-colorbar").count() == 0
    strong_p, weak_p = _panels(page, "per-panel")
    print(f"per panel: coloured {_coloured(strong_p, 0)} / {_coloured(weak_p, 1)}")
    assert abs(_coloured(weak_p, 1) - _coloured(strong_p, 0)) < 0.1 * _coloured(strong_p, 0)
    assert _yellow(weak_p, 1) > 20
    save_screenshot(page, "per-panel")

    # One set of controls for both panels: the relevance layer, then a higher threshold.
    # click, not check: the scale lives in the URL, and the page re-renders from it, so the
    # radio's state may lag the click (Playwright's check() then reports a failed click).
    page.get_by_label("Shared by all panels").click()
    page.wait_for_url(lambda url: "scale=shared" in url)
    expect(page.get_by_label("Shared by all panels")).to_be_checked()
    expect(page.get_by_test_id("scale-note")).to_contain_text("One colour scale")
    page.wait_for_function(
        "() => document.querySelector('[data-compare-state]')?.dataset.compareState === 'ready'"
    )
    relevance.uncheck()
    hidden = _panels(page, "no-relevance-again", 1000)
    assert all(_coloured(rgb, i) < 20 for i, rgb in enumerate(hidden)), "relevance still shown"
    relevance.check()
    # Healthy off: only the blue goes, in both panels.
    page.locator(".compare-controls input[name=negative]").uncheck()
    no_blue = _panels(page, "no-healthy", 1000)
    for i, rgb in enumerate(no_blue):
        blue = _changed(rgb, i) & (rgb[..., 2] > rgb[..., 0] + 24)
        assert int(blue.sum()) < 20 and _coloured(rgb, i) > 0, i
    page.locator(".compare-controls input[name=negative]").check()
    page.locator(".compare-controls input[name=threshold-positive]").fill("0.6")
    page.locator(".compare-controls input[name=threshold-negative]").fill("0.6")
    shown = page.get_by_test_id("threshold-positive").inner_text()
    expected = 0.6 * stub.api.attribution["stats"]["max"]
    assert abs(float(shown) - expected) < 0.01 * expected, (shown, expected)
    high = _panels(page, "threshold-0.6", 1000)
    assert 0 < _coloured(high[0], 0) < 0.6 * _coloured(strong, 0)
    assert _coloured(high[1], 1) < 20, "the weak map is below the shared threshold everywhere"
    page.locator(".compare-controls input[name=opacity]").fill("0.3")
    faint = _panels(page, "opacity-0.3", 1000)
    assert _yellow(faint[0], 0) == 0 < _yellow(high[0], 0), "opacity 0.3 still shows full yellow"


def test_compare_is_sound_at_800_px(stub: stub_api.RunningStub, page: Page) -> None:
    page.set_viewport_size({"width": 800, "height": 900})
    _open(page, stub.base_url)
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than the window"
    boxes = [
        page.locator(".compare-panel").nth(i).bounding_box()
        for i in range(page.locator(".compare-panel").count())
    ]
    assert all(b is not None for b in boxes)
    first, second = boxes
    assert second["y"] >= first["y"] + first["height"] - 1, "the panels do not stack at 800 px"
    for box in boxes:
        assert box["width"] >= 600, box
    for rgb in _panels(page, "800px"):
        _no_empty_tile(rgb)
    controls = page.locator(".compare-controls").bounding_box()
    assert controls is not None and controls["x"] + controls["width"] <= 800
    save_screenshot(page, "800px")
