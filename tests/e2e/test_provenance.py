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
SHIFTED_ID = 10
RELATIVE_DELTA = 0.0042
LOGIT = 2.5
BASELINE_LOGIT = 0.3
# A constrained network's baseline far above the subject (docs/experiments.md, "The baseline's
# logit"): the whole map sums to F(x) - F(x') = -19.6.
SHIFTED_BASELINE_LOGIT = 17.6
SHIFTED_LOGIT = -2.0


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stub_api.RunningStub]:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    folder = tmp_path_factory.mktemp("stub-volumes")
    case = stub_api.write_synthetic_case(folder)
    running = stub_api.start_stub(DIST_INDEX.parent, case)
    ig = running.api.attribution
    ig["params"] = {"steps": 32, "baseline": "zero"}
    ig["stats"] = {
        **ig["stats"],
        "relative_delta": RELATIVE_DELTA,
        "baseline_logit": BASELINE_LOGIT,
    }
    ig["logit"] = LOGIT
    shifted = stub_api.add_scaled_map(running, folder, SHIFTED_ID, -1.0, logit=SHIFTED_LOGIT)
    shifted["stats"]["baseline_logit"] = SHIFTED_BASELINE_LOGIT
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
    assert rows["Baseline output F(x′)"] == f"{BASELINE_LOGIT} (p = 0.57)"
    assert page.get_by_test_id("baseline-warning").count() == 0, "a neutral baseline is flagged"
    save_screenshot(page, "integrated-gradients")

    # A baseline the model calls pathological: the reader is told the map is shifted as a whole.
    open_viewer(page, f"{base}{SHIFTED_ID}")
    rows = _rows(page)
    assert rows["Baseline output F(x′)"] == f"{SHIFTED_BASELINE_LOGIT} (p = 1.00)"
    warning = page.get_by_test_id("baseline-warning")
    assert warning.is_visible()
    text = warning.inner_text()
    assert "calls the baseline pathological" in text, text
    assert "F(x) − F(x′) = -19.6, blue overall" in text, text
    save_screenshot(page, "baseline-not-neutral")

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
        f"&attributions={stub_api.ATTRIBUTION_ID},{SALIENCY_ID},{SHIFTED_ID}"
    )
    meta = page.get_by_test_id("map-meta")
    meta.nth(2).wait_for(timeout=30_000)
    ig_meta, saliency_meta, shifted_meta = meta.all_inner_texts()
    assert "not neutral" not in ig_meta, ig_meta
    assert shifted_meta.endswith("F(x′) 17.6: baseline not neutral"), shifted_meta
    assert ig_meta.startswith("baseline zero image · δ 0.00123"), ig_meta
    assert "0.42 % of F(x) − F(x′)" in ig_meta, ig_meta
    assert saliency_meta == "no completeness check", saliency_meta
