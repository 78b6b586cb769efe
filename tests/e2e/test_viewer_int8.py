"""Issue 21 item 5: the viewer on the int8 display map shows what the float32 map says.

Against the stub API, whose display map is the server's own encoding (int8 codes with
scl_slope = max|A| / 127). In the axial view, a pixel the overlay paints red and one it paints
blue are clicked: the value under the cursor must be positive at the red pixel and negative at
the blue one, and equal to the float32 map at that voxel within half a quantisation step (not an
int8 code). "Go to peak" shows the map's true maximum; the colour bar's ends are true values.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.e2e import stub_api
from tests.e2e.browser import DIST_INDEX, chromium_page, login, open_viewer, screenshot_canvas

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

RELEVANCE = re.compile(r"relevance (-?[0-9.e+-]+)")
MM = re.compile(r"(-?[0-9.]+), (-?[0-9.]+), (-?[0-9.]+) mm")
# formatNumber shows three significant digits: up to half a unit in the third digit.
DISPLAY_ROUNDING = 0.005


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


def _rgb(png: Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


def _warm(rgb: np.ndarray) -> np.ndarray:
    """Red to yellow (positive relevance): red well above blue."""
    return (rgb[..., 0] >= 150) & (rgb[..., 0] > rgb[..., 2] + 80)


def _cool(rgb: np.ndarray) -> np.ndarray:
    """Blue to light blue (negative relevance): blue well above red."""
    return (rgb[..., 2] >= 150) & (rgb[..., 2] > rgb[..., 0] + 80)


def _central_pixel(where: np.ndarray) -> tuple[int, int]:
    """The pixel of a set nearest to the set's median: inside a blob, away from its rim."""
    ys, xs = np.nonzero(where)
    assert xs.size >= 20, f"only {xs.size} pixels of that colour"
    my, mx = np.median(ys), np.median(xs)
    best = int(np.argmin((ys - my) ** 2 + (xs - mx) ** 2))
    return int(xs[best]), int(ys[best])


def _location(page: Page) -> tuple[np.ndarray, float]:
    text = page.locator("p.location").first.inner_text()
    mm, value = MM.search(text), RELEVANCE.search(text)
    assert mm and value, text
    return np.array([float(g) for g in mm.groups()]), float(value.group(1))


def _click(page: Page, pixel: tuple[int, int]) -> tuple[np.ndarray, float]:
    before = page.locator("p.location").first.inner_text()
    box = page.locator("canvas.viewer-canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + pixel[0] + 0.5, box["y"] + pixel[1] + 0.5)
    page.wait_for_function(
        "(before) => document.querySelector('p.location').innerText !== before", arg=before
    )
    return _location(page)


def test_int8_display_map_keeps_signs_and_true_values(
    stub: stub_api.RunningStub, page: Page
) -> None:
    display = nib.Nifti1Image.from_bytes(gzip.decompress(stub.api.case.display.read_bytes()))
    assert display.get_data_dtype() == np.int8, "the stub sends the server's int8 encoding"
    step = float(display.dataobj.slope)
    exact_img = nib.load(stub.api.case.relevance)
    exact = np.asarray(exact_img.get_fdata())
    to_voxel = np.linalg.inv(exact_img.affine)
    peak = float(np.abs(exact).max())
    assert 0 < step < 0.01 * peak

    def true_value(mm: np.ndarray) -> float:
        i, j, k = np.rint(to_voxel @ np.append(mm, 1.0))[:3].astype(int)
        return float(exact[i, j, k])

    def assert_true(shown: float, mm: np.ndarray) -> None:
        expected = true_value(mm)
        assert abs(shown - expected) <= step / 2 + DISPLAY_ROUNDING * abs(shown), (
            f"shown {shown} at {mm} mm, the float32 map has {expected} (step {step:.3g})"
        )

    url = f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution={stub_api.ATTRIBUTION_ID}"
    open_viewer(page, url)
    page.get_by_role("checkbox", name="Lesion outline").uncheck()  # green is not relevance
    page.locator("canvas.viewer-canvas").click()  # focus, then the axial view ("a")
    page.keyboard.press("a")

    # The colour bar's ends are the map's true peaks, not ±127.
    ticks = page.locator(".colorbar-ticks span").all_inner_texts()
    shown_ends = sorted(float(t) for t in ticks)
    assert shown_ends[0] == pytest.approx(stub.api.case.stats["min"], rel=DISPLAY_ROUNDING), ticks
    assert shown_ends[-1] == pytest.approx(stub.api.case.stats["max"], rel=DISPLAY_ROUNDING), ticks

    # "Go to peak": the value under the cursor is the true maximum.
    page.keyboard.press("f")
    page.wait_for_timeout(500)
    mm, shown = _location(page)
    assert shown == pytest.approx(float(exact.max()), abs=step / 2 + DISPLAY_ROUNDING * shown)
    assert_true(shown, mm)

    # Pixels that are warm or cool only with the relevance on (the crosshair is in both).
    relevance = page.get_by_role("checkbox", name="Relevance")
    on = _rgb(screenshot_canvas(page, "int8-axial-on.png"))
    relevance.uncheck()
    off = _rgb(screenshot_canvas(page, "int8-axial-off.png", settle_ms=1000))
    relevance.check()
    screenshot_canvas(page, "int8-axial-on-again.png", settle_ms=1000)
    red = _warm(on) & ~_warm(off)
    blue = _cool(on) & ~_cool(off)

    mm, shown = _click(page, _central_pixel(red))
    assert shown > 0, f"a red pixel shows {shown} at {mm} mm"
    assert true_value(mm) > 0
    assert_true(shown, mm)

    mm, shown = _click(page, _central_pixel(blue))
    assert shown < 0, f"a blue pixel shows {shown} at {mm} mm"
    assert true_value(mm) < 0
    assert_true(shown, mm)
