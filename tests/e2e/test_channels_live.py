"""Issue 20's acceptance on the real stack: a two-channel dataset trains with the constraint and
shows per-channel maps in the browser.

On the live server and Celery worker of the ``pipeline`` fixture: a T1 + FLAIR dataset is
imported through the REST API (tests/modalities.py), a run trains with the supervised
attribution constraint, and Integrated Gradients explains a test subject with a lesion. Through
the API, the per-channel maps sum to the map. In Chromium, the viewer's channel selector names
both modalities; "Map" set to the sum, each channel, and the sum again shows red or blue
relevance each time (the pixels the relevance layer changes, tests/e2e/browser.py:
overlay_colours), and the two channels' maps look different; "Image" set to FLAIR changes the
MR under the overlay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from tests.conftest import Pipeline, wait_job
from tests.e2e.browser import (
    DIST_INDEX,
    OverlayColours,
    chromium_page,
    login,
    open_viewer,
    overlay_colours,
    save_screenshot,
    screenshot_canvas,
)
from tests.modalities import CHANNELS, download_volume, two_channel_import

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

# A real IG map of a tiny model: both signs, noisy; fewer coloured pixels than the stub's blobs.
MIN_PIXELS = 50
MIN_DOMINANT = 0.90
# Screen pixels whose gray level moves by more than this count as changed between two views.
PIXEL_CHANGE = 40
GRID = [16, 20, 16]


def _wait_ready(page: Page) -> None:
    """After a switch: the load starts (the selects are disabled while it runs), then ends ready."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => document.querySelector('[data-viewer-state]')?.dataset.viewerState === 'ready'",
        timeout=60_000,
    )


def _choose(page: Page, name: str, value: str) -> None:
    page.locator(f"select[name={name}]").select_option(value)
    _wait_ready(page)
    page.get_by_role("checkbox", name="Lesion outline").uncheck()  # green is not relevance


def _relevance(page: Page, name: str) -> tuple[OverlayColours, Path, Path]:
    """The overlay's colours, and the canvas with and without the relevance layer."""
    relevance = page.get_by_role("checkbox", name="Relevance")
    relevance.check()
    on = screenshot_canvas(page, f"channels-live-{name}-on.png", settle_ms=1500)
    relevance.uncheck()
    off = screenshot_canvas(page, f"channels-live-{name}-off.png", settle_ms=1000)
    relevance.check()
    colours = overlay_colours(on, off)
    print(f"{name}: {colours}")
    assert colours.red + colours.blue >= MIN_PIXELS, f"{name}: no red or blue relevance: {colours}"
    assert colours.dominant_fraction >= MIN_DOMINANT, f"{name}: {colours}"
    return colours, on, off


def _changed_fraction(a: Path, b: Path) -> float:
    before = np.asarray(Image.open(a).convert("L"), dtype=np.int16)
    after = np.asarray(Image.open(b).convert("L"), dtype=np.int16)
    assert before.shape == after.shape, (before.shape, after.shape)
    return float((np.abs(before - after) > PIXEL_CHANGE).mean())


def _train_and_explain(pipeline: Pipeline) -> tuple[dict, int]:
    """The two-channel dataset, a constrained run and an IG map of a lesion subject, through the
    API; returns the subject and the map's id."""
    with pipeline.client() as client:
        project = client.post("/api/v1/projects", json={"name": "two channels"})
        assert project.status_code == 201, project.text
        dataset_id = two_channel_import(client, "t1+flair live", project_id=project.json()["id"])
        config = {
            "loss_setting": "lc_la_supervised",
            "epochs": 2,
            "batch_size": 2,
            "grid": GRID,
            "seed": 1,
        }
        run = client.post(
            "/api/v1/runs", json={"dataset_id": dataset_id, "name": "t1+flair", "config": config}
        )
        assert run.status_code == 201, run.text
        assert run.json()["config"]["in_channels"] == 2
        assert run.json()["config"]["loss_setting"] == "lc_la_supervised"
        wait_job(client, run.json()["job_id"], timeout=300)
        assert (
            "test_attr_lesion_mass"
            in client.get(f"/api/v1/runs/{run.json()['id']}").json()["metrics"]
        )

        subjects = client.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["data"]
        subject = next(s for s in subjects if s["split"] == "test" and s["has_mask"])
        assert subject["channels"] == CHANNELS
        attr = client.post(
            "/api/v1/attributions",
            json={"run_id": run.json()["id"], "subject_id": subject["id"], "params": {"steps": 8}},
        )
        assert attr.status_code == 201, attr.text
        wait_job(client, attr.json()["job_id"], timeout=180)

        url = f"/api/v1/attributions/{attr.json()['id']}"
        whole = download_volume(client, f"{url}/map.nii.gz")
        c0 = download_volume(client, f"{url}/channels/0.nii.gz")
        c1 = download_volume(client, f"{url}/channels/1.nii.gz")
        assert whole.shape == c0.shape == c1.shape == tuple(subject["shape"])
        np.testing.assert_allclose(
            c0 + c1, whole, rtol=1e-5, atol=1e-7 * float(np.abs(whole).max())
        )
        assert np.abs(c0).max() > 0 and np.abs(c1).max() > 0 and not np.allclose(c0, c1)
        return subject, int(attr.json()["id"])


def test_a_two_channel_run_shows_per_channel_maps_in_the_browser(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    subject, attribution_id = _train_and_explain(pipeline)

    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        open_viewer(
            page, f"{pipeline.base_url}/viewer/{subject['id']}?attribution={attribution_id}"
        )
        page.get_by_test_id("channel-selector").wait_for()
        assert page.locator("select[name=image-channel] option").all_inner_texts() == CHANNELS
        assert page.locator("select[name=map-channel] option").all_inner_texts() == [
            "sum",
            *CHANNELS,
        ]
        page.get_by_role("checkbox", name="Lesion outline").uncheck()
        _, _, t1_off = _relevance(page, "sum")

        _choose(page, "map-channel", "0")
        assert "map=0" in page.url
        _, t1_map, _ = _relevance(page, "map-t1")

        _choose(page, "map-channel", "1")
        assert "map=1" in page.url
        _, flair_map, _ = _relevance(page, "map-flair")
        maps_differ = _changed_fraction(t1_map, flair_map)
        print(f"canvas pixels that differ between the channels' maps: {maps_differ:.3f}")
        assert maps_differ > 0.02, maps_differ

        _choose(page, "map-channel", "sum")
        assert "map=" not in page.url
        _relevance(page, "sum-again")

        # The base image: FLAIR (its lesion bright, unlike the T1's) under the same map.
        _choose(page, "image-channel", "1")
        assert "image=1" in page.url
        _, _, flair_off = _relevance(page, "image-flair")
        image_differs = _changed_fraction(t1_off, flair_off)
        print(f"base image pixels that changed: {image_differs:.3f}")
        assert image_differs > 0.05, image_differs
        save_screenshot(page, "channels-live-page")
