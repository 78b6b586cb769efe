"""Tests for NIfTI reading, writing and validation."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from attrivue_core.io import (
    NiftiError,
    check_same_grid,
    load_image,
    load_nifti,
    save_nifti,
    validate_nifti,
)


@pytest.fixture
def affine() -> np.ndarray:
    matrix = np.diag([2.0, 2.5, 3.0, 1.0])
    matrix[:3, 3] = [-20.0, -30.0, -15.0]
    return matrix


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(10, 12, 8)).astype(np.float32)


def _write_raw(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write with plain nibabel, for shapes that save_nifti's callers never produce."""
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_round_trip_keeps_data_and_affine(tmp_path, volume, affine):
    path = tmp_path / "image.nii.gz"
    save_nifti(path, volume, affine)

    data, read_affine = load_nifti(path)

    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(read_affine, affine)
    header = nib.load(path).header
    assert int(header["qform_code"]) > 0 and int(header["sform_code"]) > 0
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-5)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, volume, affine):
    path = tmp_path / "sub" / "mask.nii.gz"
    save_nifti(path, volume > 0, affine)
    save_nifti(path, volume > 1, affine)  # overwrite in place

    assert [p.name for p in path.parent.iterdir()] == ["mask.nii.gz"]
    assert nib.load(path).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(load_nifti(path)[0], (volume > 1).astype(np.float32))


def test_save_with_explicit_dtype(tmp_path, volume, affine):
    path = tmp_path / "image.nii"
    save_nifti(path, volume * 100, affine, dtype=np.int16)

    info = validate_nifti(path)

    assert info.dtype == "int16"
    assert info.shape == volume.shape
    assert info.zooms == pytest.approx((2.0, 2.5, 3.0))


def test_validate_reports_shape_affine_dtype_zooms(tmp_path, volume, affine):
    path = tmp_path / "image.nii.gz"
    save_nifti(path, volume, affine)

    info = validate_nifti(path)

    assert info.shape == (10, 12, 8)
    np.testing.assert_allclose(info.affine, affine)
    assert info.dtype == "float32"
    assert info.voxel_volume_mm3 == pytest.approx(15.0)


def test_text_file_named_nii_gz_is_not_nifti(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_text("subject,label\nsub-001,1\n" * 40)

    with pytest.raises(NiftiError, match="not a NIfTI-1/NIfTI-2 file"):
        validate_nifti(path)


def test_gzipped_text_is_not_nifti(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(b"hello " * 200))

    with pytest.raises(NiftiError, match="not a NIfTI-1/NIfTI-2 file"):
        validate_nifti(path)


def test_empty_file_is_not_nifti(tmp_path):
    path = tmp_path / "x.nii"
    path.write_bytes(b"")

    with pytest.raises(NiftiError, match="not a NIfTI-1/NIfTI-2 file"):
        validate_nifti(path)


def test_truncated_gzip_is_corrupt(tmp_path, volume, affine):
    path = tmp_path / "image.nii.gz"
    save_nifti(path, volume, affine)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])

    with pytest.raises(NiftiError, match="corrupt or truncated data"):
        validate_nifti(path)
    with pytest.raises(NiftiError, match="corrupt or truncated data"):
        load_nifti(path)


def test_truncated_uncompressed_file_is_corrupt(tmp_path, volume, affine):
    path = tmp_path / "image.nii"
    save_nifti(path, volume, affine)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])

    with pytest.raises(NiftiError, match="corrupt or truncated data"):
        validate_nifti(path)


def test_uncompressed_content_named_nii_gz_is_refused_but_loadable(tmp_path, volume, affine):
    plain = tmp_path / "image.nii"
    save_nifti(plain, volume, affine)
    misnamed = tmp_path / "image.nii.gz"
    misnamed.write_bytes(plain.read_bytes())

    with pytest.raises(NiftiError, match="not gzip-compressed but named .nii.gz"):
        validate_nifti(misnamed)
    np.testing.assert_array_equal(load_nifti(misnamed)[0], volume)


def test_compressed_content_named_nii_is_refused(tmp_path, volume, affine):
    packed = tmp_path / "image.nii.gz"
    save_nifti(packed, volume, affine)
    misnamed = tmp_path / "image.nii"
    misnamed.write_bytes(packed.read_bytes())

    with pytest.raises(NiftiError, match="gzip-compressed but named .nii"):
        validate_nifti(misnamed)


def test_4d_with_several_volumes_is_refused(tmp_path, volume, affine):
    path = _write_raw(tmp_path / "bold.nii.gz", np.stack([volume] * 3, axis=-1), affine)

    with pytest.raises(NiftiError, match="4D image with 3 volumes; expected one 3D volume"):
        validate_nifti(path)
    with pytest.raises(NiftiError, match="4D image with 3 volumes"):
        load_nifti(path)


def test_4d_with_one_volume_is_accepted_as_3d(tmp_path, volume, affine):
    path = _write_raw(tmp_path / "one.nii.gz", volume[..., None], affine)

    assert validate_nifti(path).shape == volume.shape
    data, _ = load_nifti(path)
    assert data.shape == volume.shape
    np.testing.assert_array_equal(data, volume)


def test_2d_image_is_refused(tmp_path, volume, affine):
    path = _write_raw(tmp_path / "slice.nii.gz", volume[:, :, 0], affine)

    with pytest.raises(NiftiError, match="expected one 3D volume"):
        validate_nifti(path)


def test_nan_is_refused(tmp_path, volume, affine):
    volume[3, 4, 5] = np.nan
    path = tmp_path / "nan.nii.gz"
    save_nifti(path, volume, affine)

    with pytest.raises(NiftiError, match="contains NaN or Inf values"):
        validate_nifti(path)


def test_too_many_voxels_is_refused(tmp_path, volume, affine):
    path = tmp_path / "big.nii.gz"
    save_nifti(path, volume, affine)

    with pytest.raises(NiftiError, match="voxels; the limit is"):
        validate_nifti(path, max_voxels=volume.size - 1)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(NiftiError, match="no such file"):
        validate_nifti(tmp_path / "absent.nii.gz")


def test_check_same_grid_accepts_matching_mask(tmp_path, volume, affine):
    save_nifti(tmp_path / "image.nii.gz", volume, affine)
    save_nifti(tmp_path / "mask.nii.gz", volume > 0, affine + 1e-5)

    check_same_grid(
        validate_nifti(tmp_path / "image.nii.gz"), validate_nifti(tmp_path / "mask.nii.gz")
    )


def test_check_same_grid_refuses_other_shape(tmp_path, volume, affine):
    save_nifti(tmp_path / "image.nii.gz", volume, affine)
    save_nifti(tmp_path / "mask.nii.gz", volume[:9] > 0, affine)
    image = validate_nifti(tmp_path / "image.nii.gz")
    mask = validate_nifti(tmp_path / "mask.nii.gz")

    with pytest.raises(NiftiError, match=r"mask shape \(9, 12, 8\) differs from image shape"):
        check_same_grid(image, mask)


def test_check_same_grid_refuses_other_affine(tmp_path, volume, affine):
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    save_nifti(tmp_path / "image.nii.gz", volume, affine)
    save_nifti(tmp_path / "mask.nii.gz", volume > 0, shifted)

    with pytest.raises(NiftiError, match="mask affine differs from image affine"):
        check_same_grid(
            validate_nifti(tmp_path / "image.nii.gz"), validate_nifti(tmp_path / "mask.nii.gz")
        )


def test_save_refuses_other_suffix(tmp_path, volume, affine):
    with pytest.raises(ValueError, match=r"\.nii"):
        save_nifti(tmp_path / "image.npy", volume, affine)


def test_load_image_gives_a_volume_and_refuses_anything_else(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path = tmp_path / "v.nii.gz"
    save_nifti(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4), affine)
    image = load_image(path)
    np.testing.assert_array_equal(image.affine, affine)
    assert np.asarray(image.dataobj).shape == (2, 3, 4)
    surface = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(np.zeros(3, np.float32))])
    nib.save(surface, tmp_path / "s.gii")
    with pytest.raises(NiftiError, match="not a volume but a GiftiImage"):
        load_image(tmp_path / "s.gii")
