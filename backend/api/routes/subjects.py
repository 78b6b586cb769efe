"""One subject and its files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import FileResponse

from attrivue_core.io import load_image
from backend.api.deps import AuditDep, CurrentUser, SessionDep, StorageDep, authorize
from backend.schemas.dataset import SubjectPublic, SubjectUpdate
from backend.services import datasets as svc
from backend.services.brainmasks import ensure_brain_mask
from backend.services.projects import WRITE

router = APIRouter(prefix="/subjects", tags=["subjects"])

NIFTI_GZ = "application/gzip"


@router.get("/{subject_id}", operation_id="getSubject")
def get_subject(subject_id: int, user: CurrentUser, session: SessionDep) -> SubjectPublic:
    """One subject."""
    subject = svc.get_subject(session, subject_id)
    authorize(session, user, subject)
    return svc.subject_public(subject)


@router.patch("/{subject_id}", operation_id="updateSubject")
def update_subject(
    subject_id: int, body: SubjectUpdate, user: CurrentUser, session: SessionDep
) -> SubjectPublic:
    """Change a subject's label, split, site or target (admins and researchers of its
    project); a null target removes it."""
    subject = svc.get_subject(session, subject_id)
    authorize(session, user, subject, WRITE)
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None and name != "target":
            raise HTTPException(422, detail=f"{name} may not be null")
        setattr(subject, name, value)
    session.commit()
    session.refresh(subject)
    return svc.subject_public(subject)


@router.get(
    "/{subject_id}/image.nii.gz",
    operation_id="downloadSubjectImage",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_image(
    subject_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep, audit: AuditDep
) -> FileResponse:
    """The subject's MR volume as NIfTI (de-identified)."""
    subject = svc.get_subject(session, subject_id)
    authorize(session, user, subject)
    path = storage.absolute(subject.image_path)
    audit("download", subject, detail="image")
    return FileResponse(path, media_type=NIFTI_GZ, filename=f"{subject.subject_key}.nii.gz")


@router.get(
    "/{subject_id}/channels/{index}.nii.gz",
    operation_id="downloadSubjectChannel",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_channel(
    subject_id: int,
    index: int,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    audit: AuditDep,
) -> FileResponse:
    """One modality of a multi-modal subject, by its channel index in the dataset's order
    (``channels`` of the subject; 0 is the image itself), on the image's grid."""
    subject = svc.get_subject(session, subject_id)
    authorize(session, user, subject)
    paths = svc.channel_paths(subject, subject.dataset)
    if not 0 <= index < len(paths):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"subject {subject_id} has {len(paths)} channel(s); no channel {index}",
        )
    audit("download", subject, detail=f"channel {index}")
    return FileResponse(
        storage.absolute(paths[index]),
        media_type=NIFTI_GZ,
        filename=f"{subject.subject_key}_c{index}.nii.gz",
    )


@router.get(
    "/{subject_id}/mask.nii.gz",
    operation_id="downloadSubjectMask",
    response_class=Response,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_mask(
    subject_id: int,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    audit: AuditDep,
    drawing: bool = False,
) -> Response:
    """The lesion mask; with drawing=true its lesion value is 2, green in NiiVue's drawing."""
    subject = svc.get_subject(session, subject_id)
    authorize(session, user, subject)
    if not subject.mask_path:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"subject {subject_id} has no mask")
    path = storage.absolute(subject.mask_path)
    audit("download", subject, detail="mask (drawing)" if drawing else "mask")
    if not drawing:
        return FileResponse(
            path, media_type=NIFTI_GZ, filename=f"{subject.subject_key}_mask.nii.gz"
        )
    img = load_image(path)
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8) * 2
    out = nib.Nifti1Image(data, img.affine)
    out.set_data_dtype(np.uint8)
    return Response(gzip.compress(out.to_bytes(), compresslevel=4), media_type=NIFTI_GZ)


@router.get(
    "/{subject_id}/brain.nii.gz",
    operation_id="downloadSubjectBrainMask",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_brain_mask(
    subject_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep, audit: AuditDep
) -> FileResponse:
    """The brain mask (uint8, 1 = brain, on the image grid): the user's own, or the one
    computed from the image (``brain_mask`` of the subject says which). A subject imported
    before brain masks existed gets one computed now, and kept."""
    subject = svc.get_subject(session, subject_id)
    authorize(session, user, subject)
    path = ensure_brain_mask(session, storage, subject)
    session.commit()
    audit("download", subject, detail="brain mask")
    return FileResponse(path, media_type=NIFTI_GZ, filename=f"{subject.subject_key}_brain.nii.gz")
