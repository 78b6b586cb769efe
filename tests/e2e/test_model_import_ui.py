"""Importing a model and exporting runs in Chromium against the live server (issue 20).

The home page's "Import a model" form posts a TorchScript file made here to POST /runs/import;
a real worker runs it on a subject. A model whose output has no logit at the index asked for is
refused and the server's 422 reason shows under the form; the right index imports it, the new
run shows (marked "imported") in the run list and on its page. The run page offers "Download
checkpoint" and "Download bundle" where the API serves them (the downloads are the files the
API answers) and shows them disabled with the reason where it answers 409.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from tests.e2e.browser import DIST_INDEX, chromium_page, login, save_screenshot
from tests.worker.imported_models import Scripted, torchscript_bytes

pytestmark = pytest.mark.e2e

GRID = (24, 28, 24)  # the pipeline dataset's grid


def _need_dist() -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")


def _model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "three-outputs.ts"
    path.write_bytes(torchscript_bytes(Scripted().eval()))
    return path


def _fill_import_form(page, path: Path, name: str, logit_index: int) -> None:
    form = page.get_by_role("form", name="Import a model")
    form.locator("select[name=import_dataset_id]").select_option(label="live test")
    form.locator("input[name=import_name]").fill(name)
    form.locator("input[name=import_model]").set_input_files(str(path))
    for axis, size in zip("xyz", GRID, strict=True):
        form.locator(f"input[name=import_grid_{axis}]").fill(str(size))
    form.locator("input[name=import_logit_index]").fill(str(logit_index))
    form.get_by_role("button", name="Import").click()


def test_import_a_model_through_the_form(pipeline, tmp_path: Path) -> None:
    _need_dist()
    path = _model_file(tmp_path)
    with pipeline.client() as client:
        before = {r["id"] for r in client.get("/api/v1/runs").json()["data"]}
        # A second dataset, so that the form asks which one.
        project = client.get(f"/api/v1/datasets/{pipeline.dataset_id}").json()["project_id"]
        client.post("/api/v1/datasets", json={"name": "other", "project_id": project})

    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        form = page.get_by_role("form", name="Import a model")
        posted: list[str] = []
        page.on(
            "request",
            lambda r: (
                posted.append(r.url) if r.method == "POST" and "/runs/import" in r.url else None
            ),
        )
        # Checked in the browser first: no dataset, no name, no file: no request.
        form.get_by_role("button", name="Import").click()
        errors = form.locator(".field-error").all_inner_texts()
        assert "Choose a TorchScript file or a zipped MONAI bundle." in errors
        assert "Choose a dataset." in errors and "Give the run a name." in errors
        assert posted == []

        # The model has three outputs: index 5 is refused by the worker, with the reason.
        _fill_import_form(page, path, "refused import", 5)
        alert = form.get_by_role("alert")
        alert.wait_for(timeout=120_000)
        assert "logit_index 5 is out of range" in alert.inner_text()
        save_screenshot(page, "refused")

        _fill_import_form(page, path, "imported torchscript", 2)
        done = form.get_by_test_id("imported-run")
        done.wait_for(timeout=120_000)
        assert "imported torchscript" in done.inner_text()
        assert "TorchScript" in done.inner_text()
        assert form.get_by_role("alert").count() == 0

        with pipeline.client() as client:
            runs = client.get("/api/v1/runs").json()["data"]
        new = [r for r in runs if r["id"] not in before]
        assert [r["name"] for r in new] == ["imported torchscript"]  # the refusal kept nothing
        run = new[0]
        assert run["source"] == "imported" and run["input_spec"]["logit_index"] == 2
        assert run["config"]["grid"] == list(GRID)

        # The run list marks it; the trained run is not marked.
        row = page.locator(f"tr[data-run-id='{run['id']}']")
        row.get_by_test_id("imported-badge").wait_for(timeout=30_000)
        assert "TorchScript · grid 24×28×24" in row.inner_text()
        trained = page.locator(f"tr[data-run-id='{pipeline.run_id}']")
        assert trained.get_by_test_id("imported-badge").count() == 0
        save_screenshot(page, "imported")

        done.get_by_role("link", name="imported torchscript").click()
        page.wait_for_url(f"**/runs/{run['id']}")
        page.locator(".run-page h1").get_by_test_id("imported-badge").wait_for(timeout=30_000)
        assert "logit 2" in page.get_by_test_id("import-summary").inner_text()


def test_run_page_download_links(pipeline, tmp_path: Path) -> None:
    _need_dist()
    model = _model_file(tmp_path).read_bytes()
    with pipeline.client() as client:
        reply = client.post(
            "/api/v1/runs/import",
            data={
                "dataset_id": str(pipeline.dataset_id),
                "name": "for export",
                "grid": [str(v) for v in GRID],
                "logit_index": "2",
            },
            files={"model": ("model.ts", model)},
        )
        assert reply.status_code == 201, reply.text
        imported_id = reply.json()["id"]
        # What the API answers for each (the page must agree).
        assert client.get(f"/api/v1/runs/{imported_id}/bundle").status_code == 409
        checkpoint = client.get(f"/api/v1/runs/{pipeline.run_id}/checkpoint").content

    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)

        # A trained run: both downloads, and they are the API's files.
        page.goto(f"{pipeline.base_url}/runs/{pipeline.run_id}")
        links = page.get_by_test_id("export-links")
        links.wait_for(timeout=30_000)
        with page.expect_download() as got:
            links.get_by_role("link", name="Download checkpoint").click()
        assert Path(got.value.path()).read_bytes() == checkpoint
        assert got.value.suggested_filename == f"run-{pipeline.run_id}-best.pt"
        with page.expect_download() as got:
            links.get_by_role("link", name="Download bundle").click()
        archive = zipfile.ZipFile(io.BytesIO(Path(got.value.path()).read_bytes()))
        top = f"run-{pipeline.run_id}"
        assert f"{top}/configs/metadata.json" in archive.namelist()
        assert archive.read(f"{top}/models/model.pt") == checkpoint
        assert page.get_by_test_id("imported-badge").count() == 0

        # An imported TorchScript run: its file; no bundle, and the reason why.
        page.goto(f"{pipeline.base_url}/runs/{imported_id}")
        links = page.get_by_test_id("export-links")
        links.wait_for(timeout=30_000)
        with page.expect_download() as got:
            links.get_by_role("link", name="Download checkpoint").click()
        assert Path(got.value.path()).read_bytes() == model
        bundle = links.get_by_role("button", name="Download bundle")
        assert bundle.is_disabled()
        assert "imported: export the model it was imported from" in links.inner_text()
        assert links.get_by_role("link", name="Download bundle").count() == 0
        save_screenshot(page, "imported-run")
