"""Every import path stores a brain mask with the subject; /stats is computed inside it.

The subjects are noisy volumes (``tests.helpers.brain_volume``: an ellipsoid of intensity 100
in Gaussian noise of sd 5, so no background voxel is zero): "non-zero voxels" would be the
whole grid. A computed mask must find the ellipsoid; a user's mask must be kept as given, and
one on another grid refused with a 4xx that names it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.backend.test_uploads import (
    assert_nothing_stored,
    bids_tree,
    files_under,
    nifti,
    post_import,
    subject_files,
    table,
    upload_file,
    zipped,
)
from tests.helpers import AFFINE, brain_volume

SHAPE = (16, 20, 16)


def _true_brain(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """The ellipsoid ``brain_volume`` draws (its intensity 100 region)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    return (grid**2).sum(0) < 0.8


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _brain_of(api: TestClient, subject_id: int) -> nib.Nifti1Image:
    resp = api.get(f"/api/v1/subjects/{subject_id}/brain.nii.gz")
    assert resp.status_code == 200, resp.text
    return nib.Nifti1Image.from_bytes(gzip.decompress(resp.content))


def _check_computed(api: TestClient, subject: dict) -> None:
    assert subject["brain_mask"] == "computed"
    img = _brain_of(api, subject["id"])
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
    assert data.shape == tuple(subject["shape"])
    np.testing.assert_allclose(img.affine, AFFINE)
    brain = data.astype(bool)
    # Not the whole grid (every voxel is non-zero), but the ellipsoid.
    assert brain.mean() < 0.7
    assert _dice(brain, _true_brain()) > 0.85


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "brain masks"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


@pytest.fixture
def project_id(api: TestClient) -> int:
    return int(api.get("/api/v1/projects").json()["data"][0]["id"])


def _upload_one(
    api: TestClient, dataset_id: int, key: str, brain: bytes | None = None, *, seed: int = 0
):
    image, _ = brain_volume(SHAPE, seed=seed)
    files = {"image": ("image.nii.gz", nifti(image))}
    if brain is not None:
        files["brain_mask"] = ("brain.nii.gz", brain)
    data = {"subject_key": key, "label": "0", "split": "train"}
    return api.post(f"/api/v1/datasets/{dataset_id}/subjects", data=data, files=files)


# --------------------------------------------------------------------------- single upload


def test_single_upload_computes_a_brain_mask(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    resp = _upload_one(api, dataset_id, "s1")
    assert resp.status_code == 201, resp.text
    subject = resp.json()
    _check_computed(api, subject)
    stored = app_env / "datasets" / str(dataset_id) / "subjects" / str(subject["id"])
    assert (stored / "brain.nii.gz").is_file() and (stored / "image.nii.gz").is_file()


def test_single_upload_keeps_the_users_brain_mask(api: TestClient, dataset_id: int) -> None:
    given = np.zeros(SHAPE, np.uint8)
    given[4:12, 5:15, 4:12] = 1  # a box: nothing a computation would produce
    resp = _upload_one(api, dataset_id, "s1", nifti(given))
    assert resp.status_code == 201, resp.text
    assert resp.json()["brain_mask"] == "given"
    np.testing.assert_array_equal(np.asarray(_brain_of(api, resp.json()["id"]).dataobj), given)


@pytest.mark.parametrize(
    ("brain", "words"),
    [
        (nifti(np.ones((16, 20, 15), np.uint8)), "differs from image shape"),
        (nifti(np.ones(SHAPE, np.uint8), affine=AFFINE * 2), "affine"),
        (nifti(np.full(SHAPE, 3, np.uint8)), "expected only the values 0 and 1"),
        (nifti(np.zeros(SHAPE, np.uint8)), "the brain mask is empty"),
    ],
    ids=["other-shape", "other-affine", "not-binary", "empty"],
)
def test_single_upload_refuses_a_bad_brain_mask(
    api: TestClient, dataset_id: int, app_env: Path, brain: bytes, words: str
) -> None:
    resp = _upload_one(api, dataset_id, "s1", brain)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "brain_mask" in detail and words in detail, detail
    assert_nothing_stored(api, dataset_id, app_env)


# --------------------------------------------------------------------------- many at once

HEADER = ["subject", "image", "mask", "brain_mask", "label", "split", "site"]


def _rows_with_brain(brain_of: dict[int, str]) -> list[list[str]]:
    return [HEADER] + [
        [
            f"sub-{i:02d}",
            f"sub-{i:02d}.nii.gz",
            f"sub-{i:02d}_mask.nii.gz" if i % 2 else "",
            brain_of.get(i, ""),
            str(i % 2),
            "train",
            "A",
        ]
        for i in range(3)
    ]


def test_manifest_brain_mask_column_given_or_computed(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    files = subject_files(3)
    given = _true_brain().astype(np.uint8)
    given[:, :, :3] = 0  # recognisably the user's
    files["brains/sub-01_brain.nii.gz"] = nifti(given)
    rows = _rows_with_brain({1: "brains/sub-01_brain.nii.gz"})
    resp = post_import(api, dataset_id, files, ("manifest.csv", table(rows)))
    assert resp.status_code == 201, resp.text
    got = {s["subject_key"]: s for s in resp.json()["data"]}
    assert got["sub-01"]["brain_mask"] == "given"
    np.testing.assert_array_equal(np.asarray(_brain_of(api, got["sub-01"]["id"]).dataobj), given)
    _check_computed(api, got["sub-00"])
    _check_computed(api, got["sub-02"])
    assert files_under(app_env / "tmp") == []


def test_manifest_brain_mask_on_another_grid_is_refused(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    files = subject_files(3)
    files["sub-02_brain.nii.gz"] = nifti(np.ones((16, 20, 15), np.uint8))
    rows = _rows_with_brain({2: "sub-02_brain.nii.gz"})
    resp = post_import(api, dataset_id, files, ("manifest.csv", table(rows)))
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert any(
        e["file"] == "sub-02_brain.nii.gz"
        and e["row"] == 4
        and e["problem"].startswith("brain_mask:")
        and "differs from image shape" in e["problem"]
        for e in errors
    ), errors
    assert_nothing_stored(api, dataset_id, app_env)


def test_manifest_brain_mask_that_was_not_sent_is_named(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    rows = _rows_with_brain({0: "missing_brain.nii.gz"})
    resp = post_import(api, dataset_id, subject_files(3), ("manifest.csv", table(rows)))
    assert resp.status_code == 422, resp.text
    assert any(
        e["file"] == "missing_brain.nii.gz" and e["row"] == 2 and "brain_mask" in e["problem"]
        for e in resp.json()["errors"]
    ), resp.json()
    assert_nothing_stored(api, dataset_id, app_env)


def test_zip_from_a_chunked_upload_gets_brain_masks(
    api: TestClient, dataset_id: int, project_id: int
) -> None:
    files = subject_files(2)
    rows = [r[:3] + r[4:] for r in _rows_with_brain({})][:3]  # no brain_mask column at all
    archive = zipped({**files, "manifest.csv": table(rows)})
    upload_id = upload_file(api, project_id, "dataset.zip", archive)
    resp = api.post(f"/api/v1/datasets/{dataset_id}/imports", json={"upload_ids": [upload_id]})
    assert resp.status_code == 201, resp.text
    for subject in resp.json()["data"]:
        _check_computed(api, subject)


def test_bids_brain_mask_is_taken_and_not_mistaken_for_a_lesion(
    api: TestClient, dataset_id: int
) -> None:
    tree = bids_tree()
    given = _true_brain().astype(np.uint8)
    given[0:4] = 0
    tree["derivatives/masks/sub-01/anat/sub-01_desc-brain_mask.nii.gz"] = nifti(given)
    resp = post_import(api, dataset_id, {"bids.zip": zipped(tree)}, None)
    assert resp.status_code == 201, resp.text
    got = {s["subject_key"]: s for s in resp.json()["data"]}
    assert got["sub-01"]["brain_mask"] == "given" and not got["sub-01"]["has_mask"]
    np.testing.assert_array_equal(np.asarray(_brain_of(api, got["sub-01"]["id"]).dataobj), given)
    assert got["sub-02"]["has_mask"] and got["sub-02"]["brain_mask"] == "computed"


# --------------------------------------------------------------------------- old subjects, access


def test_a_subject_without_a_brain_mask_gets_one_on_first_use(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    from backend.core.db import session_scope
    from backend.models import Subject

    subject = _upload_one(api, dataset_id, "old").json()
    folder = app_env / "datasets" / str(dataset_id) / "subjects" / str(subject["id"])
    (folder / "brain.nii.gz").unlink()
    with session_scope() as session:  # as a subject imported before brain masks existed
        row = session.get(Subject, subject["id"])
        row.brain_path, row.brain_source = None, None
    assert api.get(f"/api/v1/subjects/{subject['id']}").json()["brain_mask"] is None
    brain = np.asarray(_brain_of(api, subject["id"]).dataobj).astype(bool)  # computed now
    assert _dice(brain, _true_brain()) > 0.85
    assert (folder / "brain.nii.gz").is_file()
    _check_computed(api, api.get(f"/api/v1/subjects/{subject['id']}").json())


def test_brain_mask_route_checks_access(api: TestClient, dataset_id: int) -> None:
    from backend.core.db import session_scope
    from backend.services.users import create_user

    subject = _upload_one(api, dataset_id, "s1").json()
    with session_scope() as session:
        create_user(session, username="outsider", password="outsider-password", role="researcher")
    token = api.post(
        "/api/v1/auth/login", json={"username": "outsider", "password": "outsider-password"}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for what in ("mask.nii.gz", "brain.nii.gz"):
        resp = api.get(f"/api/v1/subjects/{subject['id']}/{what}", headers=headers)
        assert resp.status_code in (403, 404), (what, resp.text)
    missing = api.get("/api/v1/subjects/999999/brain.nii.gz")
    assert missing.status_code == 404 and "subject 999999" in missing.json()["detail"]
    assert api.get(f"/api/v1/subjects/{subject['id']}/brain.nii.gz").status_code == 200


# --------------------------------------------------------------------------- /stats


def test_stats_are_computed_inside_the_brain_mask(api: TestClient, dataset_id: int) -> None:
    """Relevance on the background (outside the brain) no longer counts in /stats."""
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap, Run
    from backend.storage import get_storage

    brain = np.zeros(SHAPE, np.uint8)
    brain[2:14, 2:18, 2:14] = 1
    image, _ = brain_volume(SHAPE, seed=1)
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[6:8, 8:10, 6:8] = 1
    ids = {}
    for key, label, mask in (("patient", "1", lesion), ("control", "0", None)):
        files = {"image": ("i.nii.gz", nifti(image)), "brain_mask": ("b.nii.gz", nifti(brain))}
        if mask is not None:
            files["mask"] = ("m.nii.gz", nifti(mask))
        data = {"subject_key": key, "label": label, "split": "test"}
        resp = api.post(f"/api/v1/datasets/{dataset_id}/subjects", data=data, files=files)
        assert resp.status_code == 201, resp.text
        ids[key] = resp.json()["id"]
    run = api.post("/api/v1/runs", json={"dataset_id": dataset_id, "name": "r"}).json()["id"]

    a = np.zeros(SHAPE, np.float32)
    a[lesion.astype(bool)] = 1.0  # 8 lesion voxels, positive mass 8 in the lesion
    a[0, 0, 0] = 50.0  # background corner: the maximum, outside the brain
    a[15, 19, 15] = -30.0  # background: healthy relevance outside the brain
    a[3, 3, 3] = -2.0  # inside the brain
    stored = {}
    with session_scope() as session:
        session.get(Run, run).status = "succeeded"
        for key in ids:
            row = AttributionMap(
                run_id=run, subject_id=ids[key], method="saliency", status="succeeded"
            )
            session.add(row)
            session.flush()
            path = get_storage().map_path(run, row.id)
            save_nifti(path, a, AFFINE)
            row.path = get_storage().relative(path)
            stored[key] = row.id

    stats = api.get(f"/api/v1/attributions/{stored['patient']}/stats").json()
    n_brain = int(brain.sum())
    assert stats["brain_voxels"] == n_brain and stats["shape"] == list(SHAPE)
    assert (stats["min"], stats["max"]) == (-2.0, 1.0)
    assert (stats["positive_mass"], stats["negative_mass"]) == (8.0, -2.0)
    assert stats["mean_abs"] == pytest.approx(10 / n_brain)
    assert stats["lesion"]["lesion_mass"] == 1.0  # over all voxels it would be 8 / 58
    assert stats["lesion"]["pointing_game"] is True  # the corner's 50 is not the brain's max
    healthy = api.get(f"/api/v1/attributions/{stored['control']}/stats").json()
    assert healthy["pathological_share"] == pytest.approx(8 / 10)  # all voxels: 58 / 90

    # The same numbers as the engine's metrics with the same brain mask.
    from worker.ml import metrics

    assert stats["lesion"]["lesion_mass"] == pytest.approx(
        metrics.lesion_mass(a, lesion, brain_mask=brain)
    )
    assert stats["lesion"]["dice_top_k"] == pytest.approx(
        metrics.dice_top_k(a, lesion, 5.0, brain_mask=brain)
    )
    assert stats["lesion"]["voxel_auroc"] == pytest.approx(
        metrics.voxel_auroc(a, lesion, brain_mask=brain)
    )
    assert healthy["pathological_share"] == pytest.approx(
        metrics.healthy_pathological_share(a, brain_mask=brain)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_statistics_inside_a_brain_agree_with_worker_metrics(seed: int) -> None:
    from backend.services import maps
    from worker.ml import metrics

    rng = np.random.default_rng(seed)
    data = np.round(rng.normal(0, 1, SHAPE), 1)  # ties
    lesion = rng.random(SHAPE) < 0.05
    brain = _true_brain()
    stats = maps.map_statistics(data, lesion=lesion, label=0, brain=brain)
    found = stats["lesion"]
    assert found["lesion_voxels"] == int((lesion & brain).sum())
    assert found["lesion_mass"] == pytest.approx(
        metrics.lesion_mass(data, lesion, brain_mask=brain)
    )
    assert found["dice_top_k"] == pytest.approx(
        metrics.dice_top_k(data, lesion, 5.0, brain_mask=brain)
    )
    assert found["voxel_auroc"] == pytest.approx(
        metrics.voxel_auroc(data, lesion, brain_mask=brain)
    )
    assert found["pointing_game"] == metrics.pointing_game(data, lesion, brain_mask=brain)
    assert stats["pathological_share"] == pytest.approx(
        metrics.healthy_pathological_share(data, brain_mask=brain)
    )
    with pytest.raises(ValueError, match="the brain mask has shape"):
        maps.map_statistics(data, lesion=lesion, label=0, brain=brain[:-1])
