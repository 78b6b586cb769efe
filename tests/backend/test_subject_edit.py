"""PATCH /subjects/{id} (updateSubject): label, split and site; WRITE roles only."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import brain_volume, write_nifti


@pytest.fixture
def subject(api: TestClient, tmp_path: Path) -> dict:
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()
    image, _ = brain_volume(lesion=False)
    resp = api.post(
        f"/api/v1/datasets/{dataset['id']}/subjects",
        data={"subject_key": "s0", "label": "0", "split": "train"},
        files={"image": ("i.nii.gz", write_nifti(tmp_path / "i.nii.gz", image).read_bytes())},
    )
    assert resp.status_code == 201, resp.text
    return {**resp.json(), "project_id": project}


def _member(api: TestClient, project: int, username: str, role: str) -> TestClient:
    password = f"{username}-password-1"
    created = api.post(
        "/api/v1/users", json={"username": username, "password": password, "role": "researcher"}
    )
    assert created.status_code == 201, created.text
    if role != "outsider":
        resp = api.put(
            f"/api/v1/projects/{project}/members", json={"username": username, "role": role}
        )
        assert resp.status_code == 200, resp.text
    token = api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    ).json()["access_token"]
    api.cookies.clear()
    return TestClient(api.app, headers={"Authorization": f"Bearer {token}"})


def test_update_label_split_site(api: TestClient, subject: dict) -> None:
    url = f"/api/v1/subjects/{subject['id']}"
    resp = api.patch(url, json={"label": 1, "split": "val", "site": "Bern"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["label"], body["split"], body["site"]) == (1, "val", "Bern")
    assert body["subject_key"] == "s0"
    # Stored: read back, and the subject list agrees.
    assert api.get(url).json()["split"] == "val"
    listed = api.get(f"/api/v1/datasets/{subject['dataset_id']}/subjects").json()["data"]
    assert [(s["label"], s["split"]) for s in listed] == [(1, "val")]


def test_partial_update_keeps_other_fields(api: TestClient, subject: dict) -> None:
    url = f"/api/v1/subjects/{subject['id']}"
    assert api.patch(url, json={"split": "test"}).status_code == 200
    body = api.patch(url, json={}).json()
    assert (body["label"], body["split"], body["site"]) == (0, "test", subject["site"])


@pytest.mark.parametrize(
    "payload",
    [
        {"label": 2},
        {"label": "sick"},
        {"split": "holdout"},
        {"site": "x" * 65},
        {"site": "Bern\nZurich"},
        {"site": "tab\there"},
        {"site": 7},
        {"label": None},
        {"split": None},
        {"subject_key": "renamed"},
    ],
)
def test_bad_values_are_422(api: TestClient, subject: dict, payload: dict) -> None:
    url = f"/api/v1/subjects/{subject['id']}"
    resp = api.patch(url, json=payload)
    assert resp.status_code == 422, resp.text
    assert api.get(url).json()["label"] == 0
    assert api.get(url).json()["split"] == "train"


def test_site_is_trimmed_and_can_be_cleared(api: TestClient, subject: dict) -> None:
    url = f"/api/v1/subjects/{subject['id']}"
    resp = api.patch(url, json={"site": "  Basel 3T "})
    assert resp.status_code == 200, resp.text
    assert resp.json()["site"] == "Basel 3T"
    assert api.patch(url, json={"site": ""}).json()["site"] == ""
    assert api.get(url).json()["site"] == ""


def test_bad_site_names_the_field(api: TestClient, subject: dict) -> None:
    resp = api.patch(f"/api/v1/subjects/{subject['id']}", json={"site": "a\nb"})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert any(d["loc"][-1] == "site" and "control characters" in d["msg"] for d in detail), detail


def test_unknown_subject_is_404(api: TestClient, subject: dict) -> None:
    assert api.patch("/api/v1/subjects/999999", json={"split": "val"}).status_code == 404


@pytest.mark.parametrize(
    ("role", "expected"),
    [("researcher", 200), ("clinician", 403), ("outsider", 404)],
)
def test_roles(api: TestClient, subject: dict, role: str, expected: int) -> None:
    client = _member(api, subject["project_id"], role, role)
    url = f"/api/v1/subjects/{subject['id']}"
    resp = client.patch(url, json={"split": "test"})
    assert resp.status_code == expected, resp.text
    assert api.get(url).json()["split"] == ("test" if expected == 200 else "train")
