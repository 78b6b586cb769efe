"""Issue 17 item 5: run charts a reader can read values from, L_C not flattened by L_A, and
run compare drawing the curves of every compared run.

Against the stub API (tests/e2e/stub_runs.py): run 4's L_A runs 12 -> 3.1 and its L_C
0.68 -> 0.3, so on a shared axis L_C would be a flat line at the bottom.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api, stub_runs
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.e2e

LC_CHART = "Classification loss L_C (train, validation)"
LA_CHART = "Attribution loss L_A"


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    case = stub_api.write_synthetic_case(tmp_path_factory.mktemp("stub-volumes"))
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    stub_runs.add_runs(running.api)
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def _path_ys(chart: Locator, series: str) -> list[float]:
    d = chart.locator(f'[data-series="{series}"] path').get_attribute("d") or ""
    return [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)", d)]


def _inner_height(chart: Locator) -> float:
    return float(chart.locator("rect.chart-frame").get_attribute("height") or 0)


def test_losses_have_their_own_axes_tooltips_and_a_log_scale(
    stub: stub_api.RunningStub, page: Page
) -> None:
    run = stub_runs.CHILD_RUN
    curves = stub_runs.CURVES[run]
    page.goto(f"{stub.base_url}/runs/{run}")
    lc = page.locator(f'[data-chart="{LC_CHART}"]')
    la = page.locator(f'[data-chart="{LA_CHART}"]')
    lc.locator("[data-series=loss_c] path").wait_for(timeout=30_000)
    assert la.locator("[data-series=loss_a]").count() == 1
    assert lc.locator("[data-series=loss_a]").count() == 0, "L_A shares L_C's axis"
    # L_C uses its own axis: its curve spans the plot's height, not a flat line.
    ys = _path_ys(lc, "loss_c")
    assert len(ys) == len(curves.loss_c)
    span = max(ys) - min(ys)
    assert span > 0.9 * _inner_height(lc), (span, _inner_height(lc))

    # Hover: the values at the nearest epoch, and a native tooltip on every point.
    box = lc.locator("svg").bounding_box()
    assert box is not None
    epochs = len(curves.loss_c)
    for epoch in (3, epochs):
        # The plot area runs from pad to width - pad (28 and 332 of 360 SVG units).
        fx = (28 + (epoch - 1) / (epochs - 1) * (360 - 56)) / 360
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + box["height"] / 2)
        readout = lc.get_by_test_id("chart-readout")
        expected = f"epoch {epoch}: loss_c {curves.loss_c[epoch - 1]:g}"
        page.wait_for_function(
            "([el, text]) => el.textContent === text",
            arg=[readout.element_handle(), expected],
            timeout=5_000,
        )
    titles = lc.locator("[data-series=loss_c] circle title").all_text_contents()
    assert titles[0] == f"loss_c · epoch 1: {curves.loss_c[0]:g}", titles
    save_screenshot(page, "hover")

    # Log scale on L_A: the axis labels keep the data's values, the curve changes shape.
    linear = _path_ys(la, "loss_a")
    la.get_by_label("Log scale").check()
    assert la.get_attribute("data-scale") == "log"
    logged = _path_ys(la, "loss_a")
    ticks = la.locator("text.chart-tick").all_text_contents()
    assert f"{max(curves.loss_a):g}" in ticks and f"{min(curves.loss_a):g}" in ticks, ticks
    assert logged != linear
    # On a log axis a step is the log of a ratio: the first and last steps of L_A compare as
    # log(12/8) to log(4/3.1), not as 12-8 to 4-3.1.
    a = curves.loss_a
    expected = math.log(a[0] / a[1]) / math.log(a[-2] / a[-1])
    measured = (logged[1] - logged[0]) / (logged[-1] - logged[-2])
    assert measured == pytest.approx(expected, rel=0.05), (measured, expected)
    assert (linear[1] - linear[0]) / (linear[-1] - linear[-2]) == pytest.approx(
        (a[0] - a[1]) / (a[-2] - a[-1]), rel=0.05
    )
    save_screenshot(page, "log-scale")


def test_run_compare_overlays_the_curves_of_the_compared_runs(
    stub: stub_api.RunningStub, page: Page
) -> None:
    parent, child = stub_runs.PARENT_RUN, stub_runs.CHILD_RUN
    page.goto(f"{stub.base_url}/runs/compare?ids={parent},{child}")
    section = page.get_by_test_id("run-compare-curves")
    section.wait_for(timeout=30_000)
    lc = section.locator(f'[data-chart="{LC_CHART}"]')
    for run_id in (parent, child):
        name = f"stub run {run_id}" + (" · from reviews" if run_id == child else "")
        series = f"{name} (#{run_id}) · loss_c"
        ys = _path_ys(lc, series)
        assert len(ys) == len(stub_runs.CURVES[run_id].loss_c), (series, ys)
    strokes = lc.locator("path").evaluate_all("els => els.map(e => e.getAttribute('stroke'))")
    assert len(set(strokes)) == 2, f"one colour per run expected: {strokes}"
    assert section.locator(f'[data-chart="{LA_CHART}"] [data-series] path').count() == 2
    save_screenshot(page, "run-compare")
