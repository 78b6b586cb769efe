"""Issue 18 item 3: "Dim uncertain voxels" fades relevance where a stochastic map's samples
disagree on its sign (NiiVue modulation by the sign-agreement volume).

Against the stub API: a SmoothGrad map (the stub's signed map: red on the lesion, blue in the
mirrored healthy tissue) with a sign-agreement volume that is 0.5 (samples split evenly) in the
anterior half of both blobs and 1 elsewhere. Turning the control on must darken the screen
pixels there and leave red and blue pixels where agreement is 1; turning it off restores the
view. An Integrated Gradients map (no samples) has no such control.
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
    CHANGE_TOLERANCE,
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

SMOOTHGRAD_ID = 21


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    folder = tmp_path_factory.mktemp("stub-volumes")
    case = stub_api.write_synthetic_case(folder)
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    stats = {**case.stats, "uncertainty_mean_sd": 0.1, "uncertainty_low_agreement_share": 0.2}
    stub_api.add_scaled_map(
        running,
        folder,
        SMOOTHGRAD_ID,
        1.0,
        method="smoothgrad",
        params={"n_samples": 16},
        convergence_delta=None,
        stats=stats,
    )
    running.api.extra_json[f"/api/v1/attributions/{SMOOTHGRAD_ID}"]["stats"] = stats  # type: ignore[index]
    image = nib.load(case.relevance)
    shape = image.shape
    agreement = np.ones(shape, dtype=np.float32)
    centre_y = (shape[1] - 1) / 2 + 6  # the plane through both blobs' centres
    agreement[:, int(np.ceil(centre_y)) :, :] = 0.5
    path = folder / "agreement.nii.gz"
    nib.save(nib.Nifti1Image(agreement, image.affine), path)
    running.api.extra_files[f"/api/v1/attributions/{SMOOTHGRAD_ID}/agreement.nii.gz"] = path
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_dim_uncertain_voxels_fades_only_where_samples_disagree(
    stub: stub_api.RunningStub, page: Page
) -> None:
    # A deterministic map: no control.
    open_viewer(
        page, f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={stub_api.ATTRIBUTION_ID}"
    )
    assert page.locator("input[name=dim-uncertain]").count() == 0

    open_viewer(page, f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={SMOOTHGRAD_ID}")
    page.get_by_role("checkbox", name="Lesion outline").uncheck()  # green is not relevance
    dim = page.get_by_role("checkbox", name="Dim uncertain voxels")
    assert dim.is_visible() and not dim.is_checked()

    plain = screenshot_canvas(page, "uncertainty-plain.png")
    dim.check()
    dimmed = screenshot_canvas(page, "uncertainty-dimmed.png")
    relevance = page.get_by_role("checkbox", name="Relevance")
    relevance.uncheck()
    mr_only = screenshot_canvas(page, "uncertainty-mr.png", settle_ms=1000)
    relevance.check()
    dim.uncheck()
    restored = screenshot_canvas(page, "uncertainty-restored.png")

    before, after, back = _pixels(plain), _pixels(dimmed), _pixels(restored)
    changed = np.abs(after - before).max(axis=-1) > CHANGE_TOLERANCE
    print(f"pixels changed by dimming: {int(changed.sum())}")
    assert changed.sum() >= 100, "dimming changed (almost) nothing"
    # What changed got darker: colours are scaled towards black, never brightened.
    drop = before.max(axis=-1) - after.max(axis=-1)
    assert (drop[changed] > 0).mean() >= 0.95, float((drop[changed] > 0).mean())

    # Where agreement is 1 the colours stay: red and blue pixels remain, a good share of them.
    full = overlay_colours(plain, mr_only)
    faded = overlay_colours(dimmed, mr_only)
    print(f"without dimming: {full}\nwith dimming: {faded}")
    assert faded.red >= 0.25 * full.red > 0, (full, faded)
    assert faded.blue >= 0.25 * full.blue > 0, (full, faded)
    # ... and some of them are gone: the uncertain halves were dimmed.
    assert faded.red + faded.blue < full.red + full.blue, (full, faded)

    # Off again: the view is as before.
    assert (np.abs(back - before).max(axis=-1) > CHANGE_TOLERANCE).sum() <= 0.02 * changed.sum()
    save_screenshot(page, "uncertainty-page")


def test_compare_baselines_queues_the_missing_maps_and_opens_the_compare_page(
    stub: stub_api.RunningStub, page: Page
) -> None:
    api = stub.api
    posted: list[dict] = []

    def create(body: dict) -> tuple[int, dict]:
        posted.append(body)
        made = {
            **api.attribution,
            "id": 100 + len(posted),
            "method": body["method"],
            "params": body["params"],
            "status": "queued",
            "stats": {},
            "convergence_delta": None,
        }
        api.extra_json[f"/api/v1/attributions/{made['id']}"] = made
        return 201, made

    api.post_routes["/api/v1/attributions"] = create
    # The shown map is IG from the zero image (the stub's map 7, steps 32).
    open_viewer(
        page, f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={stub_api.ATTRIBUTION_ID}"
    )
    assert page.get_by_test_id("baseline").inner_text() == "zero image"
    page.get_by_role("button", name="Compare baselines").click()
    page.wait_for_url("**/compare?**", timeout=15_000)

    # The zero map exists; the blurred and healthy-mean ones were queued with the same method
    # and parameters, and the compare page opened on the three, in the baselines' order.
    assert [(b["method"], b["params"]) for b in posted] == [
        ("integrated_gradients", {"steps": 32, "baseline": "blur"}),
        ("integrated_gradients", {"steps": 32, "baseline": "healthy_mean"}),
    ]
    assert all(b["run_id"] == stub_api.RUN_ID for b in posted)
    assert page.url.endswith(
        f"/compare?subject={stub_api.SUBJECT_ID}&attributions={stub_api.ATTRIBUTION_ID},101,102"
    ), page.url
    save_screenshot(page, "compare-baselines-page")
