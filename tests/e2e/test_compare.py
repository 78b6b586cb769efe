"""The compare viewer and the run page end to end, against the live server of ``pipeline``.

Opens /compare with the pipeline's IG map and a saliency map of the same subject, checks that
both panels render signed relevance (red and blue), and that moving the crosshair in one panel
moves it in the other (NiiVue's broadcastTo). Then opens the run page and checks that it draws
the training curves as SVG paths and shows the final test metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_job
from tests.e2e.browser import (
    ARTIFACTS,
    DIST_INDEX,
    READY_TIMEOUT_MS,
    chromium_page,
    count_colours,
    login,
)

pytestmark = pytest.mark.e2e

# Lower than test_viewer's 40: each panel is about half the single viewer, and a saliency map is
# sparse and noisy, so fewer of its voxels pass the default 15 % threshold at full colour.
MIN_PIXELS = 15


@pytest.fixture(scope="module")
def saliency_id(pipeline) -> int:
    """A second map of the pipeline's subject, from another method."""
    with pipeline.client() as client:
        response = client.post(
            "/api/v1/attributions",
            json={
                "run_id": pipeline.run_id,
                "subject_id": pipeline.subject_id,
                "method": "saliency",
            },
        )
        assert response.status_code == 201, response.text
        wait_job(client, response.json()["job_id"], timeout=300)
        return response.json()["id"]


def _skip_without_dist() -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")


def _crosshairs(page) -> list[str]:
    return page.eval_on_selector_all(
        ".compare-panel", "els => els.map(e => e.dataset.crosshair || '')"
    )


def test_compare_view_links_two_maps(pipeline, saliency_id: int, tmp_path: Path) -> None:
    _skip_without_dist()
    ids = [pipeline.attribution_id, saliency_id]
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(
            f"{pipeline.base_url}/compare?subject={pipeline.subject_id}"
            f"&attributions={ids[0]},{ids[1]}"
        )
        page.wait_for_function(
            """() => {
                const el = document.querySelector('[data-compare-state]');
                return el && ['ready', 'error'].includes(el.dataset.compareState);
            }""",
            timeout=READY_TIMEOUT_MS,
        )
        grid = page.locator("[data-compare-state]")
        alerts = page.locator(".compare-panel [role=alert]").all_inner_texts()
        assert grid.get_attribute("data-compare-state") == "ready", alerts
        panels = page.locator(".compare-panel")
        assert panels.count() == 2
        assert page.locator("canvas.viewer-canvas").count() == 2

        # Each panel is labelled with its run and method.
        labels = panels.locator("> figcaption").all_inner_texts()
        assert "integrated_gradients" in labels[0] and "saliency" in labels[1], labels
        assert all("lc-only smoke" in label for label in labels), labels

        page.wait_for_timeout(2000)
        ARTIFACTS.mkdir(exist_ok=True)
        for index, attribution_id in enumerate(ids):
            path = ARTIFACTS / f"compare-panel-{index}.png"
            panels.nth(index).locator("canvas.viewer-canvas").screenshot(path=str(path))
            counts = count_colours(path)
            assert counts.red >= MIN_PIXELS, f"map {attribution_id}: no red relevance {counts}"
            assert counts.blue >= MIN_PIXELS, f"map {attribution_id}: no blue relevance {counts}"

        page.wait_for_function(
            "() => [...document.querySelectorAll('.compare-panel')].every(e => e.dataset.crosshair)",
            timeout=30_000,
        )
        before = _crosshairs(page)
        # Click in the first panel, away from the current crosshair: both panels follow.
        canvas = panels.nth(0).locator("canvas.viewer-canvas")
        box = canvas.bounding_box()
        assert box is not None
        for fx, fy in ((0.2, 0.25), (0.3, 0.35)):
            canvas.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
            page.wait_for_timeout(500)
            after = _crosshairs(page)
            if after[0] != before[0]:
                break
        page.wait_for_function(
            """(before) => {
                const c = [...document.querySelectorAll('.compare-panel')].map(e => e.dataset.crosshair);
                return c[0] !== before && c[1] === c[0];
            }""",
            arg=before[0],
            timeout=30_000,
        )
        after = _crosshairs(page)
        assert after[0] != before[0] and after[1] == after[0], (before, after)


def test_run_page_shows_curves_and_test_metrics(pipeline, tmp_path: Path) -> None:
    _skip_without_dist()
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/runs/{pipeline.run_id}")
        page.wait_for_selector("[data-testid=test-metrics]", timeout=60_000)
        page.wait_for_selector("svg [data-series] path", timeout=60_000)
        series = page.eval_on_selector_all(
            "svg [data-series]",
            "els => els.map(e => [e.dataset.series, e.querySelector('path').getAttribute('d')])",
        )
        names = {name for name, _ in series}
        assert {"loss_c", "val_auroc"} <= names, names
        assert all(d and d.startswith("M") for _, d in series), series

        with pipeline.client() as client:
            run = client.get(f"/api/v1/runs/{pipeline.run_id}").json()
        expected = {
            k
            for k, v in run["metrics"].items()
            if k.startswith("test_") and isinstance(v, (int, float))
        }
        assert expected, run["metrics"]
        shown = set(
            page.eval_on_selector_all(
                "[data-testid=test-metrics] tr[data-metric]",
                "els => els.map(e => e.dataset.metric)",
            )
        )
        assert shown == expected
        assert page.locator(".run-page").get_attribute("data-source") in (
            "stream",
            "ended",
            "polling",
        )
