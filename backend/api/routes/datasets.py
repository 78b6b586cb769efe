"""Datasets and the upload of their subjects."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, StorageDep, Writer
from backend.schemas.dataset import (
    DatasetCreate,
    DatasetPublic,
    DatasetsPublic,
    SubjectPublic,
    SubjectsPublic,
)
from backend.services import datasets as svc

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", operation_id="listDatasets")
def list_datasets(user: CurrentUser, session: SessionDep) -> DatasetsPublic:
    """All datasets with their subject counts."""
    rows = svc.list_datasets(session)
    return DatasetsPublic(data=[svc.dataset_public(d, n) for d, n in rows], count=len(rows))


@router.post("", operation_id="createDataset", status_code=201)
def create_dataset(body: DatasetCreate, user: Writer, session: SessionDep) -> DatasetPublic:
    """Create an empty dataset."""
    dataset = svc.create_dataset(session, name=body.name, description=body.description, user=user)
    session.commit()
    return svc.dataset_public(dataset, 0)


@router.get("/{dataset_id}", operation_id="getDataset")
def get_dataset(dataset_id: int, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    """One dataset."""
    dataset = svc.get_dataset(session, dataset_id)
    return svc.dataset_public(dataset, len(dataset.subjects))


@router.get("/{dataset_id}/subjects", operation_id="listSubjects")
def list_subjects(dataset_id: int, user: CurrentUser, session: SessionDep) -> SubjectsPublic:
    """The subjects of a dataset."""
    dataset = svc.get_dataset(session, dataset_id)
    data = [svc.subject_public(s) for s in dataset.subjects]
    return SubjectsPublic(data=data, count=len(data))


@router.post("/{dataset_id}/subjects", operation_id="uploadSubject", status_code=201)
def upload_subject(
    dataset_id: int,
    user: Writer,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    subject_key: Annotated[str, Form(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")],
    label: Annotated[int, Form(ge=0, le=1)],
    image: Annotated[UploadFile, File(description="the MR volume, .nii or .nii.gz")],
    split: Annotated[Literal["train", "val", "test"], Form()] = "train",
    site: Annotated[str, Form(max_length=64)] = "",
    target: Annotated[float | None, Form()] = None,
    mask: Annotated[UploadFile | None, File(description="lesion mask on the image grid")] = None,
) -> SubjectPublic:
    """Upload one subject: an image, an optional lesion mask, its label and split."""
    dataset = svc.get_dataset(session, dataset_id)
    subject = None
    try:
        subject = svc.import_subject(
            session,
            storage,
            dataset=dataset,
            subject_key=subject_key,
            label=label,
            split=split,
            site=site,
            target=target,
            image=(image.filename or "image", image.file),
            mask=(mask.filename or "mask", mask.file) if mask is not None else None,
            max_bytes=settings.max_upload_bytes,
        )
        session.commit()
    except BaseException:
        session.rollback()
        if subject is not None:
            svc.remove_subject_files(storage, [subject])
        raise
    return svc.subject_public(subject)
