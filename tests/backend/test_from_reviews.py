"""A run from reviews through the API: merged target files with provenance, access, bad input,
and the epoch-map routes."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume, write_nifti


def _login(api: TestClient, username: str) -> TestClient:
    password = f"{username}-password-1"
    resp = api.post(
        "/api/v1/users", json={"username": username, "password": password, "role": "researcher"}
    )
    assert resp.status_code == 201, resp.text
    token = api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    ).json()["access_token"]
    return TestClient(api.app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def setup(api: TestClient, tmp_path: Path) -> dict:
    from backend.core.db import session_scope
    from backend.models import AttributionMap

    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    clinicians = {}
    for name in ("clin1", "clin2"):
        clinicians[name] = _login(api, name)
        api.put(f"/api/v1/projects/{project}/members", json={"username": name, "role": "clinician"})
    # An open review round: the clinicians rate by map id here (blinding: test_audit_part_b).
    api.patch(f"/api/v1/projects/{project}", json={"review_blinded": False})
    dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()
    subjects = []
    for i in range(3):
        image, mask = brain_volume(seed=i, lesion=True)
        files = {"image": ("i.nii.gz", write_nifti(tmp_path / f"i{i}.nii.gz", image).read_bytes())}
        files["mask"] = ("m.nii.gz", write_nifti(tmp_path / f"m{i}.nii.gz", mask).read_bytes())
        resp = api.post(
            f"/api/v1/datasets/{dataset['id']}/subjects",
            data={"subject_key": f"s{i}", "label": "1", "split": "train"},
            files=files,
        )
        assert resp.status_code == 201, resp.text
        subjects.append((resp.json()["id"], mask))
    run = api.post(
        "/api/v1/runs", json={"dataset_id": dataset["id"], "name": "earlier", "config": {}}
    ).json()
    with session_scope() as session:
        row = AttributionMap(
            run_id=run["id"], subject_id=subjects[0][0], method="saliency", status="succeeded"
        )
        session.add(row)
        session.flush()
        attribution = row.id
    return {
        "api": api,
        "clinicians": clinicians,
        "run": run["id"],
        "subject": subjects[0][0],
        "mask": subjects[0][1],
        "attribution": attribution,
        "other_subject": subjects[1][0],
    }


def _review_with_correction(client: TestClient, attribution: int, labels: np.ndarray) -> int:
    review = client.post(
        "/api/v1/reviews", json={"attribution_id": attribution, "rating": 2, "trust": False}
    ).json()
    body = gzip.compress(nib.Nifti1Image(labels.astype(np.uint8), AFFINE).to_bytes())
    resp = client.put(
        f"/api/v1/reviews/{review['id']}/correction",
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    assert resp.status_code == 200, resp.text
    return review["id"]


def test_from_reviews_writes_merged_targets_with_provenance(setup: dict) -> None:
    api, run, mask = setup["api"], setup["run"], setup["mask"]
    # Nothing to merge yet: a clear 422, nothing stored.
    none = api.post(f"/api/v1/runs/{run}/from-reviews", json={"name": "x"})
    assert none.status_code == 422 and "no review with a drawn correction" in none.text
    count = len(api.get("/api/v1/runs").json()["data"])

    v = (2, 2, 2)
    a = np.zeros(mask.shape, np.uint8)
    a[v] = 1  # clin1: missed lesion at v
    a[mask > 0] = 2  # and the whole lesion is spurious relevance
    b = np.zeros(mask.shape, np.uint8)
    b[v] = 2  # clin2 disagrees at v
    r1 = _review_with_correction(setup["clinicians"]["clin1"], setup["attribution"], a)
    r2 = _review_with_correction(setup["clinicians"]["clin2"], setup["attribution"], b)

    listed = api.get(f"/api/v1/runs/{run}/corrections").json()
    assert listed["n_reviews"] == 2
    assert [s["subject_id"] for s in listed["subjects"]] == [setup["subject"]]
    assert {r["reviewer"] for r in listed["subjects"][0]["reviews"]} == {"clin1", "clin2"}

    # The earlier run is lc_only: corrections need a setting with L_A.
    lc = api.post(f"/api/v1/runs/{run}/from-reviews", json={"name": "x"})
    assert lc.status_code == 422 and "lc_only" in lc.text
    stranger = api.post(
        f"/api/v1/runs/{run}/from-reviews",
        json={"name": "x", "config": {"loss_setting": "la_only", "watch_subjects": [99999]}},
    )
    assert stranger.status_code == 422 and "watch_subjects" in stranger.text
    clinician = setup["clinicians"]["clin1"].post(
        f"/api/v1/runs/{run}/from-reviews",
        json={"name": "x", "config": {"loss_setting": "la_only"}},
    )
    assert clinician.status_code == 403
    assert len(api.get("/api/v1/runs").json()["data"]) == count  # nothing half-stored

    for policy, at_v in (("abstain", None), ("missed_wins", 1)):
        created = api.post(
            f"/api/v1/runs/{run}/from-reviews",
            json={"name": policy, "config": {"loss_setting": "la_only"}, "policy": policy},
        )
        assert created.status_code == 201, created.text
        new = created.json()
        assert new["from_reviews_of"] == run
        assert new["config"]["watch_subjects"] == [setup["subject"]]
        targets = api.get(f"/api/v1/runs/{new['id']}/corrected-targets").json()
        assert targets["from_reviews_of"] == run and len(targets["data"]) == 1
        row = targets["data"][0]
        assert row["policy"] == policy and row["split"] == "train"
        assert [p["review_id"] for p in row["provenance"]] == [r1, r2]
        assert [p["reviewer"] for p in row["provenance"]] == ["clin1", "clin2"]
        assert all(p["attribution_id"] == setup["attribution"] for p in row["provenance"])
        assert row["stats"]["contested_voxels"] == (1 if policy == "abstain" else 0)
        got = api.get(
            f"/api/v1/runs/{new['id']}/corrected-targets/{setup['subject']}/target.nii.gz"
        )
        assert got.status_code == 200
        stored = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(got.content)).dataobj)
        assert stored.dtype == np.uint8
        assert stored[v] == (255 if at_v is None else at_v)
        assert (stored[mask > 0] == 0).all()  # the lesion was marked spurious
        assert int((stored == 1).sum()) == (0 if at_v is None else 1)
    missing = api.get(
        f"/api/v1/runs/{new['id']}/corrected-targets/{setup['other_subject']}/target.nii.gz"
    )
    assert missing.status_code == 404


def test_epoch_map_routes(setup: dict, app_env: Path) -> None:
    from backend.core.db import session_scope
    from backend.models import EpochMap
    from backend.storage import get_storage
    from worker.ml.epoch_maps import EpochMap as Reduced

    api, run, subject = setup["api"], setup["run"], setup["subject"]
    assert api.get(f"/api/v1/runs/{run}/epoch-maps").json()["data"] == []
    assert api.get(f"/api/v1/runs/{run}/epoch-maps/{subject}/1.nii.gz").status_code == 404
    values = np.arange(16 * 20 * 16, dtype=np.int16).reshape(16, 20, 16)
    path = get_storage().run_dir(run) / "epoch_maps" / str(subject) / "1.nii.gz"
    path.parent.mkdir(parents=True)
    Reduced(subject, 1, values, 0.5, AFFINE, {}).save(path)
    with session_scope() as session:
        session.add(
            EpochMap(
                run_id=run,
                subject_id=subject,
                epoch=1,
                method="integrated_gradients",
                path=get_storage().relative(path),
                scale=0.5,
                shape=[16, 20, 16],
                stats={"lesion_mass": 0.25},
            )
        )
    listed = api.get(f"/api/v1/runs/{run}/epoch-maps", params={"subject_id": subject}).json()
    assert [(m["epoch"], m["stats"]["lesion_mass"]) for m in listed["data"]] == [(1, 0.25)]
    got = api.get(f"/api/v1/runs/{run}/epoch-maps/{subject}/1.nii.gz")
    assert got.status_code == 200
    image = nib.Nifti1Image.from_bytes(gzip.decompress(got.content))
    np.testing.assert_allclose(image.get_fdata(), values * 0.5)
    outsider = _login(api, "outsider")
    assert outsider.get(f"/api/v1/runs/{run}/epoch-maps").status_code in (403, 404)
    assert outsider.get(f"/api/v1/runs/{run}/epoch-maps/{subject}/1.nii.gz").status_code in (
        403,
        404,
    )
