"""Review end to end: a clinician rates a live map and draws a correction, in Chromium.

The pipeline's admin creates a clinician and adds them to the project through the API; the
clinician logs in, opens the blinded queue, sees the map, paints a few voxels with pen 1
("missed lesion"), submits a rating; the API then holds the review with its rating and a
correction NIfTI with non-zero voxels on the subject's grid.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from tests.e2e.browser import DIST_INDEX, READY_TIMEOUT_MS, chromium_page, login, review_item_of

pytestmark = pytest.mark.e2e

CLINICIAN = "clinician-e2e"
PASSWORD = "clinician-password-e2e"


def _clinician(pipeline) -> httpx.Client:  # type: ignore[no-untyped-def]
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
    token = httpx.post(
        f"{pipeline.base_url}/api/v1/auth/login",
        json={"username": CLINICIAN, "password": PASSWORD},
    ).json()["access_token"]
    client = httpx.Client(
        base_url=pipeline.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    client.project_id = project  # type: ignore[attr-defined]
    return client


def test_clinician_reviews_and_corrects_a_map(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    api = _clinician(pipeline)
    project = api.project_id  # type: ignore[attr-defined]
    queue = api.get("/api/v1/reviews/queue", params={"project_id": project}).json()
    me = api.get("/api/v1/auth/me").json()["id"]
    token = review_item_of(pipeline.data_dir, me, pipeline.attribution_id)
    assert token in [m["item"] for m in queue["data"]]  # blinded: no map ids, only tokens
    assert all(m["run_name"] is None and m["attribution_id"] is None for m in queue["data"])

    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, CLINICIAN, PASSWORD)
        page.goto(f"{pipeline.base_url}/review?project={project}")
        item = page.locator(f".queue-item[data-item='{token}']")
        item.click()
        page.wait_for_function(
            """(token) => {
                const el = document.querySelector(`.review-item[data-item='${token}']`);
                const v = el && el.querySelector('[data-viewer-state]');
                return v && ['ready', 'error'].includes(v.dataset.viewerState);
            }""",
            arg=token,
            timeout=READY_TIMEOUT_MS,
        )
        assert page.locator(".review-item [data-viewer-state]").get_attribute(
            "data-viewer-state"
        ) == ("ready"), page.locator(".review-item [role=alert]").all_inner_texts()
        assert "lc-only smoke" not in page.locator(".review-page").inner_text()  # blinded

        # Pen 1 (keyboard shortcut d; 1 is the axial view, as in the viewer), then a few
        # strokes across the first slice tile.
        page.locator(".review-item > h2").click()
        page.keyboard.press("d")
        assert page.locator(".draw-tools").get_attribute("data-draw-tool") == "missed"
        box = page.locator("canvas.viewer-canvas").bounding_box()
        assert box is not None
        for fy in (0.2, 0.25, 0.3):
            y = box["y"] + box["height"] * fy
            page.mouse.move(box["x"] + box["width"] * 0.1, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.35, y, steps=12)
            page.mouse.up()
        page.wait_for_timeout(300)
        drawn = int(page.locator("[data-drawn-voxels]").get_attribute("data-drawn-voxels") or 0)
        assert drawn > 0, "no voxels were drawn"

        page.get_by_label("4 – mostly on the lesions").check()
        page.locator("input[name=trust][value=yes]").check()
        page.locator("textarea[name=comment]").fill("e2e review")
        page.get_by_role("button", name="Submit review").click()
        saved = page.locator("[data-review-status=saved]")
        saved.wait_for(timeout=30_000)
        review_id = int(saved.get_attribute("data-review-id") or 0)

    reviews = api.get("/api/v1/reviews")  # blinded: own reviews, named by token
    mine = [r for r in reviews.json()["data"] if r["id"] == review_id]
    assert len(mine) == 1, reviews.text
    assert mine[0]["attribution_id"] is None and mine[0]["item"] == token
    assert mine[0]["rating"] == 4 and mine[0]["trust"] is True and mine[0]["has_correction"]
    assert mine[0]["comment"] == "e2e review"

    got = api.get(f"/api/v1/reviews/{review_id}/correction.nii.gz")
    assert got.status_code == 200, got.text
    img = nib.Nifti1Image.from_bytes(gzip.decompress(got.content))
    data = np.asarray(img.dataobj)
    image = api.get(f"/api/v1/subjects/{pipeline.subject_id}/image.nii.gz")
    assert image.status_code == 200
    raw = image.content
    subject = nib.Nifti1Image.from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    assert data.shape == subject.shape[:3]
    assert np.allclose(img.affine, subject.affine, atol=1e-3)
    assert int((data == 1).sum()) > 0 and set(np.unique(data).tolist()) <= {0, 1}

    # The map left the clinician's queue.
    queue = api.get("/api/v1/reviews/queue", params={"project_id": project}).json()
    assert token not in [m["item"] for m in queue["data"]]
