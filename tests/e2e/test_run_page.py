"""Issue 17 item 4: the run page shows the run of its URL and nothing of another.

Against the stub API, with two finished runs whose curves differ (3 and 5 epochs), the second
launched from the reviews of the first, both streamed as Server-Sent Events. Navigating in the
app from the child to its parent (the "launched from the reviews of" link) and back must show
each run's own curves, names and test metrics. A missing run (404) and a forbidden one (403)
say so, and the page stops asking the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e import stub_api, stub_runs
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e


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


def _shown_run(page: Page, run_id: int) -> dict[str, str]:
    """Waits until the page shows run_id with its curves; returns what a reader sees."""
    page.wait_for_function(
        """(id) => {
            const root = document.querySelector('.run-page');
            return root && root.dataset.runId === String(id) && root.dataset.source === 'ended'
                && document.querySelectorAll('.chart [data-series]').length > 0;
        }""",
        arg=run_id,
        timeout=30_000,
    )
    legend = {}
    for item in page.locator(".chart .legend li").all_text_contents():
        words = item.split()
        legend[words[0]] = words[-1]
    ticks = page.locator(".chart").first.locator("text.chart-tick").all_text_contents()
    return {
        "title": page.locator("h1").first.inner_text(),
        "last_epoch": ticks[-1],
        "test_auroc": page.locator('[data-metric="test_auroc"] .num').inner_text(),
        **legend,
    }


def _expected(run_id: int) -> dict[str, str]:
    curves = stub_runs.CURVES[run_id]
    return {
        "last_epoch": str(len(curves.loss_c)),
        "loss_c": f"{curves.loss_c[-1]:g}",
        "val_auroc": f"{curves.val_auroc[-1]:g}",
        "test_auroc": f"{curves.val_auroc[-1]:g}",
    }


def _assert_run(page: Page, run_id: int) -> None:
    shown = _shown_run(page, run_id)
    for key, value in _expected(run_id).items():
        assert shown[key] == value, (run_id, key, shown)
    assert f"stub run {run_id}" in shown["title"], shown


def test_navigating_between_runs_shows_each_runs_own_curves(
    stub: stub_api.RunningStub, page: Page
) -> None:
    child, parent = stub_runs.CHILD_RUN, stub_runs.PARENT_RUN
    page.goto(f"{stub.base_url}/runs/{child}")
    _assert_run(page, child)
    save_screenshot(page, "child-run")

    # In-app navigation (no reload) to the parent run: its 3 epochs, not the child's 5.
    page.get_by_test_id("parent-run").click()
    page.wait_for_url(f"{stub.base_url}/runs/{parent}")
    _assert_run(page, parent)
    page.wait_for_timeout(1_000)  # nothing late from the child's stream may arrive
    _assert_run(page, parent)
    assert page.get_by_test_id("parent-run").count() == 0
    save_screenshot(page, "parent-run-after-navigation")

    page.go_back()
    page.wait_for_url(f"{stub.base_url}/runs/{child}")
    _assert_run(page, child)


def test_missing_and_forbidden_runs_say_so_and_stop_polling(
    stub: stub_api.RunningStub, page: Page
) -> None:
    for run_id, expected in (
        (stub_runs.MISSING_RUN, f"Run {stub_runs.MISSING_RUN} does not exist"),
        (stub_runs.FORBIDDEN_RUN, stub_runs.FORBIDDEN_DETAIL),
    ):
        page.goto(f"{stub.base_url}/runs/{run_id}")
        alert = page.get_by_test_id("run-unavailable")
        alert.wait_for(timeout=30_000)
        assert expected in alert.inner_text(), alert.inner_text()
        assert page.locator(".chart").count() == 0
        path = f"/api/v1/runs/{run_id}"
        before = stub.api.hits.get(path, 0)
        page.wait_for_timeout(5_000)  # more than two polling periods (RUN_POLL_MS = 2 s)
        assert stub.api.hits.get(path, 0) == before, f"still polling {path}"
        save_screenshot(page, f"run-{run_id}-unavailable")
