"""Issue 16, data integrity: voxel values survive every subject path, and voxel sizes that
cannot place a voxel in space are refused instead of being replaced by an invented affine.

The reference is what a reader such as nibabel sees in the original file (``get_fdata()``,
scaling applied); the stored file, downloaded through the API, must read back the same.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.helpers import AFFINE, brain_volume

SHAPE = (12, 14, 10)


def _scaled(slope: float, inter: float, raw: np.ndarray) -> bytes:
    """An int16 volume whose header scales the stored integers: value = raw * slope + inter."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape(raw.shape)
    header.set_qform(AFFINE, code=1)
    header.set_sform(AFFINE, code=1)
    header.set_xyzt_units("mm")
    header["vox_offset"] = 352
    header["scl_slope"], header["scl_inter"] = slope, inter
    voxels = raw.astype(header.get_data_dtype()).tobytes(order="F")
    return gzip.compress(header.binaryblock + bytes(4) + voxels, compresslevel=1)


def _volumes() -> dict[str, bytes]:
    rng = np.random.default_rng(16)
    image = brain_volume(SHAPE, seed=16)[0]
    raw = rng.integers(0, 1000, SHAPE)
    return {
        "float32": gzip.compress(nib.Nifti1Image(image, AFFINE).to_bytes()),
        "int16 slope 0.001": _scaled(0.001, 0.0, raw),
        "int16 slope 2 intercept -1024": _scaled(2.0, -1024.0, raw),
        "uint8": gzip.compress(
            nib.Nifti1Image(rng.integers(0, 256, SHAPE).astype(np.uint8), AFFINE).to_bytes()
        ),
    }


def _fdata(data: bytes) -> np.ndarray:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return nib.Nifti1Image.from_bytes(raw).get_fdata()


def _zipped(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _single(api: TestClient, dataset: int, key: str, data: bytes) -> int:
    resp = api.post(
        f"/api/v1/datasets/{dataset}/subjects",
        data={"subject_key": key, "label": "0"},
        files={"image": ("img.nii.gz", data)},
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _manifest(api: TestClient, dataset: int, key: str, data: bytes) -> int:
    manifest = f"subject,image,label\n{key},img.nii.gz,0\n".encode()
    resp = api.post(
        f"/api/v1/datasets/{dataset}/imports",
        files=[("files", ("img.nii.gz", data)), ("manifest", ("manifest.csv", manifest))],
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"][0]["id"])


def _zip(api: TestClient, dataset: int, key: str, data: bytes) -> int:
    archive = _zipped(
        {"img.nii.gz": data, "manifest.csv": f"subject,image,label\n{key},img.nii.gz,0\n".encode()}
    )
    resp = api.post(f"/api/v1/datasets/{dataset}/imports", files=[("files", ("a.zip", archive))])
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"][0]["id"])


def _bids(api: TestClient, dataset: int, key: str, data: bytes) -> int:
    sub = f"sub-{key.replace('-', '').replace('_', '')}"
    files = {
        "participants.tsv": f"participant_id\tgroup\n{sub}\tcontrol\n".encode(),
        f"{sub}/anat/{sub}_T1w.nii.gz": data,
    }
    resp = api.post(
        f"/api/v1/datasets/{dataset}/imports",
        files=[("files", (name, body)) for name, body in files.items()],
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"][0]["id"])


def _chunked(api: TestClient, dataset: int, key: str, data: bytes) -> int:
    project = api.get(f"/api/v1/datasets/{dataset}").json()["project_id"]
    ids = []
    manifest = f"subject,image,label\n{key},img.nii.gz,0\n".encode()
    for name, body in (("img.nii.gz", data), ("manifest.csv", manifest)):
        created = api.post(
            "/api/v1/uploads", json={"project_id": project, "filename": name, "size": len(body)}
        )
        assert created.status_code == 201, created.text
        upload = created.json()["id"]
        half = len(body) // 2
        for start, piece in ((0, body[:half]), (half, body[half:])):
            resp = api.put(f"/api/v1/uploads/{upload}?offset={start}", content=piece)
            assert resp.status_code == 200, resp.text
        ids.append(upload)
    resp = api.post(f"/api/v1/datasets/{dataset}/imports", json={"upload_ids": ids})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["data"][0]["id"])


PATHS: dict[str, Callable[[TestClient, int, str, bytes], int]] = {
    "single upload": _single,
    "manifest import": _manifest,
    "zip": _zip,
    "BIDS": _bids,
    "chunked": _chunked,
}


def test_item1_scaled_volumes_keep_their_values_on_every_path(api: TestClient) -> None:
    """Float, scaled int16 (slope 0.001; slope 2, intercept -1024) and uint8 volumes read back
    with the values nibabel sees in the original, through every way a subject is stored, both
    as downloaded and as the worker reads them to train and compute maps."""
    from attrivue_core.io import load_nifti
    from backend.core.db import session_scope
    from backend.models import Subject
    from backend.storage import get_storage

    failures = []
    for n, (kind, data) in enumerate(_volumes().items()):
        expected = _fdata(data)
        for m, (path, send) in enumerate(PATHS.items()):
            dataset = api.post("/api/v1/datasets", json={"name": f"d{n}-{m}"}).json()["id"]
            subject = send(api, dataset, f"s{n}x{m}", data)
            stored = api.get(f"/api/v1/subjects/{subject}/image.nii.gz")
            assert stored.status_code == 200, stored.text
            got = _fdata(stored.content)
            if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-6, atol=0):
                failures.append(
                    f"{kind} via {path}: max {got.max():g} stored, {expected.max():g} sent"
                )
            # What the worker trains on and explains (maps are computed from this read).
            with session_scope() as session:
                image_path = get_storage().absolute(session.get(Subject, subject).image_path)
            worker_sees, _ = load_nifti(image_path)
            if not np.allclose(worker_sees, expected, rtol=1e-6, atol=1e-6):
                failures.append(f"{kind} via {path}: the worker reads other values")
    assert not failures, "\n".join(failures)


def _zero_or_negative_voxel(size: float) -> bytes:
    """A NIfTI-1 with no sform and no qform: its affine comes from pixdim alone."""
    img = nib.Nifti1Image(brain_volume(SHAPE, seed=2)[0], None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    raw = bytearray(img.to_bytes())
    pixdim = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    pixdim[1:4] = (1.0, size, 1.0)
    raw[76:108] = pixdim.astype("<f4").tobytes()
    return gzip.compress(bytes(raw))


@pytest.mark.parametrize("size", [0.0, -2.0], ids=["zero", "negative"])
def test_item2_zero_or_negative_voxel_size_is_refused(
    api: TestClient, app_env: Path, size: float
) -> None:
    """A voxel size of 0 or below is refused with a message, on every subject path; nothing
    is stored (nibabel would silently put 1 mm, or the absolute value, in its place)."""
    data = _zero_or_negative_voxel(size)
    dataset = api.post("/api/v1/datasets", json={"name": "voxels"}).json()["id"]
    manifest = b"subject,image,label\ns1,img.nii.gz,0\n"
    answers = [
        api.post(
            f"/api/v1/datasets/{dataset}/subjects",
            data={"subject_key": "s1", "label": "0"},
            files={"image": ("img.nii.gz", data)},
        ),
        api.post(
            f"/api/v1/datasets/{dataset}/imports",
            files=[("files", ("img.nii.gz", data)), ("manifest", ("manifest.csv", manifest))],
        ),
    ]
    for resp in answers:
        assert resp.status_code == 422, resp.text
        assert "voxel size" in resp.text and f"{size:g}" in resp.text, resp.text
    assert api.get(f"/api/v1/datasets/{dataset}/subjects").json()["count"] == 0
    assert [p for p in (app_env / "datasets").rglob("*") if p.is_file()] == []
