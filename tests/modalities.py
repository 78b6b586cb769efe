"""A two-channel (T1 + FLAIR) dataset imported through the REST API, and NIfTI downloads:
shared by the worker test of issue 20 and the live end-to-end test of its viewer."""

from __future__ import annotations

import gzip

import httpx
import nibabel as nib
import numpy as np

from tests.helpers import AFFINE, brain_volume

SPLITS = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
# The manifest's image columns, in channel order; the subjects' channels are named after them.
CHANNELS = ["t1", "flair"]


def nifti_gz(data: np.ndarray) -> bytes:
    """``data`` as a gzipped NIfTI file on the tests' affine."""
    return gzip.compress(nib.Nifti1Image(data, AFFINE).to_bytes(), compresslevel=1)


def two_channel_import(
    api: httpx.Client, name: str = "t1+flair", *, project_id: int | None = None
) -> int:
    """A dataset whose subjects have a 'T1' (lesions faint) and a 'FLAIR' (lesions bright),
    one per entry of SPLITS, every second one with a lesion and its mask; returns its id.
    Without ``project_id`` the dataset goes to the user's only project."""
    body: dict = {"name": name}
    if project_id is not None:
        body["project_id"] = project_id
    resp = api.post("/api/v1/datasets", json=body)
    assert resp.status_code == 201, resp.text
    dataset_id = resp.json()["id"]
    rows = ["subject,image_t1,image_flair,mask,label,split"]
    files = []
    for i, split in enumerate(SPLITS):
        lesion = i % 2 == 1
        t1, mask = brain_volume(seed=i, lesion=lesion)
        flair = np.where(mask > 0, 600.0, 3.0 * t1).astype(np.float32)
        t1 = np.where(mask > 0, 110.0, t1).astype(np.float32)
        files += [
            ("files", (f"s{i}_t1.nii.gz", nifti_gz(t1))),
            ("files", (f"s{i}_fl.nii.gz", nifti_gz(flair))),
        ]
        if lesion:
            files.append(("files", (f"s{i}_m.nii.gz", nifti_gz(mask))))
        rows.append(
            f"s{i},s{i}_t1.nii.gz,s{i}_fl.nii.gz,{f's{i}_m.nii.gz' if lesion else ''},"
            f"{int(lesion)},{split}"
        )
    files.append(("manifest", ("manifest.csv", "\n".join(rows).encode())))
    resp = api.post(f"/api/v1/datasets/{dataset_id}/imports", files=files)
    assert resp.status_code == 201, resp.text
    return int(dataset_id)


def download_volume(api: httpx.Client, url: str) -> np.ndarray:
    """The voxels of the gzipped NIfTI at ``url``."""
    resp = api.get(url)
    assert resp.status_code == 200, (url, resp.text)
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(resp.content)).dataobj)
