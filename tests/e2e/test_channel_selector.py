"""Issue 20 item 3: the viewer's channel selector for a multi-modal subject.

Against the stub API with a two-channel subject (T1w, FLAIR): channel 0's map is the positive
blob on the lesion, channel 1's the negative blob in the mirrored healthy tissue, and the map
(their sum) has both. Switching "Map" must show red only, blue only, or both, as a person
sees them on the canvas (pixels that change when the relevance layer is toggled); switching
"Image" must change the MR under it. A one-channel subject has no selector.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

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

MIN_PIXELS = 100
SUBJECT = f"/api/v1/subjects/{stub_api.SUBJECT_ID}"
MAP = f"/api/v1/attributions/{stub_api.ATTRIBUTION_ID}"


def _two_channel_files(case: stub_api.SyntheticCase, folder: Path) -> dict[str, Path]:
    """FLAIR: the brain with a striped intensity pattern (unlike the T1w image); the per-channel
    maps split the stub's map into its positive and negative parts (they sum to the map)."""
    image = nib.load(case.image)
    affine = image.affine
    t1 = np.asarray(image.dataobj, dtype=np.float32)
    idx = np.indices(t1.shape)
    stripes = np.where((idx[0] // 4) % 2 == 0, 200.0, 30.0)
    flair = np.where(t1 > 0, stripes, 0).astype(np.float32)
    relevance = np.asarray(nib.load(case.relevance).dataobj, dtype=np.float32)
    volumes = {
        f"{SUBJECT}/channels/0.nii.gz": t1,
        f"{SUBJECT}/channels/1.nii.gz": flair,
        f"{MAP}/channels/0.nii.gz": np.maximum(relevance, 0).astype(np.float32),
        f"{MAP}/channels/1.nii.gz": np.minimum(relevance, 0).astype(np.float32),
    }
    files = {}
    for n, (route, data) in enumerate(volumes.items()):
        path = folder / f"channel-volume-{n}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        files[route] = path
    return files


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    folder = tmp_path_factory.mktemp("stub-channels")
    case = stub_api.write_synthetic_case(folder)
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    running.api.extra_files.update(_two_channel_files(case, folder))
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


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


def _relevance_colours(page: Page, name: str):
    relevance = page.get_by_role("checkbox", name="Relevance")
    relevance.check()
    on = screenshot_canvas(page, f"channels-{name}-on.png", settle_ms=1500)
    relevance.uncheck()
    off = screenshot_canvas(page, f"channels-{name}-off.png", settle_ms=1000)
    relevance.check()
    return overlay_colours(on, off), off


def test_channel_selector_switches_image_and_map(stub: stub_api.RunningStub, page: Page) -> None:
    viewer = f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={stub_api.ATTRIBUTION_ID}"

    # One channel: no selector.
    stub.api.subject["channels"] = ["T1w"]
    open_viewer(page, viewer)
    assert page.get_by_test_id("channel-selector").count() == 0
    assert page.locator("select[name=image-channel]").count() == 0

    stub.api.subject["channels"] = ["T1w", "FLAIR"]
    open_viewer(page, viewer)
    selector = page.get_by_test_id("channel-selector")
    selector.wait_for()
    assert page.locator("select[name=image-channel] option").all_inner_texts() == ["T1w", "FLAIR"]
    assert page.locator("select[name=map-channel] option").all_inner_texts() == [
        "sum",
        "T1w",
        "FLAIR",
    ]
    page.get_by_role("checkbox", name="Lesion outline").uncheck()  # green is not relevance

    both, t1_off = _relevance_colours(page, "sum")
    print(f"sum: {both}")
    assert both.red >= MIN_PIXELS and both.blue >= MIN_PIXELS, str(both)

    _choose(page, "map-channel", "0")
    assert "map=0" in page.url
    page.get_by_role("checkbox", name="Lesion outline").uncheck()
    t1_map, _ = _relevance_colours(page, "map-t1w")
    print(f"T1w map: {t1_map}")
    assert t1_map.red >= MIN_PIXELS, str(t1_map)
    assert t1_map.blue < 0.02 * t1_map.changed, str(t1_map)

    _choose(page, "map-channel", "1")
    assert "map=1" in page.url
    page.get_by_role("checkbox", name="Lesion outline").uncheck()
    flair_map, _ = _relevance_colours(page, "map-flair")
    print(f"FLAIR map: {flair_map}")
    assert flair_map.blue >= MIN_PIXELS, str(flair_map)
    assert flair_map.red < 0.02 * flair_map.changed, str(flair_map)

    # The base image: FLAIR's stripes instead of the T1w's smooth ellipsoid, map unchanged.
    _choose(page, "image-channel", "1")
    assert "image=1" in page.url and "map=1" in page.url
    page.get_by_role("checkbox", name="Lesion outline").uncheck()
    flair_blue, flair_off = _relevance_colours(page, "image-flair")
    assert flair_blue.blue >= MIN_PIXELS, str(flair_blue)
    before = np.asarray(Image.open(t1_off).convert("L"), dtype=np.int16)
    after = np.asarray(Image.open(flair_off).convert("L"), dtype=np.int16)
    differs = float((np.abs(before - after) > 40).mean())
    print(f"base image pixels that changed: {differs:.3f}")
    assert differs > 0.05, differs
    hits = stub.api.hits
    assert hits.get(f"{SUBJECT}/channels/1.nii.gz", 0) >= 1, hits
    assert (
        hits.get(f"{MAP}/channels/0.nii.gz", 0) >= 1
        and hits.get(f"{MAP}/channels/1.nii.gz", 0) >= 1
    )

    # The selection is in the URL: a reload keeps it; back to the sum drops the map param.
    open_viewer(page, page.url)
    assert page.locator("select[name=image-channel]").input_value() == "1"
    assert page.locator("select[name=map-channel]").input_value() == "1"
    _choose(page, "map-channel", "sum")
    assert "map=" not in page.url
    save_screenshot(page, "channel-selector-page")
