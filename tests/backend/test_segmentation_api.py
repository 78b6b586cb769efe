"""Segmentation runs and region maps through the API: what is refused, what is stored."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.helpers import brain_volume, write_nifti

SHAPE = (16, 20, 16)


def _subject(api: TestClient, dataset: int, key: str, label: int, mask: bool, tmp: Path) -> None:
    image, lesion = brain_volume(SHAPE, seed=len(key), lesion=bool(label))
    files = {"image": ("i.nii.gz", write_nifti(tmp / f"{key}-i.nii.gz", image).read_bytes())}
    if mask:
        files["mask"] = ("m.nii.gz", write_nifti(tmp / f"{key}-m.nii.gz", lesion).read_bytes())
    data = {"subject_key": key, "label": label, "split": "train"}
    resp = api.post(f"/api/v1/datasets/{dataset}/subjects", data=data, files=files)
    assert resp.status_code == 201, resp.text


def test_segmentation_run_needs_masks_unless_mixed_and_region_needs_segmentation(
    api: TestClient, tmp_path: Path
) -> None:
    project = api.get("/api/v1/projects").json()["data"][0]["id"]
    dataset = api.post("/api/v1/datasets", json={"name": "seg", "project_id": project}).json()["id"]
    _subject(api, dataset, "with-mask", 1, True, tmp_path)
    _subject(api, dataset, "no-mask", 1, False, tmp_path)
    _subject(api, dataset, "healthy", 0, False, tmp_path)
    seg = {"task": "segmentation", "grid": list(SHAPE)}

    refused = api.post("/api/v1/runs", json={"dataset_id": dataset, "name": "s", "config": seg})
    assert refused.status_code == 422 and "no-mask" in refused.text
    assert "with-mask" not in refused.text and "healthy" not in refused.text
    assert api.get("/api/v1/runs").json()["count"] == 0  # nothing half-stored

    mixed = {**seg, "seg_constraint": True}
    made = api.post("/api/v1/runs", json={"dataset_id": dataset, "name": "s", "config": mixed})
    assert made.status_code == 201, made.text
    assert made.json()["config"]["network"] == "unet"
    bad = api.post(
        "/api/v1/runs",
        json={"dataset_id": dataset, "name": "c", "config": {"network": "unet"}},
    )
    assert bad.status_code == 422 and "needs a network" in bad.text

    classifier = api.post("/api/v1/runs", json={"dataset_id": dataset, "name": "c"}).json()
    subject = api.get(f"/api/v1/datasets/{dataset}/subjects").json()["data"][0]["id"]
    region = api.post(
        "/api/v1/attributions",
        json={"run_id": classifier["id"], "subject_id": subject, "region": {"kind": "whole"}},
    )
    assert region.status_code == 422 and "segmentation runs" in region.text
    spec = api.post(
        "/api/v1/attributions",
        json={"run_id": made.json()["id"], "subject_id": subject, "region": {"kind": "point"}},
    )
    assert spec.status_code == 422 and "mm" in spec.text
    # A valid region on an untrained segmentation run: 409, not trained yet.
    box = {"kind": "box", "mm_min": [0, 0, 0], "mm_max": [10, 10, 10]}
    early = api.post(
        "/api/v1/attributions",
        json={"run_id": made.json()["id"], "subject_id": subject, "region": box},
    )
    assert early.status_code == 409, early.text
