"""Review queue (blinded), drawn corrections on the subject's grid, agreement between raters."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume, write_nifti

RATERS = ("clin1", "clin2", "clin3")


@dataclass
class World:
    admin: TestClient
    clients: dict[str, TestClient]
    project: int
    run: int
    run_name: str
    subject: int
    maps: list[int]
    shape: tuple[int, int, int]


def _login(api: TestClient, username: str, role: str = "researcher") -> TestClient:
    password = f"{username}-password-1"
    created = api.post(
        "/api/v1/users", json={"username": username, "password": password, "role": role}
    )
    assert created.status_code == 201, created.text
    token = api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    ).json()["access_token"]
    return TestClient(api.app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def world(api: TestClient, app_env: Path, tmp_path: Path) -> World:
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run
    from backend.storage import get_storage

    clients = {name: _login(api, name) for name in (*RATERS, "outsider")}
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    for name in RATERS:
        resp = api.put(
            f"/api/v1/projects/{project}/members", json={"username": name, "role": "clinician"}
        )
        assert resp.status_code == 200, resp.text
    dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()
    image, mask = brain_volume(lesion=True)
    subject = api.post(
        f"/api/v1/datasets/{dataset['id']}/subjects",
        data={"subject_key": "s0", "label": "1"},
        files={
            "image": ("i.nii.gz", write_nifti(tmp_path / "i.nii.gz", image).read_bytes()),
            "mask": ("m.nii.gz", write_nifti(tmp_path / "m.nii.gz", mask).read_bytes()),
        },
    ).json()
    run = api.post(
        "/api/v1/runs", json={"dataset_id": dataset["id"], "name": "secret-run", "config": {}}
    ).json()
    maps = []
    with session_scope() as session:
        session.get(Run, run["id"]).status = "succeeded"
        for i in range(8):
            row = AttributionMap(
                run_id=run["id"],
                subject_id=subject["id"],
                method="saliency",
                params={"i": i},
                status="succeeded" if i < 7 else "failed",
            )
            session.add(row)
            session.flush()
            path = get_storage().map_path(run["id"], row.id)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_nifti(path, image, AFFINE)
            row.path = get_storage().relative(path)
            maps.append(row.id)
    return World(
        admin=api,
        clients=clients,
        project=project,
        run=run["id"],
        run_name="secret-run",
        subject=subject["id"],
        maps=maps[:7],  # the failed map never shows
        shape=tuple(image.shape),
    )


def _item(client: TestClient, attribution: int) -> str:
    """The client's queue token of a map (what the blinded queue names it by)."""
    from backend.core.config import get_settings
    from backend.services.reviews import item_token

    user_id = client.get("/api/v1/auth/me").json()["id"]
    return item_token(get_settings().secret(), user_id, attribution)


def post_review(client: TestClient, attribution: int, rating: int, trust: bool) -> dict:
    """Rate a map by its item token: the clinicians here review in a blinded round."""
    body = {"item": _item(client, attribution), "rating": rating, "trust": trust}
    resp = client.post("/api/v1/reviews", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _queue(client: TestClient, project: int, blinded: bool = True) -> dict:
    resp = client.get(
        "/api/v1/reviews/queue",
        params={"project_id": project, "blinded": "true" if blinded else "false"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


# --- queue -------------------------------------------------------------------------------------


def test_queue_excludes_reviewed_maps(world: World) -> None:
    c1 = world.clients["clin1"]
    # Clinicians see an unblinded queue only once a project admin opens the review round.
    opened = world.admin.patch(f"/api/v1/projects/{world.project}", json={"review_blinded": False})
    assert opened.status_code == 200, opened.text
    first = _queue(c1, world.project, blinded=False)
    assert [m["attribution_id"] for m in first["data"]] == world.maps  # unblinded: by id
    assert first["reviewed"] == 0 and first["count"] == 7
    assert all(m["run_name"] == "secret-run" and m["run_id"] == world.run for m in first["data"])
    post_review(c1, world.maps[2], 4, True)
    post_review(c1, world.maps[5], 2, False)
    after = _queue(c1, world.project, blinded=False)
    ids = [m["attribution_id"] for m in after["data"]]
    assert world.maps[2] not in ids and world.maps[5] not in ids and len(ids) == 5
    assert after["reviewed"] == 2
    # another rater's queue is untouched
    assert _queue(world.clients["clin2"], world.project)["count"] == 7


def test_blinded_queue_hides_runs_and_shuffles_stably_per_user(world: World) -> None:
    c1, c2 = world.clients["clin1"], world.clients["clin2"]
    q1 = _queue(c1, world.project)
    assert q1["blinded"] is True
    raw = q1["data"]
    text = str(raw)
    assert "secret-run" not in text and "saliency" not in text
    assert all(m["run_id"] is None and m["run_name"] is None and m["method"] is None for m in raw)
    assert all(m["label"].startswith("Map ") for m in raw)
    assert all(m["attribution_id"] is None for m in raw)
    assert len({m["label"] for m in raw}) == len(raw)
    # The tokens are per user; the test (which knows the secret) maps them back to ids.
    ids1 = {_item(c1, a): a for a in world.maps}
    ids2 = {_item(c2, a): a for a in world.maps}
    assert not set(ids1) & set(ids2)
    order1 = [ids1[m["item"]] for m in raw]
    assert sorted(order1) == world.maps
    assert order1 != world.maps  # shuffled (fixed seeds: not the id order for this user)
    assert [ids1[m["item"]] for m in _queue(c1, world.project)["data"]] == order1  # reload
    assert [m["label"] for m in _queue(c1, world.project)["data"]] == [m["label"] for m in raw]
    order2 = [ids2[m["item"]] for m in _queue(c2, world.project)["data"]]
    assert sorted(order2) == world.maps and order2 != order1  # per user
    # reviewing one keeps the others' relative order
    post_review(c1, order1[0], 3, True)
    assert [ids1[m["item"]] for m in _queue(c1, world.project)["data"]] == order1[1:]


def test_queue_and_agreement_hide_projects_from_outsiders(world: World) -> None:
    outsider = world.clients["outsider"]
    assert (
        outsider.get("/api/v1/reviews/queue", params={"project_id": world.project}).status_code
        == 404
    )
    resp = outsider.get("/api/v1/reviews/agreement", params={"project_id": world.project})
    assert resp.status_code == 404
    resp = outsider.get("/api/v1/reviews/agreement", params={"run_id": world.run})
    assert resp.status_code == 404


# --- corrections -------------------------------------------------------------------------------


def _correction(shape: tuple[int, ...], affine: np.ndarray = AFFINE, gz: bool = True) -> bytes:
    data = np.zeros(shape, dtype=np.uint8)
    data[3:5, 4:6, 5] = 1
    data[6, 6, 6] = 2
    img = nib.Nifti1Image(data, affine)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def put_correction(client: TestClient, review: int, body: bytes):  # type: ignore[no-untyped-def]
    return client.put(
        f"/api/v1/reviews/{review}/correction",
        content=body,
        headers={"Content-Type": "application/octet-stream"},
    )


def test_correction_refuses_wrong_grid(world: World) -> None:
    c1 = world.clients["clin1"]
    review = post_review(c1, world.maps[0], 4, True)
    bad_shape = put_correction(c1, review["id"], _correction((8, 8, 8)))
    assert bad_shape.status_code == 422
    assert "shape" in bad_shape.json()["detail"] and "(8, 8, 8)" in bad_shape.json()["detail"]
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    bad_affine = put_correction(c1, review["id"], _correction(world.shape, shifted))
    assert bad_affine.status_code == 422 and "affine" in bad_affine.json()["detail"]
    labels = np.full(world.shape, 7, dtype=np.uint8)
    bad_values = put_correction(c1, review["id"], nib.Nifti1Image(labels, AFFINE).to_bytes())
    assert bad_values.status_code == 422 and "found 7" in bad_values.json()["detail"]
    garbage = put_correction(c1, review["id"], b"not a nifti at all")
    assert 400 <= garbage.status_code < 500
    assert c1.get(f"/api/v1/reviews/{review['id']}/correction.nii.gz").status_code == 404


def test_correction_is_stored_next_to_the_map(world: World, app_env: Path) -> None:
    c1, c2 = world.clients["clin1"], world.clients["clin2"]
    review = post_review(c1, world.maps[1], 2, False)
    for body in (_correction(world.shape, gz=False), _correction(world.shape)):
        resp = put_correction(c1, review["id"], body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["has_correction"] is True
    stored = app_env / "runs" / str(world.run) / "maps" / f"{world.maps[1]}.corrections"
    assert sorted(p.name for p in stored.iterdir()) == [f"{review['id']}.nii.gz"]
    back = c2.get(f"/api/v1/reviews/{review['id']}/correction.nii.gz")
    assert back.status_code == 200
    img = nib.Nifti1Image.from_bytes(gzip.decompress(back.content))
    data = np.asarray(img.dataobj)
    assert data.shape == world.shape and np.allclose(img.affine, AFFINE, atol=1e-4)
    assert int((data == 1).sum()) == 4 and int((data == 2).sum()) == 1
    # only the author attaches a correction; outsiders see nothing
    assert put_correction(c2, review["id"], _correction(world.shape)).status_code == 403
    outsider = world.clients["outsider"]
    assert put_correction(outsider, review["id"], _correction(world.shape)).status_code == 404
    got = outsider.get(f"/api/v1/reviews/{review['id']}/correction.nii.gz")
    assert got.status_code == 404
    listed = c1.get("/api/v1/reviews").json()  # blinded: no filtering by map id
    assert listed["count"] == 1 and listed["data"][0]["has_correction"] is True
    csv = c1.get("/api/v1/reviews/export.csv").text
    assert "has_correction" in csv.splitlines()[0] and csv.splitlines()[1].split(",")[9] == "yes"


# --- agreement ---------------------------------------------------------------------------------


def _weighted_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa with quadratic weights, by hand, over the categories 1-5."""
    k = 5
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[x - 1, y - 1] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    return 1 - (w * observed).sum() / (w * expected).sum()


def test_agreement_matches_hand_computed_kappa(world: World) -> None:
    m = world.maps
    ratings = {
        "clin1": {m[0]: (1, True), m[1]: (2, True), m[2]: (3, False), m[3]: (4, True)},
        "clin2": {m[0]: (1, True), m[1]: (3, False), m[2]: (3, False), m[3]: (5, True)},
        "clin3": {m[0]: (2, True), m[1]: (2, True), m[4]: (5, False)},
    }
    # clin1 first rates m[3] as 1, then changes their mind: the latest review counts
    post_review(world.clients["clin1"], m[3], 1, False)
    for name, rated in ratings.items():
        for attribution, (rating, trust) in rated.items():
            post_review(world.clients[name], attribution, rating, trust)
    post_review(world.clients["clin2"], m[6], 4, True)  # single rater: excluded
    resp = world.clients["clin1"].get(
        "/api/v1/reviews/agreement", params={"project_id": world.project}
    )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["n_maps"] == 4 and got["n_raters"] == 3  # m0, m1, m2, m3
    assert got["n_reviews"] == 3 + 3 + 2 + 2  # m0, m1: three raters; m2, m3: two
    pairs = {(p["rater_a"], p["rater_b"]): p for p in got["pairs"]}
    # clin1-clin2 on m0..m3: ratings (1,2,3,4) vs (1,3,3,5)
    # by hand, weights (i-j)^2/16: observed mean weight (0+1+0+1)/16/4 = 1/32; expected under
    # independent marginals E(A-B)^2/16 = (Var A + Var B + (mean A - mean B)^2)/16
    # = (1.25 + 2 + 0.25)/16 = 7/32; kappa = 1 - (1/32)/(7/32) = 6/7
    expected_12 = _weighted_kappa([1, 2, 3, 4], [1, 3, 3, 5])
    assert expected_12 == pytest.approx(6 / 7)
    assert pairs[("clin1", "clin2")]["kappa"] == pytest.approx(expected_12)
    assert pairs[("clin1", "clin2")]["n_maps"] == 4
    assert pairs[("clin1", "clin2")]["trust_agreement"] == pytest.approx(3 / 4)
    # clin1-clin3 on m0, m1: (1,2) vs (2,2)
    expected_13 = _weighted_kappa([1, 2], [2, 2])
    assert expected_13 == pytest.approx(0.0)
    assert pairs[("clin1", "clin3")]["kappa"] == pytest.approx(expected_13)
    assert pairs[("clin1", "clin3")]["trust_agreement"] == 1.0
    # clin2-clin3 on m0, m1: (1,3) vs (2,2)
    expected_23 = _weighted_kappa([1, 3], [2, 2])
    assert pairs[("clin2", "clin3")]["kappa"] == pytest.approx(expected_23)
    assert pairs[("clin2", "clin3")]["trust_agreement"] == pytest.approx(1 / 2)
    mean = (expected_12 + expected_13 + expected_23) / 3
    assert got["mean_kappa"] == pytest.approx(mean)
    assert got["trust_agreement"] == pytest.approx((3 + 2 + 1) / (4 + 2 + 2))
    # by run: for those who may see the run (not the blinded clinicians)
    by_run = world.admin.get("/api/v1/reviews/agreement", params={"run_id": world.run})
    assert by_run.json()["mean_kappa"] == pytest.approx(mean)


def test_agreement_needs_a_scope_and_handles_no_data(world: World) -> None:
    c1 = world.clients["clin1"]
    assert c1.get("/api/v1/reviews/agreement").status_code == 422
    empty = c1.get("/api/v1/reviews/agreement", params={"project_id": world.project}).json()
    assert empty["n_maps"] == 0 and empty["pairs"] == [] and empty["mean_kappa"] is None
