"""The REST API in process: auth, uploads with validation, runs, settings."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD
from tests.helpers import brain_volume, write_nifti


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _subject_files(data_dir: Path) -> list[Path]:
    return _files_under(data_dir / "datasets") + _files_under(data_dir / "tmp")


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "uploads", "description": "test"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _upload(api: TestClient, dataset_id: int, image: Path, mask: Path | None = None, **form):
    files = {"image": (image.name, image.read_bytes())}
    if mask is not None:
        files["mask"] = (mask.name, mask.read_bytes())
    data = {"subject_key": "sub-01", "label": "1", "split": "train", **form}
    return api.post(f"/api/v1/datasets/{dataset_id}/subjects", data=data, files=files)


def test_login_me_and_refusals(api: TestClient) -> None:
    assert api.get("/api/v1/auth/me").json()["username"] == "admin"
    wrong = api.post("/api/v1/auth/login", json={"username": "admin", "password": "nope"})
    assert wrong.status_code == 401
    assert "wrong username or password" in wrong.json()["detail"]
    anonymous = TestClient(api.app)
    assert anonymous.get("/api/v1/datasets").status_code == 401
    bad = anonymous.get("/api/v1/datasets", headers={"Authorization": "Bearer atv_forged"})
    assert bad.status_code == 401


def test_cookie_writes_need_the_csrf_header(api: TestClient) -> None:
    browser = TestClient(api.app)
    resp = browser.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert resp.status_code == 200
    assert browser.get("/api/v1/datasets").status_code == 200  # reads ride on the cookie
    refused = browser.post("/api/v1/datasets", json={"name": "x"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    csrf = browser.cookies.get("attrivue_csrf")
    accepted = browser.post("/api/v1/datasets", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 201


def test_personal_token_is_revocable(api: TestClient) -> None:
    created = api.post("/api/v1/auth/tokens", json={"name": "script"}).json()
    script = TestClient(api.app, headers={"Authorization": f"Bearer {created['token']}"})
    assert script.get("/api/v1/auth/me").status_code == 200
    assert api.delete(f"/api/v1/auth/tokens/{created['id']}").status_code == 204
    assert script.get("/api/v1/auth/me").status_code == 401


def test_upload_valid_subject_is_stored_deidentified(
    api: TestClient, dataset_id: int, tmp_path: Path, app_env: Path
) -> None:
    image, mask = brain_volume(lesion=True)
    img_path = write_nifti(tmp_path / "t1.nii.gz", image, descrip="Jane Doe 1970-01-01")
    mask_path = write_nifti(tmp_path / "lesions.nii.gz", mask)
    resp = _upload(api, dataset_id, img_path, mask_path)
    assert resp.status_code == 201, resp.text
    subject = resp.json()
    assert subject["has_mask"] and subject["shape"] == list(image.shape)

    listed = api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()
    assert listed["count"] == 1
    download = api.get(f"/api/v1/subjects/{subject['id']}/image.nii.gz")
    assert download.status_code == 200
    stored = nib.Nifti1Image.from_bytes(gzip.decompress(download.content))
    assert stored.header["descrip"].tobytes().strip(b"\x00") == b""
    np.testing.assert_allclose(stored.affine, nib.load(img_path).affine)
    np.testing.assert_allclose(stored.get_fdata(), image, atol=1e-4)

    drawing = api.get(f"/api/v1/subjects/{subject['id']}/mask.nii.gz?drawing=true")
    values = np.unique(nib.Nifti1Image.from_bytes(gzip.decompress(drawing.content)).get_fdata())
    assert set(values.tolist()) == {0.0, 2.0}

    again = _upload(api, dataset_id, img_path)
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


def _assert_nothing_stored(api: TestClient, dataset_id: int, data_dir: Path) -> None:
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 0
    assert _subject_files(data_dir) == []


def test_upload_refuses_a_file_that_is_not_nifti(
    api: TestClient, dataset_id: int, tmp_path: Path, app_env: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("patient notes, not an image")
    resp = _upload(api, dataset_id, text)
    assert resp.status_code == 422
    assert "not a NIfTI file" in resp.json()["detail"]
    disguised = tmp_path / "disguised.nii.gz"
    disguised.write_text("patient notes, not an image")
    resp = _upload(api, dataset_id, disguised)
    assert 400 <= resp.status_code < 500
    assert "image 'disguised.nii.gz'" in resp.json()["detail"]
    assert "NIfTI" in resp.json()["detail"] or "gzip" in resp.json()["detail"]
    _assert_nothing_stored(api, dataset_id, app_env)


def test_upload_refuses_a_corrupt_gzip(
    api: TestClient, dataset_id: int, tmp_path: Path, app_env: Path
) -> None:
    good = write_nifti(tmp_path / "good.nii.gz", brain_volume()[0])
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    resp = _upload(api, dataset_id, truncated)
    assert 400 <= resp.status_code < 500
    detail = resp.json()["detail"]
    assert "truncated.nii.gz" in detail and ("corrupt" in detail or "truncated" in detail)
    _assert_nothing_stored(api, dataset_id, app_env)


def test_upload_refuses_a_mask_on_another_grid(
    api: TestClient, dataset_id: int, tmp_path: Path, app_env: Path
) -> None:
    image, _ = brain_volume((16, 20, 16))
    _, other_mask = brain_volume((16, 20, 18), lesion=True)
    resp = _upload(
        api,
        dataset_id,
        write_nifti(tmp_path / "t1.nii.gz", image),
        write_nifti(tmp_path / "mask.nii.gz", other_mask),
    )
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "mask" in detail and "shape" in detail
    _assert_nothing_stored(api, dataset_id, app_env)


def test_upload_refuses_nan_and_bad_labels(
    api: TestClient, dataset_id: int, tmp_path: Path, app_env: Path
) -> None:
    image, _ = brain_volume()
    image[3, 3, 3] = np.nan
    resp = _upload(api, dataset_id, write_nifti(tmp_path / "nan.nii.gz", image))
    assert resp.status_code == 422 and "NaN" in resp.json()["detail"]
    ok = write_nifti(tmp_path / "ok.nii.gz", brain_volume()[0])
    bad_label = _upload(api, dataset_id, ok, label="3")
    assert bad_label.status_code == 422 and "label" in bad_label.text
    _assert_nothing_stored(api, dataset_id, app_env)


def test_run_config_is_validated(api: TestClient, dataset_id: int, tmp_path: Path) -> None:
    assert _upload(
        api, dataset_id, write_nifti(tmp_path / "a.nii.gz", brain_volume()[0])
    ).is_success
    resp = api.post(
        "/api/v1/runs",
        json={"dataset_id": dataset_id, "name": "bad", "config": {"epochs": 0, "colour": "red"}},
    )
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "config.epochs" in detail and "config.colour" in detail
    assert api.get("/api/v1/runs").json()["count"] == 0


def test_run_is_queued_as_a_job(api: TestClient, dataset_id: int, tmp_path: Path) -> None:
    assert _upload(
        api, dataset_id, write_nifti(tmp_path / "a.nii.gz", brain_volume()[0])
    ).is_success
    resp = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "r", "config": {}})
    assert resp.status_code == 201, resp.text
    run = resp.json()
    assert run["config"]["epochs"] >= 1  # defaults filled in by the ml schema
    job = api.get(f"/api/v1/jobs/{run['job_id']}").json()
    assert job["status"] == "queued" and job["kind"] == "train"
    cancelled = api.post(f"/api/v1/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert api.get(f"/api/v1/runs/{run['id']}").json()["status"] == "cancelled"


def test_unknown_api_route_is_json_404(api: TestClient) -> None:
    resp = api.get("/api/v1/nothing-here")
    assert resp.status_code == 404 and "no such API route" in resp.json()["detail"]


def test_attribution_parameters_are_validated_per_method(
    api: TestClient, dataset_id: int, tmp_path: Path
) -> None:
    subject = _upload(api, dataset_id, write_nifti(tmp_path / "a.nii.gz", brain_volume()[0]))
    run = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "r", "config": {}})
    body = {"run_id": run.json()["id"], "subject_id": subject.json()["id"]}
    wrong = api.post(
        "/api/v1/attributions", json={**body, "method": "saliency", "params": {"steps": 64}}
    )
    assert wrong.status_code == 422 and "params" in wrong.json()["detail"]
    unknown = api.post("/api/v1/attributions", json={**body, "method": "lime"})
    assert unknown.status_code == 422
    early = api.post("/api/v1/attributions", json={**body, "method": "occlusion"})
    assert early.status_code == 409 and "has not finished training" in early.json()["detail"]
    assert api.get("/api/v1/attributions").json()["count"] == 0


def test_login_is_rate_limited(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.core.config import get_settings

    monkeypatch.setattr(get_settings(), "login_max_failures", 3)
    anonymous = TestClient(api.app)
    for _ in range(3):
        wrong = anonymous.post("/api/v1/auth/login", json={"username": "admin", "password": "x"})
        assert wrong.status_code == 401
    blocked = anonymous.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert blocked.status_code == 429 and "too many failed logins" in blocked.json()["detail"]
    assert blocked.headers["Retry-After"]
    # Another user is not locked out by someone guessing the admin's password.
    other = anonymous.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    assert other.status_code == 401
