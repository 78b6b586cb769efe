"""Datasets and the upload of their subjects."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from sqlalchemy import select

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, StorageDep, authorize
from backend.models import ProjectMember
from backend.schemas.dataset import (
    DatasetCreate,
    DatasetPublic,
    DatasetsPublic,
    DatasetUpdate,
    SubjectPublic,
    SubjectsPublic,
)
from backend.services import datasets as svc
from backend.services import projects
from backend.services.errors import InvalidInput

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", operation_id="listDatasets")
def list_datasets(
    user: CurrentUser, session: SessionDep, project_id: int | None = None
) -> DatasetsPublic:
    """The datasets of the user's projects (or of one project), with their subject counts."""
    ids = projects.member_project_ids(session, user)
    if project_id is not None:
        ids = [i for i in ids if i == project_id]
    rows = svc.list_datasets(session, ids)
    return DatasetsPublic(data=[svc.dataset_public(d, n) for d, n in rows], count=len(rows))


def _default_project(session: SessionDep, user: CurrentUser) -> int:
    writable = session.scalars(
        select(ProjectMember.project_id).where(
            ProjectMember.user_id == user.id, ProjectMember.role.in_(projects.WRITE)
        )
    ).all()
    if len(writable) != 1:
        raise InvalidInput(
            "project_id is required"
            if writable
            else "you may upload to no project: create one or ask a project admin"
        )
    return writable[0]


@router.post("", operation_id="createDataset", status_code=201)
def create_dataset(body: DatasetCreate, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    """Create an empty dataset in a project."""
    project_id = body.project_id or _default_project(session, user)
    projects.require(session, user, project_id, projects.WRITE)
    dataset = svc.create_dataset(
        session,
        project_id=project_id,
        name=body.name,
        description=body.description,
        target_name=body.target_name,
        user=user,
    )
    session.commit()
    return svc.dataset_public(dataset, 0)


@router.patch("/{dataset_id}", operation_id="updateDataset")
def update_dataset(
    dataset_id: int, body: DatasetUpdate, user: CurrentUser, session: SessionDep
) -> DatasetPublic:
    """Change a dataset's name, description or target name (admins and researchers)."""
    dataset = svc.get_dataset(session, dataset_id)
    authorize(session, user, dataset, projects.WRITE)
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            raise HTTPException(422, detail=f"{name} may not be null")
        setattr(dataset, name, value)
    session.commit()
    session.refresh(dataset)
    return svc.dataset_public(dataset, len(dataset.subjects))


@router.get("/{dataset_id}", operation_id="getDataset")
def get_dataset(dataset_id: int, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    """One dataset."""
    dataset = svc.get_dataset(session, dataset_id)
    authorize(session, user, dataset)
    return svc.dataset_public(dataset, len(dataset.subjects))


@router.get("/{dataset_id}/subjects", operation_id="listSubjects")
def list_subjects(dataset_id: int, user: CurrentUser, session: SessionDep) -> SubjectsPublic:
    """The subjects of a dataset."""
    dataset = svc.get_dataset(session, dataset_id)
    authorize(session, user, dataset)
    data = [svc.subject_public(s) for s in dataset.subjects]
    return SubjectsPublic(data=data, count=len(data))


@router.post("/{dataset_id}/subjects", operation_id="uploadSubject", status_code=201)
def upload_subject(
    dataset_id: int,
    user: CurrentUser,
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
    brain_mask: Annotated[
        UploadFile | None,
        File(description="brain mask on the image grid (0/1); without it, one is computed"),
    ] = None,
) -> SubjectPublic:
    """Upload one subject: an image, an optional lesion mask, an optional brain mask (else one
    is computed from the image), its label and split."""
    dataset = svc.get_dataset(session, dataset_id)
    authorize(session, user, dataset, projects.WRITE)
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
            brain=(
                (brain_mask.filename or "brain_mask", brain_mask.file)
                if brain_mask is not None
                else None
            ),
            max_bytes=settings.max_upload_bytes,
        )
        session.commit()
    except BaseException:
        session.rollback()
        if subject is not None:
            svc.remove_subject_files(storage, [subject])
        raise
    return svc.subject_public(subject)
