"""A corpus of hostile and unusual files, generated on the fly (issue 16).

Volumes are built from a voxel array, so that one case serves as a subject image (intensities)
and as a review's drawn correction (labels 0, 1, 2) on the same grid. Each case says whether
a correct server accepts it (and must keep the values a reader sees: ``get_fdata()``) or
refuses it (and must name the problem: ``refusal``, a regular expression).

Archives are whole zip files holding a valid manifest import, damaged in one way each.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import nibabel as nib
import numpy as np

SHAPE = (12, 14, 10)
AFFINE = np.array(
    [[-4.0, 0, 0, 90], [0, 4.0, 0, -126], [0, 0, 4.0, -72], [0, 0, 0, 1]], dtype=float
)

__all__ = ["AFFINE", "ARCHIVES", "SHAPE", "VOLUMES", "Archive", "Volume", "fdata"]


@dataclass(frozen=True)
class Volume:
    """A NIfTI file made from an array; ``refusal`` None: a valid file the server stores."""

    name: str
    build: Callable[[np.ndarray], bytes]
    refusal: str | None = None
    text: bytes = b""  # identifying text the file carries, which must not be stored


@dataclass(frozen=True)
class Archive:
    """A zip import damaged in one way; always refused with ``refusal``."""

    name: str
    build: Callable[[bytes], bytes]  # from a valid zip's bytes
    refusal: str


def fdata(data: bytes) -> np.ndarray:
    """The voxel values a reader sees (scaling applied), NIfTI-1 or NIfTI-2, gzip or not."""
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    size = int.from_bytes(raw[:4], "little")
    cls = nib.Nifti2Image if size == 540 or raw[4:8] == b"n+2\x00" else nib.Nifti1Image
    return cls.from_bytes(raw).get_fdata()


# --------------------------------------------------------------------------- builders


def _header(cls: type[nib.Nifti1Header], dtype: type, shape: tuple[int, ...]) -> nib.Nifti1Header:
    header = cls()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(AFFINE, code=1)
    header.set_sform(AFFINE, code=1)
    header.set_xyzt_units("mm")
    return header


def _raw_file(header: nib.Nifti1Header, voxels: bytes, extensions: bytes = b"") -> bytes:
    """Header, extension flag (and extensions), then the voxels, with ``vox_offset`` set."""
    flag = b"\x01\x00\x00\x00" if extensions else bytes(4)
    offset = header.sizeof_hdr + len(flag) + len(extensions)
    header["vox_offset"] = offset
    return header.binaryblock + flag + extensions + voxels


def _scaled(slope: float, inter: float) -> Callable[[np.ndarray], bytes]:
    """int16 voxels with scl_slope/scl_inter: value = raw * slope + inter."""

    def build(data: np.ndarray) -> bytes:
        header = _header(nib.Nifti1Header, np.int16, data.shape)
        header["scl_slope"], header["scl_inter"] = slope, inter
        raw = np.clip(np.rint((data - inter) / slope), -32768, 32767).astype("<i2")
        return gzip.compress(_raw_file(header, raw.tobytes(order="F")), compresslevel=1)

    return build


def _uint8_scaled(data: np.ndarray) -> bytes:
    header = _header(nib.Nifti1Header, np.uint8, data.shape)
    header["scl_slope"], header["scl_inter"] = 0.5, 0.0
    raw = np.clip(np.rint(data / 0.5), 0, 255).astype(np.uint8)
    return _raw_file(header, raw.tobytes(order="F"))  # uncompressed: sent as .nii


def _voxel_size(size: float, cls: type[nib.Nifti1Header] = nib.Nifti1Header) -> Callable:
    """A header whose affine comes from pixdim alone (no qform, no sform), one size bad."""

    def build(data: np.ndarray) -> bytes:
        header = _header(cls, np.float32, data.shape)
        header.set_qform(None, code=0)
        header.set_sform(None, code=0)
        pixdim = header["pixdim"].copy()
        pixdim[1:4] = (4.0, size, 4.0)
        header["pixdim"] = pixdim
        voxels = data.astype(header.get_data_dtype()).tobytes(order="F")
        return gzip.compress(_raw_file(header, voxels), compresslevel=1)

    return build


def _nifti2(data: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti2Image(data.astype(np.float32), AFFINE).to_bytes())


def _huge_dims(cls: type[nib.Nifti1Header], side: int) -> Callable[[np.ndarray], bytes]:
    """A header that declares side^3 voxels over the few bytes of a small volume."""

    def build(data: np.ndarray) -> bytes:
        header = _header(cls, np.float32, data.shape)
        voxels = data.astype(header.get_data_dtype()).tobytes(order="F")
        dim = header["dim"].copy()
        dim[1:4] = side
        header["dim"] = dim
        return gzip.compress(_raw_file(header, voxels), compresslevel=1)

    return build


TEXT = b"patient: Jane Doe, born 1970-01-01, MRN 0042"


def _with_text(cls: type[nib.Nifti1Image]) -> Callable[[np.ndarray], bytes]:
    """Free-text header fields and a comment extension carrying a name."""

    def build(data: np.ndarray) -> bytes:
        img = cls(data.astype(np.float32), AFFINE)
        img.header["descrip"] = b"Jane Doe 1970-01-01"
        img.header["aux_file"] = b"Jane.txt"
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, TEXT))
        return gzip.compress(img.to_bytes())

    return build


def _truncated_gzip(data: np.ndarray) -> bytes:
    whole = gzip.compress(nib.Nifti1Image(data.astype(np.float32), AFFINE).to_bytes())
    return whole[: len(whole) * 2 // 3]


def _truncated_voxels(data: np.ndarray) -> bytes:
    raw = nib.Nifti1Image(data.astype(np.float32), AFFINE).to_bytes()
    return gzip.compress(raw[: len(raw) // 2])


def _lying_offset(data: np.ndarray) -> bytes:
    """vox_offset points past the end of the file."""
    header = _header(nib.Nifti1Header, np.float32, data.shape)
    raw = bytearray(_raw_file(header, data.astype(np.float32).tobytes(order="F")))
    struct.pack_into("<f", raw, 108, float(len(raw) * 4))
    return gzip.compress(bytes(raw))


VOLUMES = [
    Volume("int16, scl_slope 0.001", _scaled(0.001, 0.0)),
    Volume("int16, scl_slope 2, scl_inter -1024", _scaled(2.0, -1024.0)),
    Volume("uint8, scl_slope 0.5, uncompressed", _uint8_scaled),
    Volume("valid NIfTI-2", _nifti2),
    Volume(
        "NIfTI-1 with text in descrip, aux_file and an extension",
        _with_text(nib.Nifti1Image),
        text=b"Jane",
    ),
    Volume(
        "NIfTI-2 with text in descrip, aux_file and an extension",
        _with_text(nib.Nifti2Image),
        text=b"Jane",
    ),
    Volume("zero voxel size", _voxel_size(0.0), refusal=r"voxel size: 0 mm"),
    Volume("negative voxel size", _voxel_size(-3.0), refusal=r"voxel size: -3 mm"),
    Volume("NaN voxel size", _voxel_size(float("nan")), refusal=r"voxel size: nan mm"),
    Volume("NIfTI-2, zero voxel size", _voxel_size(0.0, nib.Nifti2Header), refusal=r"voxel size"),
    Volume(
        "NIfTI-1 declaring 30000^3 voxels", _huge_dims(nib.Nifti1Header, 30000), refusal=r"voxels"
    ),
    Volume(
        "NIfTI-2 declaring 10^5^3 voxels", _huge_dims(nib.Nifti2Header, 100_000), refusal=r"voxels"
    ),
    Volume("truncated gzip stream", _truncated_gzip, refusal=r"truncated|corrupt"),
    Volume("voxel data cut in half", _truncated_voxels, refusal=r"truncated|corrupt"),
    Volume("vox_offset past the end", _lying_offset, refusal=r"truncated|corrupt|offset|invalid"),
]


# --------------------------------------------------------------------------- archives


def _central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory's file headers."""
    found, start = [], 0
    while (at := data.find(b"PK\x01\x02", start)) >= 0:
        found.append(at)
        start = at + 4
    return found


def _lying_size(data: bytes) -> bytes:
    """Every entry's central header claims 100 uncompressed bytes (the files are larger)."""
    raw = bytearray(data)
    for at in _central_entries(data):
        struct.pack_into("<I", raw, at + 24, 100)
    return bytes(raw)


def _lying_huge_size(data: bytes) -> bytes:
    """Every entry's central header claims 4 GiB - 1 uncompressed (a declared bomb)."""
    raw = bytearray(data)
    for at in _central_entries(data):
        struct.pack_into("<I", raw, at + 24, 0xFFFFFFFE)
    return bytes(raw)


def _wrong_crc(data: bytes) -> bytes:
    """Every entry's CRC-32, local and central, is wrong: the content was altered."""
    raw = bytearray(data)
    for at in _central_entries(data):
        local = struct.unpack_from("<I", raw, at + 42)[0]
        crc = struct.unpack_from("<I", raw, at + 16)[0] ^ 0xFFFFFFFF
        struct.pack_into("<I", raw, at + 16, crc)
        struct.pack_into("<I", raw, local + 14, crc)
    return bytes(raw)


ARCHIVES = [
    Archive("zip cut in half", lambda z: z[: len(z) // 2], refusal=r"zip|archive"),
    Archive("zip with its last 10 bytes missing", lambda z: z[:-10], refusal=r"zip|archive"),
    Archive(
        "central directory under-states sizes", _lying_size, refusal=r"size|zip|archive|corrupt"
    ),
    Archive(
        "central directory declares 4 GiB entries", _lying_huge_size, refusal=r"limit|size|zip"
    ),
    Archive("wrong CRC-32", _wrong_crc, refusal=r"CRC|corrupt|zip|archive"),
    Archive("not a zip at all", lambda z: b"PK\x03\x04" + bytes(2000), refusal=r"zip|archive"),
]


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()
