"""Issue 17 item 3: each map's uncertainty and baseline on screen, where the map has them.

Against the stub API: an Integrated Gradients map (zero baseline, a convergence delta, its
share of F(x) - F(x') and the model output) and a saliency map stored with a parameter saliency
does not read (steps, at its default) and no delta. The viewer's provenance lists only the
parameters each method used (IG's defaults filled in and marked), the baseline for IG alone,
and the uncertainty for IG alone; the compare panels repeat baseline and delta per map.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api
from tests.e2e.browser import DIST_INDEX, chromium_page, login, open_viewer, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

SALIENCY_ID = 9
RELATIVE_DELTA = 0.0042
LOGIT = 2.5


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    folder = tmp_path_factory.mktemp("stub-volumes")
    case = stub_api.write_synthetic_case(folder)
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    ig = running.api.attribution
    ig["params"] = {"steps": 32, "baseline": "zero"}
    ig["stats"] = {**ig["stats"], "relative_delta": RELATIVE_DELTA}
    ig["logit"] = LOGIT
    stub_api.add_scaled_map(
        running,
        folder,
        SALIENCY_ID,
        0.5,
        method="saliency",
        params={"steps": 32},
        convergence_delta=None,
        logit=LOGIT,
    )
    yield running
    running.close()


@pytest.fixture
def page(stub: stub_api.RunningStub, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "profile") as page:
        login(page, stub.base_url, stub_api.USERNAME, stub_api.PASSWORD)
        yield page


def _rows(page: Page) -> dict[str, str]:
    """The provenance panel's rows as a reader sees them: label -> value."""
    panel = page.locator(".provenance")
    terms = panel.locator("dt").all_inner_texts()
    values = panel.locator("dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


def test_provenance_shows_baseline_and_uncertainty_where_the_map_has_them(
    stub: stub_api.RunningStub, page: Page
) -> None:
    base = f"{stub.base_url}/viewer/{stub_api.SUBJECT_ID}?attribution="
    open_viewer(page, f"{base}{stub_api.ATTRIBUTION_ID}")
    rows = _rows(page)
    print(rows)
    assert rows["Method"] == "Integrated gradients"
    assert rows["Baseline x′"] == "zero image"
    assert rows["Integration steps"] == "32"
    assert rows["Quadrature"] == "gausslegendre (default)"
    assert float(rows["Convergence delta"]) == pytest.approx(stub_api.CONVERGENCE_DELTA, rel=6e-3)
    assert rows["Relative to F(x) − F(x′)"] == f"{100 * RELATIVE_DELTA:.2g} %"
    assert float(rows["Model output F(x)"]) == pytest.approx(LOGIT)
    save_screenshot(page, "integrated-gradients")

    open_viewer(page, f"{base}{SALIENCY_ID}")
    rows = _rows(page)
    print(rows)
    assert rows["Method"] == "Saliency"
    assert "Baseline x′" not in rows, "saliency has no baseline"
    assert "Integration steps" not in rows, "a parameter saliency does not read is listed"
    assert "Convergence delta" not in rows
    assert float(rows["Model output F(x)"]) == pytest.approx(LOGIT)
    assert "no completeness check" in page.locator(".provenance").inner_text()
    save_screenshot(page, "saliency")

    page.goto(
        f"{stub.base_url}/compare?subject={stub_api.SUBJECT_ID}"
        f"&attributions={stub_api.ATTRIBUTION_ID},{SALIENCY_ID}"
    )
    meta = page.get_by_test_id("map-meta")
    meta.first.wait_for(timeout=30_000)
    ig_meta, saliency_meta = meta.all_inner_texts()
    assert ig_meta.startswith("baseline zero image · δ 0.00123"), ig_meta
    assert "0.42 % of F(x) − F(x′)" in ig_meta, ig_meta
    assert saliency_meta == "no completeness check", saliency_meta
