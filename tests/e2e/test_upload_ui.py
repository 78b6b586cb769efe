"""The dataset page's bulk import in Chromium, against the live server.

Picks a manifest and two NIfTI files with the page's file input: each file goes up as a chunked
upload with its own progress bar, then one import; the subjects appear in the table. A manifest
with a bad row first shows the server's problem next to the manifest and imports nothing.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.e2e.browser import DIST_INDEX, chromium_page, login

pytestmark = pytest.mark.e2e


def _nifti(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:24, :24, :24]
    brain = ((zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 < 81).astype(np.float32)
    data = brain * (100 + 10 * rng.standard_normal((24, 24, 24))).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_upload_files_with_manifest(pipeline, tmp_path: Path) -> None:
    if not DIST_INDEX.is_file():
        pytest.skip("frontend/dist is not built: run `cd frontend && npm ci && npm run build`")
    with pipeline.client() as client:
        project = client.get(f"/api/v1/datasets/{pipeline.dataset_id}").json()["project_id"]
        dataset = client.post(
            "/api/v1/datasets", json={"name": "upload ui", "project_id": project}
        ).json()
    files = tmp_path / "files"
    files.mkdir()
    images = [_nifti(files / "ui-a.nii.gz", 1), _nifti(files / "ui-b.nii.gz", 2)]
    bad = tmp_path / "bad" / "manifest.csv"
    bad.parent.mkdir()
    bad.write_text("subject,image,label\nui-a,ui-a.nii.gz,0\nui-b,ui-b.nii.gz,7\n")
    manifest = files / "manifest.csv"
    manifest.write_text(
        "subject,image,label,split\nui-a,ui-a.nii.gz,0,train\nui-b,ui-b.nii.gz,1,val\n"
    )

    with chromium_page(tmp_path / "profile") as page:
        login(page, pipeline.base_url, pipeline.username, pipeline.password)
        page.goto(f"{pipeline.base_url}/datasets/{dataset['id']}")
        file_input = page.locator('input[name="import_files"]')
        file_input.wait_for(state="attached", timeout=30_000)

        # A bad label: every file uploads, the import is refused, the row's problem is shown.
        file_input.set_input_files([str(bad), *map(str, images)])
        rejected = page.locator('.upload-item[data-path="manifest.csv"][data-state="rejected"]')
        rejected.wait_for(timeout=60_000)
        assert "row 3" in rejected.locator(".upload-error").inner_text()
        assert page.locator(".import-error").count() >= 1
        assert page.locator("tr[data-subject-id]").count() == 0

        # The good manifest: three progress bars fill, then the subjects are listed.
        file_input.set_input_files([str(manifest), *map(str, images)])
        items = page.locator(".upload-item")
        page.wait_for_function(
            "() => document.querySelectorAll('.upload-item').length === 3 && "
            "[...document.querySelectorAll('.upload-item')].every("
            "li => li.dataset.state === 'imported' && li.querySelector('progress').value === 1)",
            timeout=60_000,
        )
        assert sorted(items.evaluate_all("els => els.map(e => e.dataset.path)")) == [
            "manifest.csv",
            "ui-a.nii.gz",
            "ui-b.nii.gz",
        ]
        assert "2 subjects imported" in page.locator(".import-summary").inner_text()
        rows = page.locator("tr[data-subject-id]")
        rows.nth(1).wait_for(timeout=30_000)
        # The key is in the second cell: the first holds the row's selection checkbox.
        assert sorted(rows.locator("td:nth-child(2)").all_inner_texts()) == ["ui-a", "ui-b"]

        # Inline editing: the split select saves through PATCH /subjects/{id}.
        with page.expect_response(
            lambda r: r.request.method == "PATCH" and "/api/v1/subjects/" in r.url
        ) as patched:
            page.get_by_label("Split of ui-a").select_option("test")
        assert patched.value.ok, patched.value.text()
    with pipeline.client() as client:
        listed = client.get(f"/api/v1/datasets/{dataset['id']}/subjects").json()["data"]
    assert {s["subject_key"]: (s["label"], s["split"]) for s in listed} == {
        "ui-a": (0, "test"),
        "ui-b": (1, "val"),
    }
