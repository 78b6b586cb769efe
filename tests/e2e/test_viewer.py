"""The viewer end to end: the real server and worker, a trained run and an IG map, in Chromium.

Logs in through the form, opens the viewer on a lesion subject's attribution, and checks the
rendered canvas for positive (red) and negative (blue) relevance and the green lesion outline,
and the provenance panel for the convergence delta the API reports.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.e2e.browser import (
    DIST_INDEX,
    chromium_page,
    count_colours,
    login,
    open_viewer,
    screenshot_canvas,
)

pytestmark = pytest.mark.e2e

MIN_PIXELS = 40


def test_viewer_shows_signed_relevance_and_lesion(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        open_viewer(
            page,
            f"{pipeline.base_url}/viewer/{pipeline.subject_id}?attribution={pipeline.attribution_id}",
        )
        counts = count_colours(screenshot_canvas(page, "viewer.png", settle_ms=2000))

        assert counts.gray > counts.total * 0.02, f"the MR volume is not visible: {counts}"
        assert counts.red >= MIN_PIXELS, f"no clearly red (pathological) relevance: {counts}"
        assert counts.blue >= MIN_PIXELS, f"no clearly blue (healthy) relevance: {counts}"
        assert counts.green >= MIN_PIXELS, f"no green lesion outline: {counts}"

        response = page.request.get(
            f"{pipeline.base_url}/api/v1/attributions/{pipeline.attribution_id}"
        )
        assert response.ok, response.text()
        delta = response.json()["convergence_delta"]
        shown = page.get_by_test_id("convergence-delta").inner_text()
        assert delta is not None and shown not in ("", "–")
        assert math.isclose(float(shown), delta, rel_tol=6e-3, abs_tol=1e-12), (shown, delta)

        # The layer toggle removes the relevance and nothing else.
        page.get_by_role("checkbox", name="Relevance").uncheck()
        hidden = count_colours(screenshot_canvas(page, "viewer-no-relevance.png", settle_ms=1000))
        assert hidden.red < MIN_PIXELS / 4 and hidden.blue < MIN_PIXELS / 4, hidden
        assert hidden.green >= MIN_PIXELS, hidden
        page.get_by_role("checkbox", name="Relevance").check()

        # Keyboard: "p" hides the pathological (red) relevance alone, "p" again brings it back.
        page.keyboard.press("p")
        no_red = count_colours(screenshot_canvas(page, "viewer-key-p.png", settle_ms=1000))
        assert no_red.red < MIN_PIXELS / 4, no_red
        assert no_red.blue >= MIN_PIXELS and no_red.green >= MIN_PIXELS, no_red
        assert not page.get_by_role("checkbox", name="Pathological").is_checked()
        page.keyboard.press("p")
        # "6": the 3D render alone; the view changes and the canvas with it.
        page.keyboard.press("6")
        page.wait_for_function(
            "() => document.querySelector('[data-viewer-view]').dataset.viewerView === 'render'"
        )
        rendered = count_colours(screenshot_canvas(page, "viewer-key-render.png", settle_ms=2000))
        assert rendered != counts and rendered.gray > 0, (rendered, counts)
        # "?": the help overlay lists the shortcuts; Escape closes it.
        page.keyboard.press("?")
        help_box = page.get_by_role("dialog", name="Keyboard shortcuts")
        assert "3D render" in help_box.inner_text()
        page.keyboard.press("Escape")
        help_box.wait_for(state="detached", timeout=5_000)
