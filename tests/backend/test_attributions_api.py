"""Attributions over subjects or a split, the int8 display map and per-map statistics.

No worker runs here: the run is marked trained and the maps are written directly, as in
test_permissions.py's world fixture; batch jobs stay queued on the filesystem broker.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume, write_nifti

REPO = Path(__file__).resolve().parents[2]
SHAPE = (16, 20, 16)
# The lesion of subject "lesion": 8 voxels.
LESION = (slice(4, 6), slice(4, 6), slice(4, 6))
SUBJECTS = [  # key, label, split, with mask
    ("lesion", 1, "test", True),
    ("healthy", 0, "test", False),
    ("train-lesion", 1, "train", True),
    ("train-healthy", 0, "train", False),
]


@dataclass
class Lab:
    clients: dict[str, TestClient]
    project: int
    dataset: int
    run: int
    subjects: dict[str, int]
    other_subject: int  # in another dataset of the same project


def _login(api: TestClient, username: str, password: str) -> TestClient:
    token = api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    ).json()["access_token"]
    api.cookies.clear()
    return TestClient(api.app, headers={"Authorization": f"Bearer {token}"})


def _upload(api: TestClient, dataset: int, key: str, label: int, split: str, mask: bool, tmp: Path):
    image, _ = brain_volume(SHAPE, seed=len(key))
    files = {"image": ("i.nii.gz", write_nifti(tmp / f"{key}-i.nii.gz", image).read_bytes())}
    # The whole grid as the brain: the statistics below count every voxel (the brain mask's
    # own effect is tested in test_brain_masks.py).
    whole = np.ones(SHAPE, np.uint8)
    files["brain_mask"] = ("b.nii.gz", write_nifti(tmp / f"{key}-b.nii.gz", whole).read_bytes())
    if mask:
        lesion = np.zeros(SHAPE, np.uint8)
        lesion[LESION] = 1
        files["mask"] = ("m.nii.gz", write_nifti(tmp / f"{key}-m.nii.gz", lesion).read_bytes())
    resp = api.post(
        f"/api/v1/datasets/{dataset}/subjects",
        data={"subject_key": key, "label": str(label), "split": split},
        files=files,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.fixture
def lab(api: TestClient, tmp_path: Path) -> Lab:
    from backend.core.db import session_scope
    from backend.models import Run

    clients = {"admin": api}
    for role in ("researcher", "clinician", "outsider"):
        password = f"{role}-password-1"
        created = api.post(
            "/api/v1/users", json={"username": role, "password": password, "role": "researcher"}
        )
        assert created.status_code == 201, created.text
        clients[role] = _login(api, role, password)
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    for role in ("researcher", "clinician"):
        resp = api.put(f"/api/v1/projects/{project}/members", json={"username": role, "role": role})
        assert resp.status_code == 200, resp.text
    # An open review round: its clinicians see maps by id (blinded: test_audit_part_b)
    assert api.patch(f"/api/v1/projects/{project}", json={"review_blinded": False}).is_success
    dataset = api.post("/api/v1/datasets", json={"name": "d", "project_id": project}).json()["id"]
    subjects = {
        key: _upload(api, dataset, key, label, split, mask, tmp_path)
        for key, label, split, mask in SUBJECTS
    }
    other = api.post("/api/v1/datasets", json={"name": "other", "project_id": project}).json()
    other_subject = _upload(api, other["id"], "elsewhere", 0, "test", False, tmp_path)
    run = api.post("/api/v1/runs", json={"dataset_id": dataset, "name": "r"}).json()["id"]
    with session_scope() as session:
        session.get(Run, run).status = "succeeded"
    return Lab(clients, project, dataset, run, subjects, other_subject)


def _stored_map(lab: Lab, subject: str, data: np.ndarray, *, method: str = "saliency") -> int:
    """A succeeded map row with ``data`` written where the worker would have put it."""
    from attrivue_core.io import save_nifti
    from backend.core.db import session_scope
    from backend.models import AttributionMap
    from backend.storage import get_storage

    with session_scope() as session:
        row = AttributionMap(
            run_id=lab.run, subject_id=lab.subjects[subject], method=method, status="succeeded"
        )
        session.add(row)
        session.flush()
        path = get_storage().map_path(lab.run, row.id)
        save_nifti(path, data.astype(np.float32), AFFINE)
        row.path = get_storage().relative(path)
        return row.id


# --------------------------------------------------------------------------- batch create


def _batch(client: TestClient, lab: Lab, **body: object):
    return client.post("/api/v1/attributions/batch", json={"run_id": lab.run, **body})


def test_batch_over_chosen_subjects(lab: Lab) -> None:
    chosen = [lab.subjects["healthy"], lab.subjects["train-lesion"], lab.subjects["healthy"]]
    resp = _batch(lab.clients["researcher"], lab, subject_ids=chosen, params={"steps": 8})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["count"] == 2, "duplicates are dropped"
    assert [a["subject_id"] for a in body["data"]] == chosen[:2]
    assert {a["status"] for a in body["data"]} == {"queued"}
    assert all(a["method"] == "integrated_gradients" for a in body["data"])
    assert all(a["params"]["steps"] == 8 for a in body["data"])
    job_ids = [a["job_id"] for a in body["data"]]
    assert len(set(job_ids)) == 2, "one job per map"
    for job_id in job_ids:
        job = lab.clients["admin"].get(f"/api/v1/jobs/{job_id}").json()
        assert job["kind"] == "attribute" and job["status"] == "queued"


def test_batch_over_a_split(lab: Lab) -> None:
    resp = _batch(lab.clients["admin"], lab, split="test", method="saliency")
    assert resp.status_code == 201, resp.text
    got = sorted(a["subject_id"] for a in resp.json()["data"])
    assert got == sorted([lab.subjects["lesion"], lab.subjects["healthy"]])
    listed = (
        lab.clients["admin"]
        .get(
            "/api/v1/attributions",
            params={"run_id": lab.run, "method": "saliency", "split": "test"},
        )
        .json()
    )
    assert listed["count"] == 2
    train = lab.clients["admin"].get("/api/v1/attributions", params={"split": "train"}).json()
    assert train["count"] == 0
    other = lab.clients["admin"].get("/api/v1/attributions", params={"method": "occlusion"})
    assert other.json()["count"] == 0


# Each case: a body and why it is refused (one fixture for all: the fixture is the slow part).
INVALID_BATCHES = [
    ({}, "neither subject_ids nor split"),
    ({"split": "test", "subject_ids": ["lesion"]}, "both"),
    ({"subject_ids": []}, "an empty list"),
    ({"split": "holdout"}, "an unknown split"),
    ({"split": "val"}, "a split without subjects"),
    ({"subject_ids": ["lesion", "elsewhere"]}, "a subject of another dataset"),
    ({"subject_ids": [10**6]}, "a subject that does not exist"),
    ({"split": "test", "params": {"steps": 0}}, "bad parameters"),
    ({"split": "test", "method": "magic"}, "an unknown method"),
]


def test_batch_validation(lab: Lab) -> None:
    ids = {**lab.subjects, "elsewhere": lab.other_subject}
    for body, why in INVALID_BATCHES:
        if "subject_ids" in body:
            body = {**body, "subject_ids": [ids.get(s, s) for s in body["subject_ids"]]}
        resp = _batch(lab.clients["admin"], lab, **body)
        assert resp.status_code == 422, (why, resp.text)
        if why == "a subject of another dataset":
            detail = resp.json()["detail"]
            assert detail.endswith(f"used: {lab.other_subject}"), detail
    assert lab.clients["admin"].get("/api/v1/attributions").json()["count"] == 0, "all or none"


def test_batch_needs_a_trained_run(lab: Lab) -> None:
    from backend.core.db import session_scope
    from backend.models import Run

    with session_scope() as session:
        session.get(Run, lab.run).status = "running"
    resp = _batch(lab.clients["admin"], lab, split="test")
    assert resp.status_code == 409 and "has not finished training" in resp.json()["detail"]


def test_batch_permissions(lab: Lab) -> None:
    got = {role: _batch(c, lab, split="train").status_code for role, c in lab.clients.items()}
    assert got == {"admin": 201, "researcher": 201, "clinician": 403, "outsider": 404}


# --------------------------------------------------------------------------- display map


def _signed_map(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.standard_t(2, SHAPE) * 1e-3  # heavy tails: a few large values, many small
    data[0, 0, 0] = 0.0
    return data.astype(np.float32)


def _raw_header(gz: bytes) -> nib.Nifti1Header:
    return nib.Nifti1Header.from_fileobj(io.BytesIO(gzip.decompress(gz)))


def test_display_map_is_int8_within_half_a_step(lab: Lab, app_env: Path) -> None:
    full = _signed_map()
    attribution = _stored_map(lab, "lesion", full)
    resp = lab.clients["clinician"].get(f"/api/v1/attributions/{attribution}/display.nii.gz")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/gzip"
    assert resp.content[:2] == b"\x1f\x8b", "gzip"
    header = _raw_header(resp.content)
    assert header.get_data_dtype() == np.int8
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    assert inter == 0.0
    peak = float(np.abs(full).max())
    np.testing.assert_allclose(slope, peak / 127, rtol=1e-6)
    assert slope < 0.01 * peak, "one step stays under 1 % of the peak"
    img = nib.Nifti1Image.from_bytes(gzip.decompress(resp.content))
    codes = np.asarray(img.dataobj.get_unscaled())
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127
    decoded = img.get_fdata()
    assert decoded.shape == SHAPE
    # The bound stated in the docs: half a step, max|A| / 254 (float32 rounding aside).
    assert np.abs(decoded - full).max() <= slope / 2 * (1 + 1e-5)
    assert np.abs(decoded - full).max() > slope / 4, "the map really is quantised"
    # No voxel changes sign; a voxel beyond half a step keeps a non-zero code of its sign.
    assert (decoded * full >= 0).all()
    beyond = np.abs(full) > slope / 2 * (1 + 1e-5)
    assert (np.sign(decoded[beyond]) == np.sign(full[beyond])).all()
    np.testing.assert_allclose(img.affine, AFFINE)

    # Cached next to the full map; a second request serves the same bytes.
    maps_dir = app_env / "runs" / str(lab.run) / "maps"
    assert (maps_dir / f"{attribution}.display.nii.gz").read_bytes() == resp.content
    again = lab.clients["admin"].get(f"/api/v1/attributions/{attribution}/display.nii.gz")
    assert again.content == resp.content
    assert not [p for p in maps_dir.iterdir() if p.name.startswith(".")], "no temporary left"


def test_an_older_cached_display_map_is_rebuilt_as_int8(lab: Lab, app_env: Path) -> None:
    """A display map cached by an older version (int16 or float32) is replaced on request."""
    full = _signed_map()
    attribution = _stored_map(lab, "lesion", full)
    cached = app_env / "runs" / str(lab.run) / "maps" / f"{attribution}.display.nii.gz"
    for dtype in (np.int16, np.float32):
        old = nib.Nifti1Image(full.astype(dtype), AFFINE)
        old.set_data_dtype(dtype)
        cached.write_bytes(gzip.compress(old.to_bytes()))  # newer than the full map
        resp = lab.clients["admin"].get(f"/api/v1/attributions/{attribution}/display.nii.gz")
        assert resp.status_code == 200, resp.text
        assert _raw_header(resp.content).get_data_dtype() == np.int8, dtype
        assert _raw_header(cached.read_bytes()).get_data_dtype() == np.int8


def test_display_map_of_a_zero_map(lab: Lab) -> None:
    attribution = _stored_map(lab, "healthy", np.zeros(SHAPE, np.float32))
    resp = lab.clients["admin"].get(f"/api/v1/attributions/{attribution}/display.nii.gz")
    img = nib.Nifti1Image.from_bytes(gzip.decompress(resp.content))
    assert float(_raw_header(resp.content)["scl_slope"]) == 1.0
    assert not img.get_fdata().any()


def test_display_map_is_rebuilt_when_the_map_changes(lab: Lab, app_env: Path) -> None:
    import os

    from attrivue_core.io import save_nifti

    attribution = _stored_map(lab, "lesion", _signed_map(1))
    url = f"/api/v1/attributions/{attribution}/display.nii.gz"
    first = lab.clients["admin"].get(url).content
    full = app_env / "runs" / str(lab.run) / "maps" / f"{attribution}.nii.gz"
    save_nifti(full, _signed_map(2), AFFINE)  # the task ran again
    later = full.stat().st_mtime_ns + 10**9
    os.utime(full, ns=(later, later))
    second = lab.clients["admin"].get(url).content
    assert second != first
    decoded = nib.Nifti1Image.from_bytes(gzip.decompress(second)).get_fdata()
    assert np.abs(decoded - _signed_map(2)).max() <= float(_raw_header(second)["scl_slope"])


def test_maps_not_yet_computed_give_409(lab: Lab) -> None:
    created = _batch(lab.clients["admin"], lab, subject_ids=[lab.subjects["lesion"]]).json()
    pending = created["data"][0]["id"]
    for suffix in ("map.nii.gz", "display.nii.gz", "stats"):
        resp = lab.clients["admin"].get(f"/api/v1/attributions/{pending}/{suffix}")
        assert resp.status_code == 409 and "queued" in resp.json()["detail"], suffix


def test_display_and_stats_permissions(lab: Lab) -> None:
    attribution = _stored_map(lab, "lesion", _signed_map())
    for suffix in ("display.nii.gz", "stats"):
        url = f"/api/v1/attributions/{attribution}/{suffix}"
        got = {role: c.get(url).status_code for role, c in lab.clients.items()}
        assert got == {"admin": 200, "researcher": 200, "clinician": 200, "outsider": 404}


# --------------------------------------------------------------------------- statistics


def test_stats_of_a_hand_made_map_with_a_lesion(lab: Lab, app_env: Path) -> None:
    data = np.zeros(SHAPE, np.float32)
    data[LESION] = 3.0  # 8 lesion voxels: positive mass 24 inside
    data[10, 10, 10] = 8.0  # the maximum, outside the lesion: positive mass 8 outside
    data[12:14, 12:14, 12:14] = -1.0  # 8 voxels of healthy relevance
    attribution = _stored_map(lab, "lesion", data)
    resp = lab.clients["clinician"].get(f"/api/v1/attributions/{attribution}/stats")
    assert resp.status_code == 200, resp.text
    stats = resp.json()
    n = int(np.prod(SHAPE))
    assert stats["attribution_id"] == attribution and stats["label"] == 1
    assert stats["shape"] == list(SHAPE)
    assert (stats["min"], stats["max"]) == (-1.0, 8.0)
    assert (stats["positive_mass"], stats["negative_mass"]) == (32.0, -8.0)
    assert stats["mean_abs"] == pytest.approx(40 / n)
    assert (stats["positive_voxels"], stats["negative_voxels"]) == (9, 8)
    # Positive values [3] * 8 + [8], linear interpolation: p90 at index 7.2 -> 3 + 0.2 * 5.
    assert stats["positive_percentiles"] == pytest.approx(
        {"p50": 3.0, "p90": 4.0, "p95": 6.0, "p99": 7.6, "p99_9": 7.96}
    )
    lesion = stats["lesion"]
    assert lesion["lesion_voxels"] == 8
    assert lesion["lesion_mass"] == pytest.approx(24 / 32)
    # Top 5 % = 256 voxels, but only the 9 positive ones count: 8 hits.
    assert lesion["top_k_percent"] == 5.0
    assert lesion["dice_top_k"] == pytest.approx(2 * 8 / (9 + 8))
    # Each lesion voxel (3) beats every other voxel (0 or less) but the one at 8.
    assert lesion["voxel_auroc"] == pytest.approx((n - 8 - 1) / (n - 8))
    assert lesion["pointing_game"] is False
    assert stats["pathological_share"] is None

    cache = app_env / "runs" / str(lab.run) / "maps" / f"{attribution}.stats.json"
    assert cache.is_file(), "cached beside the map"
    assert lab.clients["admin"].get(f"/api/v1/attributions/{attribution}/stats").json() == stats


def test_stats_pointing_game_hit_and_healthy_relevance_in_the_lesion(lab: Lab) -> None:
    data = np.zeros(SHAPE, np.float32)
    data[4, 4, 4] = 2.0  # the maximum, in the lesion
    data[5, 5, 5] = -50.0  # strong healthy relevance in the lesion is no hit
    data[0, 0, 0] = 2.0  # a tie for the maximum after it in C order
    stats = lab.clients["admin"].get(
        f"/api/v1/attributions/{_stored_map(lab, 'lesion', data)}/stats"
    )
    lesion = stats.json()["lesion"]
    assert lesion["pointing_game"] is False, "ties go to the first voxel in C order: (0, 0, 0)"
    data[0, 0, 0] = 1.0
    lesion = (
        lab.clients["admin"]
        .get(f"/api/v1/attributions/{_stored_map(lab, 'lesion', data)}/stats")
        .json()["lesion"]
    )
    assert lesion["pointing_game"] is True
    assert lesion["lesion_mass"] == pytest.approx(2 / 3)


def test_stats_of_a_healthy_subject(lab: Lab) -> None:
    data = np.zeros(SHAPE, np.float32)
    data[1, 1, 1] = 1.0
    data[2, 2, 2] = -3.0
    stats = (
        lab.clients["admin"]
        .get(f"/api/v1/attributions/{_stored_map(lab, 'healthy', data)}/stats")
        .json()
    )
    assert stats["label"] == 0 and stats["lesion"] is None
    assert stats["pathological_share"] == pytest.approx(1 / 4)
    empty = np.zeros(SHAPE, np.float32)
    empty[3, 3, 3] = -1.0
    stats = (
        lab.clients["admin"]
        .get(f"/api/v1/attributions/{_stored_map(lab, 'healthy', empty)}/stats")
        .json()
    )
    assert stats["positive_percentiles"] is None and stats["pathological_share"] == 0.0


# --------------------------------------------------------------------------- against the engine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_metrics_agree_with_worker_metrics(seed: int) -> None:
    from backend.services import maps
    from worker.ml import metrics

    rng = np.random.default_rng(seed)
    # Rounded values give many ties, the case where the implementations could differ.
    data = np.round(rng.normal(0, 1, SHAPE), 1)
    mask = rng.random(SHAPE) < 0.05
    for percent in (1.0, 5.0, 50.0):
        assert maps.dice_top_k(data, mask, percent) == pytest.approx(
            metrics.dice_top_k(data, mask, percent)
        )
    assert maps.voxel_auroc(data, mask) == pytest.approx(metrics.voxel_auroc(data, mask))
    assert maps.lesion_mass(data, mask) == pytest.approx(metrics.lesion_mass(data, mask))
    assert maps.pointing_game(data, mask) == metrics.pointing_game(data, mask)
    assert maps.healthy_pathological_share(data) == pytest.approx(
        metrics.healthy_pathological_share(data)
    )


def test_backend_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        f"import os; os.environ['ATTRIVUE_DATA_DIR'] = {str(tmp_path)!r}\n"
        "import backend.main, backend.services.maps, backend.services.attributions\n"
        "import backend.api.routes.attributions\n"
        "backend.main.create_app()\n"
        "import sys; print('torch' in sys.modules, 'monai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


# IG to a requested accuracy: bodies refused with 422, and the words the detail must name.
INVALID_ACCURACY = [
    ({"target_delta": 0}, "greater than 0"),
    ({"target_delta": -0.01}, "greater than 0"),
    ({"target_delta": 1.5}, "less than 1"),
    ({"target_delta": "often"}, "target_delta"),
    ({"target_delta": 0.01, "max_points": 2}, "greater than or equal to 3"),
    ({"target_delta": 0.01, "max_points": 10_000}, "less than or equal to 513"),
    ({"target_delta": 0.01, "steps": 8}, "give it or steps, not both"),
    ({"target_delta": 0.01, "riemann_method": "riemann_middle"}, "riemann_method, not both"),
    ({"max_points": 33}, "give target_delta"),
]


def test_target_delta_validation_and_round_trip(lab: Lab) -> None:
    client = lab.clients["researcher"]
    subject = lab.subjects["lesion"]
    for params, words in INVALID_ACCURACY:
        resp = client.post(
            "/api/v1/attributions",
            json={"run_id": lab.run, "subject_id": subject, "params": params},
        )
        assert resp.status_code == 422, (params, resp.text)
        assert words in resp.json()["detail"], (params, resp.json()["detail"])
    resp = client.post(
        "/api/v1/attributions",
        json={
            "run_id": lab.run,
            "subject_id": subject,
            "method": "saliency",
            "params": {"target_delta": 0.01},
        },
    )
    assert resp.status_code == 422 and "does not apply to saliency" in resp.json()["detail"]
    resp = client.post(
        "/api/v1/attributions",
        json={
            "run_id": lab.run,
            "subject_id": subject,
            "params": {"target_delta": 0.01, "max_points": 33},
        },
    )
    assert resp.status_code == 201, resp.text
    stored = client.get(f"/api/v1/attributions/{resp.json()['id']}").json()
    assert stored["params"]["target_delta"] == 0.01
    assert stored["params"]["max_points"] == 33
