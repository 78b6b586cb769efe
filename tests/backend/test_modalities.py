"""Several modalities per subject (issue 20): the manifest's image columns and BIDS's
``modalities`` name them, the dataset fixes their order, a modality off the first one's grid
is refused (nothing stored) unless ``resample`` is asked for."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.backend.test_uploads import (
    assert_nothing_stored,
    files_under,
    nifti,
    post_import,
    table,
)
from tests.helpers import AFFINE, brain_volume


@pytest.fixture
def dataset_id(api: TestClient) -> int:
    resp = api.post("/api/v1/datasets", json={"name": "two channels"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def two_channel_files(n: int = 2) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        t1, _ = brain_volume(seed=i)
        files[f"s{i}_t1.nii.gz"] = nifti(t1, descrip="Jane Doe")
        files[f"s{i}_flair.nii.gz"] = nifti(t1 * 2 + 7, descrip="Jane Doe")
    return files


def manifest(n: int = 2, columns: tuple[str, str] = ("image_t1", "image_flair")) -> bytes:
    rows = [["subject", columns[0], columns[1], "label"]]
    rows += [[f"s{i}", f"s{i}_t1.nii.gz", f"s{i}_flair.nii.gz", str(i % 2)] for i in range(n)]
    return table(rows)


def download(api: TestClient, url: str) -> np.ndarray:
    resp = api.get(url)
    assert resp.status_code == 200, resp.text
    img = nib.Nifti1Image.from_bytes(gzip.decompress(resp.content))
    return np.asarray(img.dataobj, dtype=np.float32)


def test_manifest_with_two_modalities_fixes_the_channel_order(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    resp = post_import(api, dataset_id, two_channel_files(), ("manifest.csv", manifest()))
    assert resp.status_code == 201, resp.text
    subjects = resp.json()["data"]
    assert [s["channels"] for s in subjects] == [["t1", "flair"]] * 2
    assert api.get(f"/api/v1/datasets/{dataset_id}").json()["modalities"] == ["t1", "flair"]
    sid = subjects[0]["id"]
    t1 = download(api, f"/api/v1/subjects/{sid}/channels/0.nii.gz")
    flair = download(api, f"/api/v1/subjects/{sid}/channels/1.nii.gz")
    np.testing.assert_allclose(flair, t1 * 2 + 7, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(download(api, f"/api/v1/subjects/{sid}/image.nii.gz"), t1)
    assert api.get(f"/api/v1/subjects/{sid}/channels/2.nii.gz").status_code == 404
    stored = b"".join(gzip.decompress(p.read_bytes()) for p in files_under(app_env / "datasets"))
    assert b"Jane Doe" not in stored

    # The order is the dataset's: an import that swaps the columns, or gives one image, is
    # refused whole.
    more = {k.replace("s", "t", 1): v for k, v in two_channel_files(1).items()}
    swapped = table(
        [
            ["subject", "image_flair", "image_t1", "label"],
            ["t0", "t0_flair.nii.gz", "t0_t1.nii.gz", "0"],
        ]
    )
    resp = post_import(api, dataset_id, more, ("manifest.csv", swapped))
    assert resp.status_code == 422
    assert "has the channels t1, flair" in resp.json()["detail"]
    single = table([["subject", "image", "label"], ["t0", "t0_t1.nii.gz", "0"]])
    resp = post_import(api, dataset_id, more, ("manifest.csv", single))
    assert resp.status_code == 422 and "gives one image" in resp.json()["detail"]
    # Nor can one subject be uploaded alone into it.
    image = nifti(brain_volume(seed=9)[0])
    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/subjects",
        data={"subject_key": "alone", "label": "0"},
        files={"image": ("alone.nii.gz", image)},
    )
    assert resp.status_code == 422 and "several modalities" in resp.text
    assert api.get(f"/api/v1/datasets/{dataset_id}/subjects").json()["count"] == 2


def test_a_modality_off_the_grid_is_refused_unless_resampled(
    api: TestClient, dataset_id: int, app_env: Path
) -> None:
    files = two_channel_files()
    # s1's FLAIR: half the resolution (8x10x8 voxels of twice the size), same field of view.
    t1, _ = brain_volume(seed=1)
    coarse = AFFINE.copy()
    coarse[:3, :3] *= 2
    coarse[:3, 3] += np.diag(AFFINE)[:3] / 2
    files["s1_flair.nii.gz"] = nifti(t1[::2, ::2, ::2], affine=coarse)
    resp = post_import(api, dataset_id, files, ("manifest.csv", manifest()))
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["file"] == "s1_flair.nii.gz" and error["row"] == 3
    assert "subject 's1'" in error["problem"] and "modality 'flair'" in error["problem"]
    assert "resample" in error["problem"]
    assert_nothing_stored(api, dataset_id, app_env)
    assert api.get(f"/api/v1/datasets/{dataset_id}").json()["modalities"] is None

    resp = api.post(
        f"/api/v1/datasets/{dataset_id}/imports?resample=true",
        files=[
            *[("files", (n, d)) for n, d in files.items()],
            ("manifest", ("manifest.csv", manifest())),
        ],
    )
    assert resp.status_code == 201, resp.text
    sid = next(s["id"] for s in resp.json()["data"] if s["subject_key"] == "s1")
    flair = download(api, f"/api/v1/subjects/{sid}/channels/1.nii.gz")
    assert flair.shape == t1.shape  # on channel 0's grid
    inside = (t1 > 50)[2:-2, 2:-2, 2:-2]
    assert float(flair[2:-2, 2:-2, 2:-2][inside].mean()) > 60  # the brain, not zeros
    assert files_under(app_env / "tmp") == []


def test_bids_modalities_stack_as_channels(api: TestClient, dataset_id: int) -> None:
    tree = {
        "participants.tsv": table(
            [["participant_id", "group"], ["sub-01", "control"], ["sub-02", "patient"]], "\t"
        )
    }
    for i, key in enumerate(("sub-01", "sub-02")):
        image, _ = brain_volume(seed=i)
        tree[f"{key}/anat/{key}_T1w.nii.gz"] = nifti(image)
        tree[f"{key}/anat/{key}_FLAIR.nii.gz"] = nifti(image + 1)
    parts = [("files", (n, d)) for n, d in tree.items()]
    missing = dict(tree)
    del missing["sub-02/anat/sub-02_FLAIR.nii.gz"]
    url = f"/api/v1/datasets/{dataset_id}/imports?modalities=FLAIR&modalities=T1w"
    resp = api.post(url, files=[("files", (n, d)) for n, d in missing.items()])
    assert resp.status_code == 422 and "no FLAIR image found for sub-02" in resp.text
    resp = api.post(url, files=parts)
    assert resp.status_code == 201, resp.text
    assert [s["channels"] for s in resp.json()["data"]] == [["FLAIR", "T1w"]] * 2
    sid = resp.json()["data"][0]["id"]
    flair = download(api, f"/api/v1/subjects/{sid}/channels/0.nii.gz")
    t1 = download(api, f"/api/v1/subjects/{sid}/channels/1.nii.gz")
    np.testing.assert_allclose(flair, t1 + 1, rtol=1e-5)
