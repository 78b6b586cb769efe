"""'Why is this segmented?' in Chromium: the live server trains a small segmentation run, the
viewer shows its whole-mask map, the user clicks a lesion and asks for that lesion's map."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.conftest import wait_job
from tests.e2e.browser import (
    DIST_INDEX,
    READY_TIMEOUT_MS,
    chromium_page,
    count_colours,
    login,
    open_viewer,
    screenshot_canvas,
)
from tests.helpers import write_nifti

pytestmark = pytest.mark.e2e

MIN_PIXELS = 20
SHAPE = (16, 20, 16)


def _volume(seed: int, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid brain with noise; with a lesion, a brighter blob of ~30 voxels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    image = ((grid**2).sum(0) < 0.8) * 100.0 + rng.normal(0, 5, SHAPE)
    mask = np.zeros(SHAPE, np.uint8)
    if lesion:
        centre = np.array(SHAPE) // 2 + rng.integers(-2, 3, 3)
        blob = ((np.indices(SHAPE) - centre[:, None, None, None]) ** 2).sum(0) <= 6
        mask[blob] = 1
        image[blob] = 220.0
    return image.astype(np.float32), mask


def _green_centre(png: Path) -> tuple[float, float]:
    """Canvas position (x, y) at the centre of the largest green lesion outline.

    The crosshair cuts each outline into pieces: the gaps are closed and the outlines filled
    before taking the centre of the largest one (a piece's own centre may lie off the lesion).
    """
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    green = (rgb[..., 1] >= 150) & (rgb[..., 0] <= 110) & (rgb[..., 2] <= 110)
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(green, structure=np.ones((9, 9))))
    labels, count = ndimage.label(filled)
    assert count > 0, "no green lesion outline on the canvas"
    sizes = ndimage.sum(filled, labels, index=range(1, count + 1))
    row, col = ndimage.center_of_mass(filled, labels, int(np.argmax(sizes)) + 1)
    return float(col), float(row)


def test_click_a_predicted_lesion_and_see_its_map(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    client = pipeline.client()
    project_id = client.get(f"/api/v1/datasets/{pipeline.dataset_id}").json()["project_id"]
    dataset = client.post(
        "/api/v1/datasets", json={"name": "segmentation", "project_id": project_id}
    ).json()
    splits = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    subjects = []
    for i, split in enumerate(splits):
        lesion = i % 2 == 1
        image, mask = _volume(100 + i, lesion)
        files = {"image": ("i.nii.gz", write_nifti(tmp_path / f"i{i}.nii.gz", image).read_bytes())}
        if lesion:
            files["mask"] = ("m.nii.gz", write_nifti(tmp_path / f"m{i}.nii.gz", mask).read_bytes())
        data = {"subject_key": f"seg-{i}", "label": int(lesion), "split": split}
        made = client.post(f"/api/v1/datasets/{dataset['id']}/subjects", data=data, files=files)
        assert made.status_code == 201, made.text
        subjects.append(made.json())
    config = {"task": "segmentation", "epochs": 6, "batch_size": 2, "grid": list(SHAPE)}
    config["learning_rate"] = 0.01
    run = client.post(
        "/api/v1/runs", json={"dataset_id": dataset["id"], "name": "seg", "config": config}
    )
    assert run.status_code == 201, run.text
    wait_job(client, run.json()["job_id"], timeout=420)
    run_id = run.json()["id"]
    subject = next(s for s in subjects if s["split"] == "test" and s["has_mask"])
    whole = client.post(
        "/api/v1/attributions",
        json={"run_id": run_id, "subject_id": subject["id"], "params": {"steps": 16}},
    ).json()
    assert whole["region"] == {"kind": "whole"}
    wait_job(client, whole["job_id"], timeout=180)

    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        open_viewer(page, f"{pipeline.base_url}/viewer/{subject['id']}?attribution={whole['id']}")
        assert page.get_by_test_id("region-description").inner_text() == "whole predicted mask"
        first = screenshot_canvas(page, "segmentation-whole.png", settle_ms=1500)
        assert count_colours(first).red >= MIN_PIXELS, count_colours(first)

        # Click inside the lesion's outline: the crosshair moves onto the predicted lesion.
        x, y = _green_centre(first)
        page.locator("canvas.viewer-canvas").click(position={"x": x, "y": y})
        page.get_by_role("button", name="Explain the lesion at the crosshair").click()
        page.wait_for_url(
            re.compile(rf"attribution=(?!{whole['id']}\b)\d+"), timeout=READY_TIMEOUT_MS
        )
        open_viewer(page, page.url)
        lesion_id = int(re.search(r"attribution=(\d+)", page.url).group(1))
        shown = page.get_by_test_id("region-description").inner_text()
        assert shown.startswith("predicted lesion at"), shown
        after = count_colours(screenshot_canvas(page, "segmentation-lesion.png", settle_ms=1500))
        assert after.red >= MIN_PIXELS, after

    record = client.get(f"/api/v1/attributions/{lesion_id}").json()
    assert record["status"] == "succeeded" and record["region"]["kind"] == "point"
    assert record["stats"]["component"] >= 1
    whole_record = client.get(f"/api/v1/attributions/{whole['id']}").json()
    # One component of the prediction: at most the whole predicted mask.
    assert (
        0 < record["stats"]["region_native_voxels"] <= whole_record["stats"]["region_native_voxels"]
    )


def test_launch_form_sends_a_mixed_supervision_segmentation_run(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/runs/new?dataset={pipeline.dataset_id}")
        form = page.get_by_role("form", name="Launch run")
        form.locator('select[name="dataset"] option', has_text="live test").wait_for(
            state="attached", timeout=30_000
        )
        form.locator('select[name="dataset"]').select_option(str(pipeline.dataset_id))
        form.locator('input[name="name"]').fill("segmentation from the browser")
        assert form.locator('select[name="network"]').count() == 1
        form.locator('input[name="task"][value="segmentation"]').check()
        # The UNet is implied: no network choice; the mixed-supervision options appear.
        assert form.locator('select[name="network"]').count() == 0
        form.locator('input[name="seg_annotated_fraction"]').fill("0.5")
        form.locator('input[name="seg_constraint"]').check()
        form.locator('input[name="epochs"]').fill("1")
        form.get_by_role("button", name="Launch run").click()
        page.wait_for_url(re.compile(r"/runs/\d+$"), timeout=30_000)
        run_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
    with pipeline.client() as client:
        config = client.get(f"/api/v1/runs/{run_id}").json()["config"]
        client.post(f"/api/v1/runs/{run_id}/cancel")  # only the stored config matters here
    assert config["task"] == "segmentation" and config["network"] == "unet"
    assert config["seg_annotated_fraction"] == 0.5 and config["seg_constraint"] is True
    assert config["early_stopping_metric"] == "val_dice"
