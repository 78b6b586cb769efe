"""Datasets and subject import: validation, de-identification, atomic storage."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import nibabel as nib
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import Dataset, Subject, User
from backend.schemas.dataset import DatasetPublic, SubjectPublic
from backend.services.errors import Conflict, InvalidInput, NotFound, TooLarge
from backend.storage import Storage
from worker.ml.io import NiftiError, check_same_grid, validate_nifti

__all__ = [
    "create_dataset",
    "dataset_public",
    "get_dataset",
    "get_subject",
    "import_subject",
    "list_datasets",
    "subject_public",
]

# Free-text header fields that may carry names, dates or scanner notes.
DEIDENTIFIED_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")
_CHUNK = 1024 * 1024


def create_dataset(
    session: Session, *, project_id: int, name: str, description: str, user: User | None
) -> Dataset:
    dataset = Dataset(
        project_id=project_id,
        name=name,
        description=description,
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
        {**{c: getattr(subject, c) for c in _SUBJECT_FIELDS}, "has_mask": bool(subject.mask_path)}
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


def _nifti_suffix(filename: str, role: str) -> str:
    name = filename.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    if name.endswith(".nii"):
        return ".nii"
    raise InvalidInput(f"{role} {filename!r}: not a NIfTI file (expected .nii or .nii.gz)")


def _copy_limited(src: BinaryIO, dest: Path, *, limit: int, role: str, filename: str) -> None:
    """Stream an upload to disk in chunks, refusing it once it passes the size limit."""
    written = 0
    with dest.open("wb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise TooLarge(f"{role} {filename!r}: larger than the limit of {limit} bytes")
            out.write(chunk)
    if written == 0:
        raise InvalidInput(f"{role} {filename!r}: the file is empty")


def _write_deidentified(src: Path, dest: Path, *, as_mask: bool) -> None:
    """Re-write a validated image with its free-text header fields cleared."""
    img = nib.load(src)
    data = np.asarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    if as_mask:
        data = (data > 0).astype(np.uint8)
    header = img.header.copy()
    for field in DEIDENTIFIED_FIELDS:
        if field in header:
            header[field] = b""
    out_cls = nib.Nifti2Image if isinstance(img, nib.Nifti2Image) else nib.Nifti1Image
    out = out_cls(data, img.affine, header=header)
    if as_mask:
        out.set_data_dtype(np.uint8)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, dest)


def _check_mask_values(path: Path, filename: str) -> None:
    values = np.unique(np.asarray(nib.load(path).dataobj))
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in values[:6])
        raise InvalidInput(f"mask {filename!r}: expected only the values 0 and 1; found {shown}")


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
) -> Subject:
    """Validate and store one subject. On any error, nothing is stored: no row, no file."""
    if label not in (0, 1):
        raise InvalidInput(f"label must be 0 (healthy) or 1 (pathological); got {label}")
    exists = session.scalar(
        select(Subject.id).where(
            Subject.dataset_id == dataset.id, Subject.subject_key == subject_key
        )
    )
    if exists is not None:
        raise Conflict(f"subject {subject_key!r} already exists in dataset {dataset.id}")

    files = [("image", image)] + ([("mask", mask)] if mask is not None else [])
    temps: dict[str, Path] = {}
    try:
        infos = {}
        for role, (filename, stream) in files:
            temps[role] = storage.tmp_dir() / f"{uuid.uuid4().hex}{_nifti_suffix(filename, role)}"
            _copy_limited(stream, temps[role], limit=max_bytes, role=role, filename=filename)
            try:
                infos[role] = validate_nifti(temps[role])
            except NiftiError as exc:
                raise InvalidInput(f"{role} {filename!r}: {exc}") from None
        if mask is not None:
            try:
                check_same_grid(infos["image"], infos["mask"])
            except NiftiError as exc:
                raise InvalidInput(f"mask {mask[0]!r}: {exc}") from None
            _check_mask_values(temps["mask"], mask[0])
        subject = Subject(
            dataset_id=dataset.id,
            subject_key=subject_key,
            label=label,
            split=split,
            site=site,
            target=target,
            image_path="",
            mask_path=None,
            shape=[int(n) for n in infos["image"].shape],
            affine=np.asarray(infos["image"].affine, dtype=float).tolist(),
        )
        session.add(subject)
        session.flush()
        folder = storage.subject_dir(dataset.id, subject.id)
        try:
            _write_deidentified(temps["image"], folder / "image.nii.gz", as_mask=False)
            subject.image_path = storage.relative(folder / "image.nii.gz")
            if mask is not None:
                _write_deidentified(temps["mask"], folder / "mask.nii.gz", as_mask=True)
                subject.mask_path = storage.relative(folder / "mask.nii.gz")
            session.flush()
        except BaseException:
            storage.remove_tree(folder)
            raise
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return subject


def remove_subject_files(storage: Storage, subjects: Iterable[Subject]) -> None:
    for subject in subjects:
        storage.remove_tree(storage.subject_dir(subject.dataset_id, subject.id))
