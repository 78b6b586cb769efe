"""Issue 21, import speed without loss: the import streams the voxel bytes into the stored
.nii.gz (and the computed brain mask's block means) without decoding them, so what is stored
must be what was sent, bit for bit, for every voxel type, byte order and scaling; and the brain
mask of a volume too large to hold whole is computed on a coarser grid and put back on the
image's grid.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.backend.test_uploads import upload_file
from tests.helpers import AFFINE, brain_volume

SHAPE = (13, 11, 9)  # odd sizes: no block or slab divides them


def _raw_voxels(dtype: str, rng: np.random.Generator) -> np.ndarray:
    kind = np.dtype(dtype)
    if kind.kind in "iu":
        info = np.iinfo(kind)
        return rng.integers(info.min, info.max, SHAPE, endpoint=True).astype(kind)
    values = rng.standard_normal(SHAPE) * 1000
    # Values a float32 or a rounding would change: -0.0, subnormals, 1/3, near the float32 limit.
    values.flat[:6] = [-0.0, 5e-324 if kind.itemsize == 8 else 1e-45, 1 / 3, -1 / 3, 1e38, -1e38]
    return values.astype(kind)


def _file(raw: np.ndarray, slope: float, inter: float, *, gz: bool) -> bytes:
    """A NIfTI-1 holding ``raw`` as is (its byte order too), scaled by ``slope``/``inter``."""
    header = nib.Nifti1Header(
        endianness=raw.dtype.byteorder if raw.dtype.byteorder in "<>" else None
    )
    header.set_data_dtype(raw.dtype)
    header.set_data_shape(raw.shape)
    header.set_qform(AFFINE, code=1)
    header.set_sform(AFFINE, code=1)
    header.set_xyzt_units("mm")
    header["vox_offset"] = 352
    header["scl_slope"], header["scl_inter"] = slope, inter
    header["descrip"] = b"Patient Doe 1970-01-01"
    data = header.binaryblock + bytes(4) + raw.tobytes(order="F")
    return gzip.compress(data, compresslevel=6) if gz else data


def _voxel_bytes(nifti: bytes) -> tuple[nib.Nifti1Image, bytes]:
    plain = gzip.decompress(nifti) if nifti[:2] == b"\x1f\x8b" else nifti
    img = nib.Nifti1Image.from_bytes(plain)
    offset = int(img.dataobj.offset)  # type: ignore[attr-defined]
    size = int(np.prod(img.shape)) * img.header.get_data_dtype().itemsize
    return img, plain[offset : offset + size]


CASES = [
    ("uint8", 1.0, 0.0),
    ("<i2", 0.001, 0.0),
    (">i2", 2.0, -1024.0),  # big-endian, slope and intercept
    ("<u2", 0.5, 10.0),
    ("<i4", 1.0, 0.0),
    ("<f4", 1.0, 0.0),
    (">f4", 1.5, -3.25),
    ("<f8", 1.0, 0.0),
    (">f8", 1.0, 0.0),
]


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_stored_voxels_equal_the_uploaded_ones_bit_for_bit(api: TestClient, gz: bool) -> None:
    """Through a chunked upload and an import: the stored file's voxel block is the sent one
    byte for byte (type, byte order, scaling kept), and reads back the same values."""
    project = int(api.get("/api/v1/projects").json()["data"][0]["id"])
    rng = np.random.default_rng(21)
    suffix = ".nii.gz" if gz else ".nii"
    sent: dict[str, tuple[bytes, float, float]] = {}
    rows = ["subject,image,label"]
    ids = []
    for n, (dtype, slope, inter) in enumerate(CASES):
        data = _file(_raw_voxels(dtype, rng), slope, inter, gz=gz)
        name = f"s{n}{suffix}"
        sent[f"s{n}"] = (data, slope, inter)
        rows.append(f"s{n},{name},0")
        ids.append(upload_file(api, project, name, data))
    ids.append(upload_file(api, project, "manifest.csv", ("\n".join(rows) + "\n").encode()))
    dataset = api.post("/api/v1/datasets", json={"name": f"roundtrip {suffix}"}).json()["id"]
    resp = api.post(f"/api/v1/datasets/{dataset}/imports", json={"upload_ids": ids})
    assert resp.status_code == 201, resp.text
    failures = []
    for subject in resp.json()["data"]:
        data, slope, inter = sent[subject["subject_key"]]
        stored = api.get(f"/api/v1/subjects/{subject['id']}/image.nii.gz")
        assert stored.status_code == 200, stored.text
        assert stored.content[:2] == b"\x1f\x8b"  # served as .nii.gz whatever was sent
        original, original_bytes = _voxel_bytes(data)
        copy, copy_bytes = _voxel_bytes(stored.content)
        what = f"{subject['subject_key']} ({original.header.get_data_dtype()})"
        if copy.header.get_data_dtype() != original.header.get_data_dtype():
            failures.append(f"{what}: stored as {copy.header.get_data_dtype()}")
        if copy_bytes != original_bytes:
            failures.append(f"{what}: the voxel bytes differ")
        scaling = (float(copy.dataobj.slope), float(copy.dataobj.inter))  # type: ignore[attr-defined]
        if scaling != (
            float(np.float32(slope)),
            float(np.float32(inter)),
        ):  # as the header holds them
            failures.append(f"{what}: scaling {scaling}")
        got, expected = copy.get_fdata(), original.get_fdata()
        if not np.array_equal(got.view(np.uint64), expected.view(np.uint64)):
            failures.append(f"{what}: the scaled values differ")
        if b"Doe" in gzip.decompress(stored.content)[:352]:
            failures.append(f"{what}: descrip kept")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- brain masks


def _naive_means(values: np.ndarray, f: int) -> np.ndarray:
    out = np.zeros([-(-n // f) for n in values.shape])
    for i, j, k in np.ndindex(*out.shape):
        out[i, j, k] = values[i * f : (i + 1) * f, j * f : (j + 1) * f, k * f : (k + 1) * f].mean()
    return out


@pytest.mark.parametrize(
    ("shape", "dtype", "limit"),
    [((13, 11, 9), ">i2", 60), ((16, 16, 16), "<f8", 600), ((9, 12, 8), "uint8", 5000)],
)
def test_block_means_match_the_means_of_the_scaled_voxels(
    shape: tuple[int, int, int], dtype: str, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fed the raw voxel block in uneven pieces, slab by slab, with blocks cut at the far
    edges: the same means as averaging the scaled volume; bytes missing are an error."""
    from backend.services import brainmasks

    monkeypatch.setattr(brainmasks, "MASK_GRID_VOXELS", limit)
    monkeypatch.setattr(brainmasks, "_SLAB_VOXELS", 400)
    rng = np.random.default_rng(3)
    raw = (rng.standard_normal(shape) * 20 + 60).astype(dtype)
    img = nib.Nifti1Image.from_bytes(_file(raw, 0.5, -7.0, gz=False))
    means = brainmasks.BlockMeans(img)
    assert means.factor == brainmasks.coarsening(shape, limit)
    assert (means.factor > 1) == (int(np.prod(shape)) > limit)
    block = raw.tobytes(order="F")
    for start in range(0, len(block), 77):
        means.feed(block[start : start + 77])
    expected = _naive_means(raw.astype(np.float64) * 0.5 - 7.0, means.factor)
    np.testing.assert_allclose(means.means(), expected, rtol=1e-6)

    short = brainmasks.BlockMeans(img)
    short.feed(block[:-1])
    with pytest.raises(OSError, match="ended early"):
        short.means()


def test_a_volume_over_the_bound_gets_its_mask_on_a_coarser_grid(
    api: TestClient, monkeypatch: pytest.MonkeyPatch, app_env: Path
) -> None:
    """Above ``MASK_GRID_VOXELS`` the mask is computed on f x f x f blocks: stored on the
    image's grid, constant on each block, still the ellipsoid; and the mask computed later from
    the stored image (a subject without one) is the same as the one made during the import."""
    from backend.services import brainmasks

    shape = (32, 40, 32)
    monkeypatch.setattr(brainmasks, "MASK_GRID_VOXELS", 16 * 20 * 16)  # factor 2
    image, _ = brain_volume(shape, seed=5)
    data = gzip.compress(nib.Nifti1Image(image, AFFINE).to_bytes())
    dataset = api.post("/api/v1/datasets", json={"name": "coarse masks"}).json()["id"]
    resp = api.post(
        f"/api/v1/datasets/{dataset}/subjects",
        data={"subject_key": "big", "label": "0"},
        files={"image": ("image.nii.gz", data)},
    )
    assert resp.status_code == 201, resp.text
    subject = resp.json()
    assert subject["brain_mask"] == "computed"
    got = api.get(f"/api/v1/subjects/{subject['id']}/brain.nii.gz")
    mask_img = nib.Nifti1Image.from_bytes(gzip.decompress(got.content))
    mask = np.asarray(mask_img.dataobj)
    assert mask.shape == shape and mask.dtype == np.uint8
    np.testing.assert_allclose(mask_img.affine, AFFINE)
    blocks = mask.reshape(16, 2, 20, 2, 16, 2)
    assert (blocks == blocks[:, :1, :, :1, :, :1]).all()  # one value per 2x2x2 block
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    truth = (grid**2).sum(0) < 0.8
    brain = mask.astype(bool)
    assert 2 * (brain & truth).sum() / (brain.sum() + truth.sum()) > 0.85

    folder = app_env / "datasets" / str(dataset) / "subjects" / str(subject["id"])
    again = folder / "again.nii.gz"
    brainmasks.write_computed_brain_mask(folder / "image.nii.gz", again)
    assert np.array_equal(np.asarray(nib.load(again).dataobj), mask)
