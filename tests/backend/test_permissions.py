"""The permissions matrix: project admin, researcher, clinician and outsider × every operation.

Outsiders get 404 (a project's existence does not leak); members whose role may not do
something get 403.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume, write_nifti

ROLES = ("admin", "researcher", "clinician", "outsider")
READ = {"admin": 200, "researcher": 200, "clinician": 200, "outsider": 404}
WRITE = {"admin": 201, "researcher": 201, "clinician": 403, "outsider": 404}
WRITE_200 = {**WRITE, "admin": 200, "researcher": 200}
REVIEW = {"admin": 201, "researcher": 201, "clinician": 201, "outsider": 404}
ADMIN = {"admin": 200, "researcher": 403, "clinician": 403, "outsider": 404}


@dataclass
class World:
    clients: dict[str, TestClient]
    ids: dict[str, int]
    files: dict[str, bytes]


@pytest.fixture
def world(api: TestClient, app_env: Path, tmp_path: Path) -> World:
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run
    from backend.storage import get_storage

    clients = {"admin": api}
    for role in ("researcher", "clinician", "outsider"):
        password = f"{role}-password-1"
        created = api.post(
            "/api/v1/users",
            json={"username": role, "password": password, "role": "researcher"},
        )
        assert created.status_code == 201, created.text
        token = api.post(
            "/api/v1/auth/login", json={"username": role, "password": password}
        ).json()["access_token"]
        api.cookies.clear()
        clients[role] = TestClient(api.app, headers={"Authorization": f"Bearer {token}"})
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    for role in ("researcher", "clinician"):
        resp = api.put(f"/api/v1/projects/{project}/members", json={"username": role, "role": role})
        assert resp.status_code == 200, resp.text
    # The matrix of an open review round; in a blinded one (the default) clinicians see no
    # run, map or job: tests/backend/test_audit_part_b.py::test_item8_*.
    opened = api.patch(f"/api/v1/projects/{project}", json={"review_blinded": False})
    assert opened.status_code == 200, opened.text
    dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()
    image, mask = brain_volume(lesion=True)
    files = {
        "image": write_nifti(tmp_path / "i.nii.gz", image).read_bytes(),
        "mask": write_nifti(tmp_path / "m.nii.gz", mask).read_bytes(),
    }
    subject = api.post(
        f"/api/v1/datasets/{dataset['id']}/subjects",
        data={"subject_key": "s0", "label": "1"},
        files={"image": ("i.nii.gz", files["image"]), "mask": ("m.nii.gz", files["mask"])},
    ).json()
    run = api.post(
        "/api/v1/runs", json={"dataset_id": dataset["id"], "name": "r", "config": {}}
    ).json()
    # A finished run and map, made directly: permissions do not need a worker.
    with session_scope() as session:
        session.get(Run, run["id"]).status = "succeeded"
        row = AttributionMap(
            run_id=run["id"], subject_id=subject["id"], method="saliency", status="succeeded"
        )
        session.add(row)
        session.flush()
        path = get_storage().map_path(run["id"], row.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_nifti(path, image, AFFINE)
        row.path = get_storage().relative(path)
        attribution = row.id
    review = api.post(
        "/api/v1/reviews", json={"attribution_id": attribution, "rating": 4, "trust": True}
    ).json()
    ids = {
        "project": project,
        "dataset": dataset["id"],
        "subject": subject["id"],
        "run": run["id"],
        "job": run["job_id"],
        "attribution": attribution,
        "review": review["id"],
    }
    return World(clients=clients, ids=ids, files=files)


Call = Callable[[TestClient, World, str], object]


def _get(path: str) -> Call:
    return lambda c, w, role: c.get(path.format(**w.ids))


def _post(path: str, body: Callable[[World, str], dict]) -> Call:
    return lambda c, w, role: c.post(path.format(**w.ids), json=body(w, role))


def _upload(c: TestClient, w: World, role: str) -> object:
    return c.post(
        f"/api/v1/datasets/{w.ids['dataset']}/subjects",
        data={"subject_key": f"by-{role}", "label": "1"},
        files={"image": ("i.nii.gz", io.BytesIO(w.files["image"]))},
    )


OPERATIONS: list[tuple[str, Call, dict[str, int]]] = [
    ("get project", _get("/api/v1/projects/{project}"), READ),
    ("list members", _get("/api/v1/projects/{project}/members"), READ),
    ("get dataset", _get("/api/v1/datasets/{dataset}"), READ),
    ("list subjects", _get("/api/v1/datasets/{dataset}/subjects"), READ),
    ("get subject", _get("/api/v1/subjects/{subject}"), READ),
    ("download image", _get("/api/v1/subjects/{subject}/image.nii.gz"), READ),
    ("download mask", _get("/api/v1/subjects/{subject}/mask.nii.gz?drawing=true"), READ),
    ("get run", _get("/api/v1/runs/{run}"), READ),
    ("run metrics", _get("/api/v1/runs/{run}/metrics"), READ),
    ("get job", _get("/api/v1/jobs/{job}"), READ),
    ("get attribution", _get("/api/v1/attributions/{attribution}"), READ),
    ("download map", _get("/api/v1/attributions/{attribution}/map.nii.gz"), READ),
    (
        "create dataset",
        _post("/api/v1/datasets", lambda w, r: {"name": f"by {r}", "project_id": w.ids["project"]}),
        WRITE,
    ),
    ("upload subject", _upload, WRITE),
    (
        "create run",
        _post("/api/v1/runs", lambda w, r: {"dataset_id": w.ids["dataset"], "name": r}),
        WRITE,
    ),
    ("cancel run", _post("/api/v1/runs/{run}/cancel", lambda w, r: {}), WRITE_200),
    ("cancel job", _post("/api/v1/jobs/{job}/cancel", lambda w, r: {}), WRITE_200),
    (
        "create attribution",
        _post(
            "/api/v1/attributions",
            lambda w, r: {"run_id": w.ids["run"], "subject_id": w.ids["subject"]},
        ),
        WRITE,
    ),
    (
        "create review",
        _post(
            "/api/v1/reviews",
            lambda w, r: {"attribution_id": w.ids["attribution"], "rating": 3, "trust": False},
        ),
        REVIEW,
    ),
    (
        "set member",
        lambda c, w, r: c.put(
            f"/api/v1/projects/{w.ids['project']}/members",
            json={"username": "clinician", "role": "clinician"},
        ),
        ADMIN,
    ),
]


@pytest.mark.parametrize(("name", "call", "expected"), OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_permission_matrix(world: World, name: str, call: Call, expected: dict[str, int]) -> None:
    got = {role: call(world.clients[role], world, role).status_code for role in ROLES}
    assert got == expected


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/api/v1/datasets", "dataset"),
        ("/api/v1/runs", "run"),
        ("/api/v1/jobs", "job"),
        ("/api/v1/attributions", "attribution"),
        ("/api/v1/reviews", "review"),
        ("/api/v1/projects", "project"),
    ],
)
def test_lists_show_only_member_projects(world: World, path: str, key: str) -> None:
    for role in ROLES:
        ids = [row["id"] for row in world.clients[role].get(path).json()["data"]]
        assert (world.ids[key] in ids) == (role != "outsider"), role


def test_review_export_lists_only_visible_reviews(world: World) -> None:
    member = world.clients["clinician"].get("/api/v1/reviews/export.csv")
    assert member.status_code == 200 and member.text.count("\n") == 2  # header + one review
    outsider = world.clients["outsider"].get("/api/v1/reviews/export.csv")
    assert outsider.text.count("\n") == 1


def test_site_admin_only_routes(world: World) -> None:
    for role in ("researcher", "clinician", "outsider"):
        assert world.clients[role].get("/api/v1/users").status_code == 403
        created = world.clients[role].post(
            "/api/v1/users", json={"username": f"x{role}", "password": "long-password-1"}
        )
        assert created.status_code == 403
    assert world.clients["admin"].get("/api/v1/users").json()["count"] == 4


def test_clinician_site_role_cannot_create_projects(world: World, api: TestClient) -> None:
    api.post(
        "/api/v1/users",
        json={"username": "doc", "password": "doctor-password-1", "role": "clinician"},
    )
    token = api.post(
        "/api/v1/auth/login", json={"username": "doc", "password": "doctor-password-1"}
    ).json()["access_token"]
    doc = TestClient(api.app, headers={"Authorization": f"Bearer {token}"})
    assert doc.post("/api/v1/projects", json={"name": "mine"}).status_code == 403
    researcher = world.clients["researcher"].post("/api/v1/projects", json={"name": "mine"})
    assert researcher.status_code == 201 and researcher.json()["role"] == "admin"


def test_a_project_keeps_one_admin(world: World) -> None:
    admin_id = world.clients["admin"].get("/api/v1/auth/me").json()["id"]
    resp = world.clients["admin"].delete(
        f"/api/v1/projects/{world.ids['project']}/members/{admin_id}"
    )
    assert resp.status_code == 409 and "at least one admin" in resp.json()["detail"]
