"""The evidence panel end to end: open a map in the viewer, run the checks on the live worker,
and read the verdict, its numbers and both charts on screen, matching what the API stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.browser import DIST_INDEX, chromium_page, login, open_viewer, save_screenshot
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_run_sanity_checks_from_the_viewer(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        open_viewer(
            page,
            f"{pipeline.base_url}/viewer/{pipeline.subject_id}?attribution={pipeline.attribution_id}",
        )
        panel = page.get_by_role("region", name="Evidence")
        url = f"{pipeline.base_url}/api/v1/attributions/{pipeline.attribution_id}/evidence"
        before = page.request.get(url).json()["count"]
        panel.get_by_role("button", name="Run sanity checks").click()

        # Other tests of the session may already have checked this map: wait for the verdict of
        # the check this click started, not for whichever verdict the panel showed before it.
        def started() -> int | None:
            listed = page.request.get(url).json()
            return listed["data"][0]["id"] if listed["count"] > before else None

        new_id = wait_for(started, timeout=30, interval=0.2, what="the check the click started")
        verdict = page.get_by_test_id("evidence-verdict")
        page.wait_for_function(
            "(id) => { const el = document.querySelector('[data-testid=evidence-verdict]');"
            " return el?.dataset.checkId === String(id)"
            " && ['passes', 'fails'].includes(el.dataset.verdict); }",
            arg=new_id,
            timeout=300_000,
        )
        save_screenshot(page, "evidence.png")

        listed = page.request.get(url).json()
        assert listed["count"] == before + 1
        stored = listed["data"][0]
        assert stored["id"] == new_id
        assert stored["status"] == "succeeded"
        text = verdict.inner_text()
        if stored["verdict"] == "passes":
            assert text == "Passes every check"
        else:
            assert text.startswith("Fails: ")
        for reason in stored["reasons"]:
            assert reason in page.get_by_test_id("evidence-reasons").inner_text()

        numbers = page.get_by_test_id("evidence-numbers").inner_text()
        faith = stored["results"]["faithfulness"]
        last = stored["results"]["model_randomisation"]["steps"][-1]
        assert "Deletion AUC" in numbers and "Spearman |A|, all layers random" in numbers

        def shown(label: str) -> float:
            row = page.locator("[data-testid=evidence-numbers] div", has_text=label).first
            return float(row.locator("dd").inner_text())

        assert shown("Deletion AUC") == pytest.approx(faith["deletion_auc"], rel=6e-3)
        assert shown("Insertion AUC") == pytest.approx(faith["insertion_auc"], rel=6e-3)
        assert shown("Spearman |A|, all layers random") == pytest.approx(
            last["spearman_abs"], rel=6e-3, abs=1e-3
        )

        curves = page.locator("figure[data-chart='Deletion and insertion (logit)']")
        assert curves.locator("g[data-series=deletion] circle").count() == len(faith["deletion"])
        assert curves.locator("g[data-series=insertion] circle").count() == len(faith["insertion"])
        layers = page.locator("figure[data-chart='Similarity per randomised layer']")
        steps = stored["results"]["model_randomisation"]["steps"]
        assert layers.locator("g[data-series='spearman abs'] circle").count() == len(steps)
