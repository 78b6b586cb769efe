"""The launch page in Chromium against the live server: validation messages, then a real run.

The form checks its fields before sending (no request leaves), shows the server's 422 answers
where they belong (a config value at its field, a dataset problem above the button), and a
launched run is followed on its page by Server-Sent Events until it reaches "succeeded".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from attrivue_core.presets import get_preset
from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot

pytestmark = pytest.mark.e2e

# Records what the run page shows while the run goes on: each status badge and update source.
RECORD_RUN_PAGE = """() => {
  window.__runSeen = [];
  const note = () => {
    const page = document.querySelector('.run-page');
    if (!page) return;
    const badge = page.querySelector('h1 .badge');
    const entry = (badge ? badge.textContent : '') + '|' + (page.dataset.source || '');
    if (window.__runSeen.at(-1) !== entry) window.__runSeen.push(entry);
  };
  new MutationObserver(note).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""


def _field_error(page, label: str) -> str:
    """The error text shown with the field whose label is ``label``."""
    field = page.locator("label.field", has=page.locator(f'.field-label:text-is("{label}")'))
    return field.locator(".field-error").inner_text(timeout=10_000)


def test_launch_form_shows_client_and_server_validation(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with pipeline.client() as client:
        project = client.get(f"/api/v1/datasets/{pipeline.dataset_id}").json()["project_id"]
        empty = client.post(
            "/api/v1/datasets", json={"name": "empty for launch", "project_id": project}
        ).json()
        runs_before = client.get("/api/v1/runs").json()["count"]

    with chromium_page(tmp_path / "profile") as page:
        posted: list[str] = []
        page.on(
            "request",
            lambda r: (
                posted.append(r.url) if r.method == "POST" and "/api/v1/runs" in r.url else None
            ),
        )
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/runs/new")
        form = page.get_by_role("form", name="Launch run")
        form.locator('select[name="dataset"] option', has_text="live test").wait_for(
            state="attached", timeout=30_000
        )

        # Client side: nothing chosen, a bad epoch count; no request is sent.
        form.locator('input[name="epochs"]').fill("0")
        form.get_by_role("button", name="Launch run").click()
        assert _field_error(page, "Dataset") == "Choose a dataset."
        assert _field_error(page, "Name") == "Name is required."
        assert "Epochs" in _field_error(page, "Epochs")
        assert posted == []
        save_screenshot(page, "client-errors")

        # The server's form-level answer: a dataset without subjects cannot be trained on.
        form.locator('select[name="dataset"]').select_option(label="empty for launch")
        form.locator('input[name="name"]').fill("should not start")
        form.locator('input[name="epochs"]').fill("1")
        form.get_by_role("button", name="Launch run").click()
        alert = form.get_by_role("alert")
        alert.wait_for(timeout=30_000)
        assert f"dataset {empty['id']} has no subjects" in alert.inner_text()
        assert len(posted) == 1

        # The server's field-level answer: a config value the form cannot produce (epochs over
        # RunConfig's 1000, set on the way out) comes back as a 422 shown at the Epochs field.
        def too_many_epochs(route) -> None:
            body = json.loads(route.request.post_data or "{}")
            body["config"]["epochs"] = 5000
            route.continue_(post_data=json.dumps(body))

        page.route("**/api/v1/runs", too_many_epochs)
        form.locator('select[name="dataset"]').select_option(label="live test")
        with page.expect_response(
            lambda r: r.request.method == "POST" and "/api/v1/runs" in r.url
        ) as resp:
            form.get_by_role("button", name="Launch run").click()
        assert resp.value.status == 422, resp.value.text()
        assert "1000" in _field_error(page, "Epochs")
        page.unroute("**/api/v1/runs")
        save_screenshot(page, "server-errors")
        assert page.url.endswith("/runs/new")

    with pipeline.client() as client:
        assert client.get("/api/v1/runs").json()["count"] == runs_before


def test_launch_a_run_and_watch_it_succeed(pipeline, tmp_path: Path) -> None:
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
        form.locator('input[name="name"]').fill("launched from the browser")
        form.locator('select[name="network"]').select_option("small_cnn")
        form.locator('input[name="epochs"]').fill("1")
        form.locator('input[name="batch_size"]').fill("4")
        page.evaluate(RECORD_RUN_PAGE)
        form.get_by_role("button", name="Launch run").click()

        page.wait_for_url(re.compile(r"/runs/\d+$"), timeout=30_000)
        run_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
        badge = page.locator(".run-page h1 .badge")
        badge.wait_for(timeout=30_000)
        page.wait_for_function(
            "() => document.querySelector('.run-page h1 .badge')?.textContent === 'succeeded'",
            timeout=240_000,
        )
        # The final metrics arrive with the end of the stream.
        page.get_by_test_id("test-metrics").wait_for(timeout=60_000)
        assert page.locator(".charts svg, .charts canvas").count() >= 1
        seen = page.evaluate("window.__runSeen")
        save_screenshot(page, "succeeded")

    statuses = [s.split("|")[0] for s in seen]
    sources = {s.split("|")[1] for s in seen}
    # Live: the page showed the run before it was done, then its end, without a reload.
    assert statuses[-1] == "succeeded", seen
    assert {"queued", "running"} & set(statuses[:-1]), seen
    assert "stream" in sources, seen
    with pipeline.client() as client:
        run = client.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["name"] == "launched from the browser"
    assert run["config"]["epochs"] == 1 and run["config"]["network"] == "small_cnn"


def test_pick_a_preset_see_its_values_and_launch(pipeline, tmp_path: Path) -> None:
    """The preset picker fills the form with the preset's values and shows them; the run
    records the preset, takes its values, and the user's own edits win over them."""
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    sent: list[dict] = []
    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/runs/new?dataset={pipeline.dataset_id}")
        form = page.get_by_role("form", name="Launch run")
        form.locator('select[name="preset"] option', has_text="Classification").wait_for(
            state="attached", timeout=30_000
        )
        form.locator('select[name="dataset"] option', has_text="live test").wait_for(
            state="attached", timeout=30_000
        )
        form.locator('select[name="dataset"]').select_option(str(pipeline.dataset_id))
        form.locator('input[name="name"]').fill("from a preset")

        # The supervised constraint: its attribution settings appear, filled in.
        form.locator('select[name="preset"]').select_option("constrained_supervised")
        values = page.get_by_test_id("preset-values")
        values.wait_for(timeout=10_000)
        text = values.inner_text()
        for shown in ("lc_la_supervised", "integrated_gradients", "ig_steps", "lambda_a"):
            assert shown in text, text
        assert form.locator('input[name="loss_setting"][value="lc_la_supervised"]').is_checked()
        assert form.locator('input[name="ig_steps"]').input_value() == "4"
        assert form.locator('input[name="lambda_value"]').input_value() == "5"
        # The preset's own epochs (attrivue_core/presets.py; 12 since the evaluated recipe).
        epochs = get_preset("constrained_supervised")["config"]["epochs"]
        assert form.locator('input[name="epochs"]').input_value() == str(epochs)
        assert form.locator('input[name="name"]').input_value() == "from a preset"
        save_screenshot(page, "constrained-preset")

        # Then the classification preset, with the epochs edited by the user.
        form.locator('select[name="preset"]').select_option("classification")
        assert form.locator('input[name="loss_setting"][value="lc_only"]').is_checked()
        assert form.locator('input[name="learning_rate"]').input_value() == "0.003"
        assert form.locator('input[name="ig_steps"]').count() == 0  # no constraint, no IG
        form.locator('input[name="epochs"]').fill("1")

        def small_grid(route) -> None:
            # A CI-sized grid on the way out (the form has no grid field).
            body = json.loads(route.request.post_data or "{}")
            sent.append(body)
            body["config"]["grid"] = [24, 28, 24]
            route.continue_(post_data=json.dumps(body))

        page.route("**/api/v1/runs", small_grid)
        form.get_by_role("button", name="Launch run").click()
        page.wait_for_url(re.compile(r"/runs/\d+$"), timeout=30_000)
        run_id = int(page.url.rstrip("/").rsplit("/", 1)[-1])
        page.get_by_test_id("run-preset").wait_for(timeout=30_000)
        page.wait_for_function(
            "() => document.querySelector('.run-page h1 .badge')?.textContent === 'succeeded'",
            timeout=300_000,
        )
        # The evaluation of the finished run: best epoch and the metric, and sites.
        page.get_by_test_id("best-epoch").wait_for(timeout=60_000)
        assert "epoch 1" in page.get_by_test_id("best-epoch").inner_text()
        page.get_by_test_id("site-metrics").wait_for(timeout=60_000)
        save_screenshot(page, "launched-from-preset")

    assert sent and sent[0]["preset"] == "classification"
    with pipeline.client() as client:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        predictions = client.get(f"/api/v1/runs/{run_id}/predictions").json()
    assert run["preset"] == "classification" and run["status"] == "succeeded"
    config = run["config"]
    assert config["loss_setting"] == "lc_only" and config["learning_rate"] == 0.003
    assert config["epochs"] == 1  # the user's edit over the preset's epochs
    assert run["best_epoch"] == 1 and run["best_metric"]
    assert predictions["count"] > 0
