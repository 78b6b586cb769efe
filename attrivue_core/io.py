"""Reading, writing and validating NIfTI volumes.

Uploads arrive from outside, so validation never trusts the file name: the format is decided
from the bytes (gzip or not, NIfTI-1 or NIfTI-2 magic), and the whole voxel array is read so
that a truncated file is caught here rather than halfway through a training run.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import nibabel as nib
import numpy as np
from isal import igzip
from nibabel.fileholders import FileHolder
from nibabel.spatialimages import SpatialImage

__all__ = [
    "NiftiError",
    "NiftiInfo",
    "check_same_grid",
    "load_image",
    "load_nifti",
    "open_decompressed",
    "save_nifti",
    "validate_nifti",
]

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_SINGLE = b"n+1\x00"
_NIFTI1_PAIR = b"ni1\x00"
_NIFTI2_SINGLE = b"n+2\x00\r\n\x1a\n"
_NIFTI2_HEADER_BYTES = 540
# Errors that nibabel, gzip and zlib raise on damaged content.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error)
# Validation reads the voxels slab by slab so a large upload never needs a full float copy.
_SLAB_VOXELS = 1024 * 1024  # bounds validation memory: about 8 MiB of float64 at a time


class NiftiError(ValueError):
    """A file is not a usable single 3D NIfTI volume; the message is meant for humans."""


@dataclass(frozen=True, eq=False)
class NiftiInfo:
    """What validation learnt about a NIfTI volume.

    Attributes:
        shape: Voxel counts along the three axes (a single trailing volume axis is dropped).
        affine: The 4x4 voxel-to-world affine in millimetres (read-only array).
        dtype: The on-disk data type, e.g. ``"float32"`` or ``"uint8"``.
        zooms: Voxel sizes along the three axes in millimetres.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    dtype: str
    zooms: tuple[float, float, float]

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in cubic millimetres."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))


def load_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume as float32 data and its affine.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file holding one 3D volume (a 4D image with a single
            volume is accepted and squeezed to 3D).

    Returns:
        ``(data, affine)``: float32 array of shape ``(x, y, z)`` with scaling applied, and the
        4x4 float64 affine.

    Raises:
        NiftiError: The file is not NIfTI, is damaged, or does not hold one 3D volume.
    """
    with _open_image(Path(path)) as img:
        shape = _spatial_shape(img.shape)
        try:
            data = img.get_fdata(dtype=np.float32, caching="unchanged")
        except _READ_ERRORS as exc:
            raise _damaged(exc) from None
        affine = _checked_affine(img)
    return data.reshape(shape), affine


def load_image(path: str | os.PathLike[str]) -> SpatialImage:
    """``nib.load`` of a volume, typed: the header now, the voxels (``dataobj``) on demand.

    For files the platform wrote or checked already; an upload goes through ``validate_nifti``.

    Raises:
        NiftiError: nibabel reads the file as something other than a spatial image.
    """
    img = nib.load(os.fspath(path))
    if not isinstance(img, SpatialImage):
        raise NiftiError(f"{Path(path).name} is not a volume but a {type(img).__name__}")
    return img


def save_nifti(
    path: str | os.PathLike[str],
    data: np.ndarray,
    affine: np.ndarray,
    *,
    dtype: np.dtype | type | str | None = None,
) -> None:
    """Write a volume atomically as NIfTI-1 (gzip-compressed when the name ends in .gz).

    The file is written next to its destination, flushed to disk and renamed into place, so
    a reader never sees half a file and a crash never leaves one behind.

    Args:
        path: Destination, ending in ``.nii.gz`` or ``.nii``.
        data: Voxel array.
        affine: 4x4 voxel-to-world affine in millimetres; stored as both qform and sform
            (code 1, scanner).
        dtype: On-disk type; defaults to the array's type (bool is stored as uint8).
    """
    path = Path(path)
    suffix = _nifti_suffix(path)
    array = np.asarray(data)
    array = array.astype(_storage_dtype(array, dtype), copy=False)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(array.dtype)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    _write_atomically(img, path, suffix)


def open_decompressed(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file for reading its bytes, decompressed if it is gzip (decided by its first
    bytes, not its name). For sequential reads of files the platform validated or wrote: the
    gzip is inflated by ISA-L (``isal.igzip``), several times faster than the ``gzip`` module."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    return cast(BinaryIO, igzip.open(path, "rb")) if compressed else open(path, "rb")


def validate_nifti(path: str | os.PathLike[str], *, max_voxels: int = 512**3) -> NiftiInfo:
    """Check that a file holds one finite 3D NIfTI volume, reading every voxel.

    Args:
        path: The file to check.
        max_voxels: Largest accepted number of voxels.

    Returns:
        The volume's shape, affine, on-disk dtype and voxel sizes.

    Raises:
        NiftiError: With a message naming the problem: not NIfTI, corrupt or truncated data,
            compression that contradicts the name (nibabel and MONAI, which later read the
            file, trust the name), not a single 3D volume, too many voxels, or NaN/Inf values.
    """
    path = Path(path)
    with _open_image(path, require_matching_suffix=True) as img:
        shape = _spatial_shape(img.shape)
        n_voxels = int(np.prod(shape, dtype=np.int64))
        if n_voxels > max_voxels:
            raise NiftiError(f"image has {n_voxels:,} voxels; the limit is {max_voxels:,}")
        affine = _checked_affine(img)
        _check_voxels(img, shape)
        dtype = str(img.header.get_data_dtype())
        x, y, z = (float(v) for v in img.header.get_zooms()[:3])
    affine.flags.writeable = False
    return NiftiInfo(shape=shape, affine=affine, dtype=dtype, zooms=(x, y, z))


def check_same_grid(image_info: NiftiInfo, mask_info: NiftiInfo, *, atol: float = 1e-3) -> None:
    """Check that a mask lies on exactly the voxel grid of its image.

    Args:
        image_info: Validation result of the image.
        mask_info: Validation result of the mask.
        atol: Largest accepted absolute difference between affine entries (millimetres).

    Raises:
        NiftiError: The shapes or the affines differ.
    """
    if tuple(mask_info.shape) != tuple(image_info.shape):
        raise NiftiError(
            f"mask shape {tuple(mask_info.shape)} differs from image shape "
            f"{tuple(image_info.shape)}"
        )
    diff = float(np.max(np.abs(np.asarray(mask_info.affine) - np.asarray(image_info.affine))))
    if not diff <= atol:
        raise NiftiError(
            f"mask affine differs from image affine (largest difference {diff:.4g} mm, "
            f"tolerance {atol:g} mm)"
        )


# --- reading ---------------------------------------------------------------------------------


@contextmanager
def _open_image(path: Path, *, require_matching_suffix: bool = False) -> Iterator[nib.Nifti1Image]:
    """Open a NIfTI image whose voxels stay readable until the context ends.

    The compression and the NIfTI version come from the content, not the name, so that a
    ``.nii.gz`` holding plain bytes gets a precise message instead of a gzip traceback.

    Args:
        path: The file.
        require_matching_suffix: The strict checks of uploads: refuse a ``.nii``/``.nii.gz``
            name whose compression contradicts the content, and voxel sizes that nibabel
            would silently replace (``_check_voxel_sizes``).
    """
    if not path.is_file():
        raise NiftiError(f"no such file: {path.name}")
    compressed, header_bytes = _peek(path)
    image_class = _image_class(header_bytes, compressed)
    if require_matching_suffix:
        _check_suffix(path, compressed)
        _check_voxel_sizes(image_class, header_bytes)
    opener = gzip.open if compressed else open
    with opener(path, "rb") as fileobj:
        holder = FileHolder(filename=str(path), fileobj=fileobj)
        try:
            img = image_class.from_file_map({"header": holder, "image": holder})
        except _READ_ERRORS + (nib.filebasedimages.ImageFileError,) as exc:
            raise NiftiError(f"invalid NIfTI header: {exc}") from None
        yield img


def _peek(path: Path) -> tuple[bool, bytes]:
    """Return whether the file is gzip-compressed, and its first (decompressed) header bytes."""
    if path.stat().st_size == 0:
        raise NiftiError("not a NIfTI-1/NIfTI-2 file (the file is empty)")
    with path.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return False, raw.read(_NIFTI2_HEADER_BYTES)
    try:
        with gzip.open(path, "rb") as stream:
            return True, stream.read(_NIFTI2_HEADER_BYTES)
    except _READ_ERRORS as exc:
        raise _damaged(exc) from None


def _damaged(exc: BaseException) -> NiftiError:
    """Build the error for unreadable content, on one line whatever the library wrote."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return NiftiError(f"corrupt or truncated data: {detail}")


def _image_class(header: bytes, compressed: bool) -> type[nib.Nifti1Image]:
    """Pick the nibabel class from the header's size field and magic string."""
    sizes = {int.from_bytes(header[:4], order) for order in ("little", "big")}
    if 348 in sizes and header[344:348] == _NIFTI1_SINGLE:
        return nib.Nifti1Image
    if 540 in sizes and header[4:12] == _NIFTI2_SINGLE:
        return nib.Nifti2Image
    if 348 in sizes and header[344:348] == _NIFTI1_PAIR:
        raise NiftiError(
            "NIfTI-1 header/image pair (.hdr/.img) is not supported; "
            "convert it to a single .nii or .nii.gz file"
        )
    hint = "gzip content without a NIfTI header" if compressed else "no NIfTI header found"
    raise NiftiError(f"not a NIfTI-1/NIfTI-2 file ({hint})")


def _check_voxel_sizes(image_class: type[nib.Nifti1Image], header_bytes: bytes) -> None:
    """Refuse voxel sizes (``pixdim[1:4]``) that are zero, negative or not finite.

    nibabel "fixes" such a header on loading (zero becomes 1 mm, a negative size its
    absolute value), and the affine built from it is an invented orientation and scale that
    would be stored without a word. The raw header is read here, before that repair.
    """
    size = image_class.header_class.sizeof_hdr
    endian = "<" if int.from_bytes(header_bytes[:4], "little") == size else ">"
    try:
        raw = image_class.header_class(header_bytes[:size], endianness=endian, check=False)
        pixdim = [float(v) for v in raw["pixdim"][1:4]]
    except (ValueError, TypeError):
        return  # the loader names the damaged header
    for axis, value in zip("xyz", pixdim, strict=True):
        if not np.isfinite(value) or value <= 0:
            raise NiftiError(
                f"invalid voxel size: {value:g} mm along {axis} (pixdim); voxel sizes must be "
                "positive: fix the header (pixdim) of the file"
            )


def _check_suffix(path: Path, compressed: bool) -> None:
    """Refuse a name that promises other compression than the content has."""
    name = path.name.lower()
    if compressed and name.endswith(".nii"):
        raise NiftiError("the file is gzip-compressed but named .nii; name it .nii.gz")
    if not compressed and name.endswith(".nii.gz"):
        raise NiftiError("the file is not gzip-compressed but named .nii.gz; name it .nii")


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return the 3D shape of a single-volume image, or explain why it is not one."""
    if any(n == 0 for n in shape):
        raise NiftiError(f"image is empty (shape {tuple(shape)})")
    if len(shape) < 3:
        raise NiftiError(f"{len(shape)}D image of shape {tuple(shape)}; expected one 3D volume")
    extra = shape[3:]
    if len(shape) == 4 and shape[3] != 1:
        raise NiftiError(f"4D image with {shape[3]} volumes; expected one 3D volume")
    if any(n != 1 for n in extra):
        raise NiftiError(f"{len(shape)}D image of shape {tuple(shape)}; expected one 3D volume")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _checked_affine(img: nib.Nifti1Image) -> np.ndarray:
    """Return the image affine, refusing ones that cannot map voxels to millimetres."""
    affine = np.array(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError("invalid affine: not finite or not invertible (check pixdim and sform)")
    return affine


def _check_voxels(img: nib.Nifti1Image, shape: tuple[int, int, int]) -> None:
    """Read every voxel, slab by slab along the last axis, and check that all are finite."""
    dtype = img.header.get_data_dtype()
    if dtype.kind not in "biuf" or dtype.fields is not None:
        # Complex or RGB voxels would silently lose a part when read as intensities.
        raise NiftiError(f"voxel type {dtype} is not supported: use an integer or float type")
    per_slice = shape[0] * shape[1]
    step = max(1, _SLAB_VOXELS // per_slice)
    for start in range(0, shape[2], step):
        try:
            slab = np.asarray(img.dataobj[:, :, start : start + step])
        except _READ_ERRORS as exc:
            raise _damaged(exc) from None
        # Integers without scaling are finite as read; floats (and scaled integers) must also
        # stay finite as float32, the type the worker reads them in.
        if slab.dtype.kind == "f" and not np.isfinite(slab.astype(np.float32, copy=False)).all():
            raise NiftiError("contains NaN or Inf values")


# --- writing ---------------------------------------------------------------------------------


def _nifti_suffix(path: Path) -> str:
    """Return ``.nii.gz`` or ``.nii``; nibabel picks the compression from this suffix."""
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path.name}: a NIfTI file name must end in .nii or .nii.gz")


def _storage_dtype(array: np.ndarray, dtype: np.dtype | type | str | None) -> np.dtype:
    """Return the on-disk type, mapping types NIfTI cannot store to ones it can."""
    if dtype is not None:
        return np.dtype(dtype)
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.dtype == np.int64:
        # nibabel refuses int64 without an explicit choice; int32 is what readers expect.
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError("int64 values outside the int32 range; pass dtype explicitly")
        return np.dtype(np.int32)
    return array.dtype


def _write_atomically(img: nib.Nifti1Image, path: Path, suffix: str) -> None:
    """Save to a temporary sibling, fsync it, then rename it over the destination."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        nib.save(img, tmp)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        # mkstemp creates 0600 files; other services (web server, viewers) must read them.
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; not every platform lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
