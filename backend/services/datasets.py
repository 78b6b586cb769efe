"""Datasets and subject import: validation, de-identification, atomic storage.

Every stored subject has an image, optionally a lesion mask, and a brain mask: the user's own
when given (validated like the lesion mask: the image's grid, values 0 and 1, at least one
brain voxel), otherwise computed from the image at import (``backend.services.brainmasks``).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import nibabel as nib
import numpy as np
from isal import igzip
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attrivue_core.io import (
    NiftiError,
    NiftiInfo,
    check_same_grid,
    open_decompressed,
    validate_nifti,
)
from backend.models import Dataset, Subject, User
from backend.schemas.dataset import DatasetPublic, SubjectPublic
from backend.services.brainmasks import (
    BRAIN_FILE,
    COMPUTED,
    GIVEN,
    BlockMeans,
    write_computed_brain_mask,
)
from backend.services.dicom import DICOM_HEAD_BYTES, DICOM_REFUSED, is_dicom, is_dicom_file
from backend.services.errors import Conflict, InvalidInput, NotFound, TooLarge
from backend.storage import Storage

__all__ = [
    "CheckedFiles",
    "FileInvalid",
    "check_mask",
    "check_new_subject",
    "channel_file",
    "channel_paths",
    "check_nifti",
    "create_dataset",
    "dataset_public",
    "get_dataset",
    "get_subject",
    "import_subject",
    "list_datasets",
    "nifti_suffix",
    "remove_subject_files",
    "store_subject",
    "subject_public",
    "write_deidentified",
]

# Free-text header fields that may carry names, dates or scanner notes.
DEIDENTIFIED_FIELDS = ("descrip", "aux_file", "db_name", "intent_name", "data_type")
_CHUNK = 1024 * 1024
_COPY_BLOCK = 8 * 1024 * 1024  # voxel bytes copied into the stored file at a time
_SLAB_VOXELS = 16 * 1024 * 1024


def create_dataset(
    session: Session,
    *,
    project_id: int,
    name: str,
    description: str,
    user: User | None,
    target_name: str = "",
) -> Dataset:
    dataset = Dataset(
        project_id=project_id,
        name=name,
        description=description,
        target_name=target_name,
        created_by_id=user.id if user else None,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def get_subject(session: Session, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise NotFound(f"subject {subject_id} not found")
    return subject


def list_datasets(session: Session, project_ids: list[int]) -> list[tuple[Dataset, int]]:
    counts = (
        select(Subject.dataset_id, func.count(Subject.id).label("n"))
        .group_by(Subject.dataset_id)
        .subquery()
    )
    rows = session.execute(
        select(Dataset, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.dataset_id == Dataset.id)
        .where(Dataset.project_id.in_(project_ids))
        .order_by(Dataset.id)
    )
    return [(d, int(n)) for d, n in rows]


def dataset_public(dataset: Dataset, subject_count: int) -> DatasetPublic:
    public = DatasetPublic.model_validate(dataset)
    public.subject_count = subject_count
    return public


def subject_public(subject: Subject) -> SubjectPublic:
    return SubjectPublic.model_validate(
        {
            **{c: getattr(subject, c) for c in _SUBJECT_FIELDS},
            "has_mask": bool(subject.mask_path),
            "brain_mask": subject.brain_source if subject.brain_path else None,
            "channels": list(subject.dataset.modalities or []),
        }
    )


_SUBJECT_FIELDS = (
    "id",
    "dataset_id",
    "subject_key",
    "label",
    "split",
    "site",
    "target",
    "shape",
    "created_at",
)


class FileInvalid(InvalidInput):
    """A problem with one uploaded file, with the file and the problem also kept apart."""

    def __init__(self, role: str, filename: str, problem: str) -> None:
        super().__init__(f"{role} {filename!r}: {problem}")
        self.role = role
        self.filename = filename
        self.problem = problem


@dataclass(frozen=True)
class CheckedFiles:
    """A subject's image (and lesion mask, and brain mask) on disk, validated and ready to be
    stored; without ``brain`` a brain mask is computed from the image when it is stored."""

    image: Path
    image_info: NiftiInfo
    mask: Path | None = None
    mask_info: NiftiInfo | None = None
    brain: Path | None = None
    brain_info: NiftiInfo | None = None
    # Channels 1.. of a multi-modal subject: (modality name, file on the image's grid).
    channels: tuple[tuple[str, Path], ...] = ()


def nifti_suffix(filename: str, role: str) -> str:
    """``.nii.gz`` or ``.nii`` from an uploaded file's name, or the error naming the file."""
    name = filename.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    if name.endswith(".nii"):
        return ".nii"
    raise FileInvalid(role, filename, "not a NIfTI file (expected .nii or .nii.gz)")


def _copy_limited(
    src: BinaryIO, dest: Path, *, limit: int, role: str, filename: str, head: bytes = b""
) -> None:
    """Stream an upload to disk in chunks (``head``: its first bytes, already read), refusing
    it once it passes the size limit."""
    written = 0
    with dest.open("wb") as out:
        for chunk in itertools.chain([head], iter(lambda: src.read(_CHUNK), b"")):
            written += len(chunk)
            if written > limit:
                raise TooLarge(f"{role} {filename!r}: larger than the limit of {limit} bytes")
            out.write(chunk)
    if written == 0:
        raise FileInvalid(role, filename, "the file is empty")


def check_nifti(path: Path, *, role: str, filename: str) -> NiftiInfo:
    """Validate one staged upload (see ``attrivue_core.io.validate_nifti``); raw DICOM is
    refused with a message pointing to the browser's DICOM import."""
    if is_dicom_file(path):
        raise FileInvalid(role, filename, DICOM_REFUSED)
    nifti_suffix(filename, role)
    try:
        return validate_nifti(path)
    except NiftiError as exc:
        raise FileInvalid(role, filename, str(exc)) from None


def check_mask(
    path: Path, info: NiftiInfo, image_info: NiftiInfo, *, filename: str, role: str = "mask"
) -> None:
    """A mask must lie on its image's grid and hold only the values 0 and 1.

    ``role`` names the mask in the messages: ``mask`` (the lesion mask, which may be empty: a
    healthy subject) or ``brain_mask``, which must hold at least one brain voxel.
    """
    try:
        check_same_grid(image_info, info)
    except NiftiError as exc:
        raise FileInvalid(role, filename, str(exc)) from None
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)  # validated: NIfTI-1 or its subclass NIfTI-2
    values: set[float] = set()
    for slab in _slabs(img, info.shape):
        values.update(np.unique(slab).tolist())
        if not values <= {0, 1}:
            shown = ", ".join(f"{v:g}" for v in sorted(values)[:6])
            raise FileInvalid(role, filename, f"expected only the values 0 and 1; found {shown}")
    if role == "brain_mask" and 1 not in values:
        raise FileInvalid(role, filename, "the brain mask is empty (no voxel is 1)")


def _slabs(img: nib.Nifti1Image, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """The voxels as (x, y, k) slabs along the last axis, a bounded number at a time."""
    step = max(1, _SLAB_VOXELS // (shape[0] * shape[1]))
    for start in range(0, shape[2], step):
        slab = np.asarray(img.dataobj[:, :, start : start + step])
        yield slab.reshape(shape[0], shape[1], -1)


def _deidentified_header(img: nib.Nifti1Image, shape: tuple[int, int, int]) -> nib.Nifti1Header:
    """A copy of the image's header as 3D, free-text fields cleared and extensions dropped.

    Extensions (DICOM, AFNI, comments) may carry names and dates, so none is kept. The
    scaling (``scl_slope``, ``scl_inter``) is taken from the image's data proxy: nibabel moves
    it there on loading and leaves NaN in ``img.header``, so a copy of the header alone would
    store the raw integers unscaled (an int16 volume with slope 0.001 read back 1000 times
    too large).
    """
    header = img.header
    clean = type(header)(header.binaryblock, header.endianness, check=False)
    clean.set_data_shape(shape)
    proxy: Any = img.dataobj
    slope, inter = float(proxy.slope), float(proxy.inter)
    clean["scl_slope"], clean["scl_inter"] = slope, inter  # read from this header: exact
    for field in DEIDENTIFIED_FIELDS:
        if field in clean:
            clean[field] = b""
    clean["vox_offset"] = 0  # recomputed on writing: no extensions follow the header
    return clean


def _copy_voxel_bytes(
    src: Path, img: nib.Nifti1Image, out: BinaryIO, seen: Callable[[bytes], None] | None
) -> None:
    """Copy the voxel block of ``src`` byte for byte, a block at a time, without decoding it;
    ``seen`` gets each block too."""
    proxy: Any = img.dataobj  # the loaded header's vox_offset is reset; the proxy keeps the offset
    remaining = int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
    with open_decompressed(src) as stream:
        stream.seek(int(proxy.offset))
        while remaining > 0:
            chunk = stream.read(min(_COPY_BLOCK, remaining))
            if not chunk:
                raise OSError(f"{src.name}: the voxel data ended early")
            out.write(chunk)
            if seen is not None:
                seen(chunk)
            remaining -= len(chunk)


def _load_nifti1(path: Path) -> nib.Nifti1Image:
    """The header (and lazy voxels) of a validated volume: NIfTI-1 or its subclass NIfTI-2."""
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


VolumeKind = Literal["image", "mask", "labels"]


def write_deidentified(
    src: Path, dest: Path, *, kind: VolumeKind, seen: Callable[[bytes], None] | None = None
) -> None:
    """Re-write a validated volume as 3D .nii.gz with its identifying header content cleared.

    The voxels stream through, so that a large volume never has to fit in memory: the header
    is rewritten and the voxel bytes follow it into a gzip stream compressed by ISA-L at its
    level 1 (``isal.igzip``: an ordinary .nii.gz that every reader opens, written about ten
    times faster than zlib's level 1, a few per cent larger). ``image``: copied byte for byte,
    with its scaling; ``mask``: binarised (uint8 0/1) slab by slab;
    ``labels`` (a review's drawn correction, already checked to hold small non-negative
    integers): stored as uint8 slab by slab. ``seen`` (an image) gets the voxel bytes as they
    are copied (the computed brain mask's ``BlockMeans``), so they are read once.
    """
    img = nib.load(src)
    assert isinstance(img, nib.Nifti1Image)  # Nifti2Image is a subclass
    x, y, z = (int(n) for n in img.shape[:3])
    shape = (x, y, z)
    header = _deidentified_header(img, shape)
    if kind != "image":
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    try:
        with igzip.open(part, "wb", compresslevel=1) as out:
            header.write_to(out)
            out.write(bytes(int(header["vox_offset"]) - out.tell()))
            if kind == "image":
                _copy_voxel_bytes(src, img, out, seen)
            else:
                for slab in _slabs(img, shape):
                    voxels = slab > 0 if kind == "mask" else np.rint(slab)
                    out.write(voxels.astype(np.uint8).tobytes(order="F"))
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def check_new_subject(session: Session, *, dataset: Dataset, subject_key: str, label: int) -> None:
    if label not in (0, 1):
        raise InvalidInput(f"label must be 0 (healthy) or 1 (pathological); got {label}")
    exists = session.scalar(
        select(Subject.id).where(
            Subject.dataset_id == dataset.id, Subject.subject_key == subject_key
        )
    )
    if exists is not None:
        raise Conflict(f"subject {subject_key!r} already exists in dataset {dataset.id}")


def store_subject(
    session: Session,
    storage: Storage,
    *,
    dataset: Dataset,
    subject_key: str,
    label: int,
    split: str,
    site: str = "",
    target: float | None = None,
    files: CheckedFiles,
) -> Subject:
    """Add the row and write the de-identified files and the brain mask (the given one, or one
    computed from the stored image); on error the subject's folder is removed.

    The caller commits (or rolls back and calls ``remove_subject_files``).
    """
    subject = Subject(
        dataset_id=dataset.id,
        subject_key=subject_key,
        label=label,
        split=split,
        site=site,
        target=target,
        image_path="",
        mask_path=None,
        shape=[int(n) for n in files.image_info.shape],
        affine=np.asarray(files.image_info.affine, dtype=float).tolist(),
    )
    session.add(subject)
    session.flush()
    folder = storage.subject_dir(dataset.id, subject.id)
    try:
        # Without a brain mask of the user's, the image's voxels feed the computed one as
        # they are stored: one read of the image for both.
        means = None if files.brain is not None else BlockMeans(_load_nifti1(files.image))
        seen = means.feed if means is not None else None
        write_deidentified(files.image, folder / "image.nii.gz", kind="image", seen=seen)
        subject.image_path = storage.relative(folder / "image.nii.gz")
        if files.mask is not None:
            write_deidentified(files.mask, folder / "mask.nii.gz", kind="mask")
            subject.mask_path = storage.relative(folder / "mask.nii.gz")
        if files.brain is not None:
            write_deidentified(files.brain, folder / BRAIN_FILE, kind="mask")
            subject.brain_source = GIVEN
        else:
            write_computed_brain_mask(folder / "image.nii.gz", folder / BRAIN_FILE, means=means)
            subject.brain_source = COMPUTED
        subject.brain_path = storage.relative(folder / BRAIN_FILE)
        if files.channels:
            stored = {}
            for index, (modality, path) in enumerate(files.channels, start=1):
                dest = folder / channel_file(index)
                write_deidentified(path, dest, kind="image")
                stored[modality] = storage.relative(dest)
            subject.channel_paths = stored
        session.flush()
    except BaseException:
        storage.remove_tree(folder)
        raise
    return subject


def channel_file(index: int) -> str:
    """The stored file of a subject's channel ``index`` (>= 1; channel 0 is image.nii.gz)."""
    return f"channel-{index}.nii.gz"


def channel_paths(subject: Subject, dataset: Dataset) -> list[str]:
    """The stored images of a subject, one per channel in the dataset's order."""
    names = dataset.modalities or []
    extra = subject.channel_paths or {}
    return [subject.image_path, *(extra[m] for m in names[1:])]


def import_subject(
    session: Session,
    storage: Storage,
    *,
    dataset: Dataset,
    subject_key: str,
    label: int,
    split: str,
    site: str = "",
    target: float | None = None,
    image: tuple[str, BinaryIO],
    mask: tuple[str, BinaryIO] | None,
    max_bytes: int,
    brain: tuple[str, BinaryIO] | None = None,
) -> Subject:
    """Validate and store one subject. On any error, nothing is stored: no row, no file.

    ``brain`` is the user's brain mask (on the image's grid, 0 and 1); without it one is
    computed from the image.
    """
    check_new_subject(session, dataset=dataset, subject_key=subject_key, label=label)
    if dataset.modalities:
        raise InvalidInput(
            f"dataset {dataset.id} has several modalities ({', '.join(dataset.modalities)}): "
            "add its subjects with an import (a manifest with a column per modality)"
        )
    files = [("image", image)]
    files += [("mask", mask)] if mask is not None else []
    files += [("brain_mask", brain)] if brain is not None else []
    temps: dict[str, Path] = {}
    try:
        infos = {}
        for role, (filename, stream) in files:
            head = stream.read(DICOM_HEAD_BYTES)
            if is_dicom(head):  # refused before a byte of it is stored
                raise FileInvalid(role, filename, DICOM_REFUSED)
            temps[role] = storage.tmp_dir() / f"{uuid.uuid4().hex}{nifti_suffix(filename, role)}"
            _copy_limited(
                stream, temps[role], limit=max_bytes, role=role, filename=filename, head=head
            )
            infos[role] = check_nifti(temps[role], role=role, filename=filename)
        if mask is not None:
            check_mask(temps["mask"], infos["mask"], infos["image"], filename=mask[0])
        if brain is not None:
            check_mask(
                temps["brain_mask"],
                infos["brain_mask"],
                infos["image"],
                filename=brain[0],
                role="brain_mask",
            )
        checked = CheckedFiles(
            image=temps["image"],
            image_info=infos["image"],
            mask=temps.get("mask"),
            mask_info=infos.get("mask"),
            brain=temps.get("brain_mask"),
            brain_info=infos.get("brain_mask"),
        )
        return store_subject(
            session,
            storage,
            dataset=dataset,
            subject_key=subject_key,
            label=label,
            split=split,
            site=site,
            target=target,
            files=checked,
        )
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def remove_subject_files(storage: Storage, subjects: Iterable[Subject]) -> None:
    for subject in subjects:
        storage.remove_tree(storage.subject_dir(subject.dataset_id, subject.id))
