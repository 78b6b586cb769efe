"""Closing the loop in Chromium: a clinician draws a correction, a researcher launches a run from
the reviews on the earlier run's page, the corrected run shows up in the compare view with the
corrected subject, and the viewer's epoch slider changes the relevance overlay."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import wait_job
from tests.e2e.browser import (
    DIST_INDEX,
    READY_TIMEOUT_MS,
    chromium_page,
    login,
    open_viewer,
    review_item_of,
    screenshot_canvas,
)

pytestmark = pytest.mark.e2e

CLINICIAN = "clinician-loop"
PASSWORD = "clinician-loop-password"


def _add_clinician(pipeline) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    admin = pipeline.client()
    created = admin.post(
        "/api/v1/users", json={"username": CLINICIAN, "password": PASSWORD, "role": "researcher"}
    )
    assert created.status_code in (201, 409), created.text
    project = admin.get(f"/api/v1/datasets/{pipeline.dataset_id}").json()["project_id"]
    member = admin.put(
        f"/api/v1/projects/{project}/members", json={"username": CLINICIAN, "role": "clinician"}
    )
    assert member.status_code == 200, member.text
    users = admin.get("/api/v1/users").json()["data"]
    return project, next(u["id"] for u in users if u["username"] == CLINICIAN)


def _draw_and_submit(page, pipeline, project: int, user_id: int) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{pipeline.base_url}/review?project={project}")
    # The blinded queue names maps by per-user tokens only.
    token = review_item_of(pipeline.data_dir, user_id, pipeline.attribution_id)
    page.locator(f".queue-item[data-item='{token}']").click()
    page.wait_for_function(
        """(token) => {
            const el = document.querySelector(`.review-item[data-item='${token}']`);
            const v = el && el.querySelector('[data-viewer-state]');
            return v && ['ready', 'error'].includes(v.dataset.viewerState);
        }""",
        arg=token,
        timeout=READY_TIMEOUT_MS,
    )
    page.locator(".review-item > h2").click()
    page.keyboard.press("d")  # pen 1: missed lesion (1 is the axial view, as in the viewer)
    box = page.locator("canvas.viewer-canvas").bounding_box()
    assert box is not None
    for fy in (0.2, 0.25, 0.3):
        y = box["y"] + box["height"] * fy
        page.mouse.move(box["x"] + box["width"] * 0.1, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.35, y, steps=12)
        page.mouse.up()
    page.wait_for_timeout(300)
    assert int(page.locator("[data-drawn-voxels]").get_attribute("data-drawn-voxels") or 0) > 0
    page.get_by_label("2 – mostly off the lesions").check()
    page.locator("input[name=trust][value=no]").check()
    page.get_by_role("button", name="Submit review").click()
    page.locator("[data-review-status=saved]").wait_for(timeout=30_000)


def _canvas(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_correction_to_corrected_run_to_compare_and_epoch_slider(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    project, clinician_id = _add_clinician(pipeline)
    api = pipeline.client()

    with chromium_page(tmp_path / "clinician") as page:
        login(page, pipeline.base_url, CLINICIAN, PASSWORD)
        _draw_and_submit(page, pipeline, project, clinician_id)
    corrections = api.get(f"/api/v1/runs/{pipeline.run_id}/corrections").json()
    assert any(
        r["reviewer"] == CLINICIAN and r["missed_voxels"] > 0
        for s in corrections["subjects"]
        for r in s["reviews"]
    ), corrections

    with chromium_page(tmp_path / "researcher") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/runs/{pipeline.run_id}")
        panel = page.locator("[data-testid=from-reviews]")
        panel.wait_for(timeout=30_000)
        panel.locator("input[name=from-reviews-name]").fill("loop corrected")
        panel.locator("select[name=from-reviews-setting]").select_option("lc_la_supervised")
        panel.locator("input[name=from-reviews-epochs]").fill("2")
        panel.get_by_role("button", name="Launch run from reviews").click()
        earlier = f"/runs/{pipeline.run_id}"
        page.wait_for_url(
            lambda url: re.search(r"/runs/\d+$", url) is not None and not url.endswith(earlier),
            timeout=30_000,
        )
        new_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
        assert new_id != pipeline.run_id
        run = api.get(f"/api/v1/runs/{new_id}").json()
        assert run["from_reviews_of"] == pipeline.run_id
        wait_job(api, run["job_id"], timeout=420)

        # The compare view: both runs, and the corrected subject with both runs' metrics.
        page.goto(f"{pipeline.base_url}/runs/compare?ids={pipeline.run_id},{new_id}")
        table = page.locator("[data-testid=run-comparison]")
        table.wait_for(timeout=30_000)
        assert "loop corrected" in table.inner_text().lower()
        row = page.locator(
            f"[data-testid=corrected-subjects] tr[data-subject-id='{pipeline.subject_id}']"
        )
        row.wait_for(timeout=30_000)
        after = row.locator("[data-metric=after-lesion-mass]").inner_text()
        before = row.locator("[data-metric=before-lesion-mass]").inner_text()
        assert re.search(r"\d", after) and re.search(r"\d", before), (before, after)
        assert CLINICIAN in row.inner_text()

        # The epoch slider: the last epoch first, then epoch 1; the overlay changes.
        maps = api.get(f"/api/v1/runs/{new_id}/epoch-maps").json()["data"]
        assert sorted(m["epoch"] for m in maps if m["subject_id"] == pipeline.subject_id) == [1, 2]
        open_viewer(page, f"{pipeline.base_url}/viewer/{pipeline.subject_id}?run={new_id}")
        slider = page.locator(".epoch-slider")
        page.wait_for_function(
            "() => document.querySelector('.epoch-slider')?.dataset.epoch === '2'",
            timeout=READY_TIMEOUT_MS,
        )
        page.wait_for_function(
            "() => document.querySelector('[data-viewer-state]').dataset.viewerState === 'ready'",
            timeout=READY_TIMEOUT_MS,
        )
        last = _canvas(screenshot_canvas(page, "epoch-slider-last.png"))
        slider.get_by_label("Epoch").fill("0")
        page.wait_for_function(
            "() => document.querySelector('.epoch-slider')?.dataset.epoch === '1'",
            timeout=30_000,
        )
        page.wait_for_function(
            "() => document.querySelector('[data-viewer-state]').dataset.viewerState === 'ready'",
            timeout=READY_TIMEOUT_MS,
        )
        first = _canvas(screenshot_canvas(page, "epoch-slider-first.png"))
    assert first.shape == last.shape
    changed = np.abs(first - last).max(axis=-1) > 30
    assert changed.sum() > 50, f"only {int(changed.sum())} pixels changed between epochs"
