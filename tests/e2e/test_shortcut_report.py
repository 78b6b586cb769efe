"""Issue 18 items 5 and 6 in the browser: the shortcut report and the cohort map from the run page.

The real server and worker (tests/conftest.py ``pipeline``), its trained run and saliency maps of
the train split. From the run page the user runs a shortcut report whose box covers the whole
field of view: every erased image is the same, so the AUROC after erasing is 0.5 and a run that
separated the split (AUROC >= 0.8) must be flagged; the page must show the flag and the numbers
the API stored. Then the cohort map of the pathological subjects is computed and opened in the
viewer, which must render it in the signed red/blue scale with the t statistic's label.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Pipeline, wait_job
from tests.e2e.browser import (
    DIST_INDEX,
    READY_TIMEOUT_MS,
    chromium_page,
    count_colours,
    login,
    save_screenshot,
    screenshot_canvas,
)

pytestmark = pytest.mark.e2e

SPLIT = "train"
MIN_PIXELS = 40


@pytest.fixture(scope="module")
def saliency_maps(pipeline: Pipeline) -> int:
    with pipeline.client() as client:
        batch = client.post(
            "/api/v1/attributions/batch",
            json={"run_id": pipeline.run_id, "split": SPLIT, "method": "saliency"},
        )
        assert batch.status_code == 201, batch.text
        for row in batch.json()["data"]:
            wait_job(client, row["job_id"], timeout=300)
        return int(batch.json()["count"])


def test_shortcut_report_and_cohort_map_from_the_run_page(
    pipeline: Pipeline, saliency_maps: int, tmp_path: Path
) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    run = pipeline.run_id
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/runs/{run}")
        section = page.get_by_test_id("shortcut-report")
        section.wait_for(timeout=60_000)
        section.get_by_label("Split").select_option(SPLIT)
        section.get_by_label("Region").select_option("box")
        for name, value in zip(
            ("x0", "y0", "z0", "x1", "y1", "z1"), (-1e4, -1e4, -1e4, 1e4, 1e4, 1e4), strict=True
        ):
            section.get_by_label(f"box {name} (mm)").fill(str(value))
        # Reports made before this one (other tests of the session) must not be taken for it.
        earlier = page.request.get(f"{pipeline.base_url}/api/v1/runs/{run}/shortcut-reports")
        newest = max((r["id"] for r in earlier.json()["data"]), default=0)
        section.get_by_role("button", name="Run shortcut report").click()
        page.wait_for_function(
            """(newest) => {
                const el = document.querySelector('[data-testid=shortcut-latest]');
                return el && Number(el.dataset.reportId) > newest
                    && ['succeeded', 'failed'].includes(el.dataset.status);
            }""",
            arg=newest,
            timeout=300_000,
        )
        latest = page.get_by_test_id("shortcut-latest")
        assert latest.get_attribute("data-status") == "succeeded"
        report_id = latest.get_attribute("data-report-id")
        stored = page.request.get(
            f"{pipeline.base_url}/api/v1/runs/{run}/shortcut-reports/{report_id}"
        ).json()
        cf = stored["result"]["counterfactual"]
        assert cf["after"]["auroc"] == 0.5 and cf["n"] == saliency_maps
        assert cf["before"]["auroc"] >= 0.8, (
            f"the session's run must separate its train split for this check: {cf['before']}"
        )
        flag = page.get_by_test_id("shortcut-flag")
        text = flag.inner_text()
        assert text.startswith("This run may rely on a shortcut:"), text
        assert f"from {cf['before']['auroc']:.2f} to 0.50" in text
        shown = page.get_by_test_id("auroc-before-after").inner_text()
        assert shown == f"{cf['before']['auroc']:.2f} / 0.50"
        all_sites = section.locator('[data-site="all sites"] td').all_inner_texts()
        assert all_sites[1] == str(saliency_maps)
        assert re.search(
            r"\d+% of \|relevance\|", page.get_by_test_id("shortcut-outside-brain").inner_text()
        )
        save_screenshot(page, "report")

        cohort = page.get_by_test_id("cohort-map")
        cohort.get_by_label("Split").select_option(SPLIT)
        cohort.get_by_label("Label").select_option("1")
        cohort.get_by_label("Method").select_option("saliency")
        earlier = page.request.get(f"{pipeline.base_url}/api/v1/runs/{run}/cohort-maps")
        newest = max((c["id"] for c in earlier.json()["data"]), default=0)
        cohort.get_by_role("button", name="Compute cohort map").click()
        page.wait_for_function(
            """(newest) => {
                const el = document.querySelector('[data-testid=cohort-latest]');
                return el && Number(el.dataset.cohortId) > newest
                    && ['succeeded', 'failed'].includes(el.dataset.status);
            }""",
            arg=newest,
            timeout=300_000,
        )
        assert page.get_by_test_id("cohort-latest").get_attribute("data-status") == "succeeded"
        cohort.get_by_role("link", name="Open the t-map in the viewer").click()
        page.wait_for_function(
            """() => {
                const el = document.querySelector('[data-viewer-state]');
                return el && ['ready', 'error'].includes(el.dataset.viewerState);
            }""",
            timeout=READY_TIMEOUT_MS,
        )
        state = page.locator("[data-viewer-state]").get_attribute("data-viewer-state")
        assert state == "ready", page.locator(".viewer [role=alert]").all_inner_texts()
        assert page.get_by_test_id("cohort-scale-label").inner_text() == "Scale: t statistic"
        assert "t > 0" in page.get_by_label("Relevance colour scale").inner_text()
        counts = count_colours(screenshot_canvas(page, "cohort-t.png", settle_ms=2000))
        assert counts.gray > counts.total * 0.02, f"the MR volume is not visible: {counts}"
        assert counts.red + counts.blue >= MIN_PIXELS, f"no signed t-map drawn: {counts}"
        page.get_by_role("link", name="Show the mean map").click()
        page.wait_for_function(
            "() => document.querySelector('[data-cohort-map]')?.dataset.cohortMap === 'mean'"
        )
        assert page.get_by_test_id("cohort-scale-label").inner_text() == "Scale: mean relevance"
