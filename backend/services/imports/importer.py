"""The import itself: the files gathered (sent, or chunked uploads), the plan checked whole,
every subject's files validated, and only then the subjects stored in the caller's
transaction."""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attrivue_core.io import NiftiInfo
from backend.models import Dataset, Subject, UploadSession, User
from backend.services.datasets import (
    CheckedFiles,
    FileInvalid,
    check_mask,
    check_nifti,
    remove_subject_files,
    store_subject,
)
from backend.services.dicom import DICOM_REFUSED, is_dicom_file
from backend.services.imports.archive import FileSet, LooseFiles, ZipFiles
from backend.services.imports.chunked import part_path, reconcile
from backend.services.imports.common import (
    ImportFailed,
    Limits,
    Problem,
    Problems,
    StagedFile,
    file_suffix,
    kind_of,
)
from backend.services.imports.planning import (
    Planned,
    check_plan,
    find_table,
    manifest_modalities,
    plan_bids,
    plan_manifest,
    read_table,
)
from backend.storage import Storage

__all__ = ["ImportResult", "import_subjects"]


def _on_grid(info: NiftiInfo, image_info: NiftiInfo, atol: float = 1e-3) -> str | None:
    """Why a modality's image is not on the grid of channel 0, or None when it is."""
    if tuple(info.shape) != tuple(image_info.shape):
        return f"shape {tuple(info.shape)} differs from {tuple(image_info.shape)}"
    diff = float(np.max(np.abs(np.asarray(info.affine) - np.asarray(image_info.affine))))
    if not diff <= atol:
        return f"affine differs (largest difference {diff:.4g} mm, tolerance {atol:g} mm)"
    return None


def _resampled(path: Path, image_path: Path, staging: Path) -> tuple[Path, NiftiInfo]:
    """A modality's image resampled (trilinear) onto the grid of channel 0, in staging."""
    moving = nib.load(path)
    reference = nib.load(image_path)
    assert isinstance(moving, nib.Nifti1Image) and isinstance(reference, nib.Nifti1Image)
    data = np.asarray(moving.dataobj, dtype=np.float32)
    data = data.reshape(data.shape[:3])
    moving3d = nib.Nifti1Image(data, moving.affine)
    ref_shape = tuple(int(n) for n in reference.shape[:3])
    out = resample_from_to(moving3d, (ref_shape, reference.affine), order=1, mode="constant")
    dest = staging / f"resampled-{uuid.uuid4().hex}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), reference.affine), dest)
    return dest, check_nifti(dest, role="image", filename=dest.name)


def _validate(
    files: FileSet,
    p: Planned,
    problems: Problems,
    *,
    first: str = "image",
    resample: bool = False,
    staging: Path | None = None,
) -> CheckedFiles | None:
    """Check a subject's image, its further modalities, lesion mask and brain mask, adding
    every problem found (a mask's problems name the mask: ``brain_mask: ...``); None if any.

    A modality off the grid of channel 0 (``first``) is refused, or with ``resample``
    resampled onto it (in ``staging``)."""
    infos: dict[str, tuple[Path, NiftiInfo]] = {}
    channel_infos: list[tuple[str, str, Path, NiftiInfo]] = []
    for modality, channel_name in p.channels:
        try:
            channel_path = files.path(channel_name)
            info = check_nifti(channel_path, role="image", filename=channel_name)
        except FileInvalid as exc:
            problems.add(
                f"subject {p.key!r}, modality {modality!r}: {exc.problem}", channel_name, p.row
            )
            continue
        channel_infos.append((modality, channel_name, channel_path, info))
    roles = (("image", p.image), ("mask", p.mask), ("brain_mask", p.brain))
    for role, name in roles:
        if name is None:
            continue
        try:
            path = files.path(name)
            infos[role] = (path, check_nifti(path, role=role, filename=name))
        except FileInvalid as exc:
            problems.add(exc.problem if role == "image" else f"{role}: {exc.problem}", name, p.row)
    if any(name is not None and role not in infos for role, name in roles):
        return None
    if len(channel_infos) != len(p.channels):
        return None
    image_path, image_info = infos["image"]
    ok = True
    channels: list[tuple[str, Path]] = []
    for modality, channel_name, channel_path, info in channel_infos:
        off_grid = _on_grid(info, image_info)
        if off_grid is None:
            channels.append((modality, channel_path))
        elif resample and staging is not None:
            channels.append((modality, _resampled(channel_path, image_path, staging)[0]))
        else:
            problems.add(
                f"subject {p.key!r}: modality {modality!r} is not on the grid of {first!r} "
                f"({off_grid}); resample it to {first!r}, or import with resample=true",
                channel_name,
                p.row,
            )
            ok = False
    for role, name in roles[1:]:
        if name is None:
            continue
        try:
            check_mask(*infos[role], image_info, filename=name, role=role)
        except FileInvalid as exc:
            problems.add(f"{role}: {exc.problem}", name, p.row)
            ok = False
    if not ok:
        return None
    mask = infos.get("mask")
    brain = infos.get("brain_mask")
    return CheckedFiles(
        image_path,
        image_info,
        mask[0] if mask else None,
        mask[1] if mask else None,
        brain[0] if brain else None,
        brain[1] if brain else None,
        tuple(channels),
    )


def _check_channels(
    session: Session, dataset: Dataset, names: list[str] | None, table: str, problems: Problems
) -> None:
    """The import's modalities must be the dataset's channels, in the same order; the first
    import of an empty dataset fixes them."""
    if dataset.modalities:
        if names != dataset.modalities:
            given = ", ".join(names) if names else "one image"
            problems.add(
                f"dataset {dataset.id} has the channels {', '.join(dataset.modalities)} (in this "
                f"order); this import gives {given}",
                table,
                1,
            )
        return
    if names:
        count = session.scalar(
            select(func.count(Subject.id)).where(Subject.dataset_id == dataset.id)
        )
        if count:
            problems.add(
                f"dataset {dataset.id} holds subjects with one image; import several modalities "
                "into a new dataset",
                table,
                1,
            )


@dataclass
class ImportResult:
    layout: Literal["manifest", "bids"]
    subjects: list[Subject]
    consumed: list[Path]  # uploads' part files to delete once the transaction is committed
    # With skip_invalid: the problems of the rows left out (empty otherwise).
    rejected: list[Problem] = field(default_factory=list)


def _upload_files(
    session: Session,
    storage: Storage,
    *,
    user: User,
    dataset: Dataset,
    upload_ids: list[str],
    staging: Path,
    problems: Problems,
) -> tuple[list[StagedFile], list[UploadSession]]:
    """Completed uploads as staged files (hard links with the suffix nibabel needs)."""
    files, uploads = [], []
    for n, upload_id in enumerate(dict.fromkeys(upload_ids)):
        upload = session.get(UploadSession, upload_id)
        if upload is None or upload.user_id != user.id:
            problems.add("no such upload", upload_id)
            continue
        reconcile(storage, upload)
        if upload.project_id != dataset.project_id:
            problems.add("the upload belongs to another project", upload.filename)
        elif upload.status != "complete":
            problems.add(
                f"the upload is incomplete ({upload.received} of {upload.size} bytes)",
                upload.filename,
            )
        else:
            link = staging / f"upload-{n:05d}{file_suffix(upload.filename)}"
            part = part_path(storage, upload.id)
            try:
                os.link(part, link)
            except OSError:
                shutil.copyfile(part, link)
            files.append(StagedFile(upload.filename, link))
            uploads.append(upload)
    return files, uploads


def _file_set(
    files: list[StagedFile], manifest: StagedFile | None, staging: Path, limits: Limits
) -> tuple[FileSet, str | None]:
    """The files as one set: loose files, or the contents of a zip sent alone."""
    problems = Problems()
    names = Counter(f.name for f in files)
    for name, count in names.items():
        if count > 1:
            problems.add(f"{count} files have this name; send each once", name)
    for f in files:
        if kind_of(f.name) == "archive":
            problems.add("only zip archives are supported", f.name)
    dicom = [f.name for f in files if is_dicom_file(f.path)]
    if dicom:
        more = f" (and {len(dicom) - 1} more DICOM files)" if len(dicom) > 1 else ""
        problems.add(f"a DICOM file{more}: {DICOM_REFUSED}", dicom[0])
    zips = [f for f in files if kind_of(f.name) == "zip"]
    if zips and (len(files) > 1 or manifest is not None):
        problems.add("send a zip archive alone, without other files", zips[0].name)
    problems.stop_if_any()
    if zips:
        return ZipFiles(zips[0], staging, limits), None
    loose = LooseFiles(files + ([manifest] if manifest else []))
    return loose, manifest.name if manifest else None


def import_subjects(
    session: Session,
    storage: Storage,
    *,
    dataset: Dataset,
    user: User,
    files: list[StagedFile],
    manifest: StagedFile | None = None,
    upload_ids: Iterable[str] = (),
    staging: Path,
    limits: Limits,
    modality: str | None = None,
    modalities: list[str] | None = None,
    resample: bool = False,
    problems: Iterable[Problem] = (),
    skip_invalid: bool = False,
) -> ImportResult:
    """Check a whole import, then store its subjects in the session (the caller commits).

    Args:
        files: Files received for this import (names as the client sent them).
        manifest: The table, when sent apart from the files; else one is looked for among
            them (manifest.csv/.tsv or participants.tsv, the one nearest the top).
        upload_ids: Completed chunked uploads that join ``files``.
        staging: This import's staging folder, removed by the caller.
        modality: ``T1w`` or ``FLAIR``: which BIDS image to take where a subject has both.
        modalities: BIDS: the modalities to stack as channels, in order (e.g. ``["T1w",
            "FLAIR"]``). A manifest names them by its columns (``image``, ``image_<name>``).
        resample: Resample a modality that is not on the grid of channel 0 onto it
            (trilinear) instead of refusing the subject.
        problems: Problems already found while receiving the files.
        skip_invalid: Store the subjects whose rows have no problem and report the others
            (``ImportResult.rejected``). Problems not tied to a row (the table, the upload,
            a file named twice) and size limits still refuse the whole import, as does a table
            with no valid row.

    Raises:
        ImportFailed: Every problem found; nothing was stored.
    """
    found = Problems(problems)
    loose, uploads = _upload_files(
        session,
        storage,
        user=user,
        dataset=dataset,
        upload_ids=list(upload_ids),
        staging=staging,
        problems=found,
    )
    found.stop_if_any()
    fileset, table_name = _file_set([*files, *loose], manifest, staging, limits)
    try:
        table = read_table(fileset, table_name or find_table(fileset))
        if "participant_id" in table.columns:
            layout: Literal["manifest", "bids"] = "bids"
            planned = plan_bids(table, fileset, modality, found, modalities)
            names = list(modalities or []) if modalities and len(modalities) > 1 else None
        else:
            layout = "manifest"
            planned = plan_manifest(table, fileset, found)
            columns = [m for m, _ in manifest_modalities(table.columns)]
            names = columns if len(columns) > 1 else None
        if not planned and not found:
            found.add("the table lists no subject", table.name)
        check_plan(session, dataset, planned, table.name, found)
        _check_channels(session, dataset, names, table.name, found)
        checked: list[tuple[Planned, CheckedFiles | None]] = []
        first = names[0] if names else "image"
        for p in planned:
            try:
                checked.append(
                    (
                        p,
                        _validate(
                            fileset, p, found, first=first, resample=resample, staging=staging
                        ),
                    )
                )
            except ImportFailed as exc:  # a size limit: stop, with what was found so far
                raise ImportFailed([*found, *exc.problems]) from None
        rejected: list[Problem] = []
        if skip_invalid and found and all(p.row is not None for p in found):
            bad_rows = {p.row for p in found}
            kept: list[tuple[Planned, CheckedFiles | None]] = [
                (p, f) for p, f in checked if p.row not in bad_rows and f is not None
            ]
            if kept:
                rejected, checked = list(found), kept
                found = Problems()
        found.stop_if_any()
    finally:
        if isinstance(fileset, ZipFiles):
            fileset.close()
    if names and not dataset.modalities:
        dataset.modalities = names  # the channel order, fixed by this first import
    subjects: list[Subject] = []
    try:
        for p, files_of in checked:
            assert files_of is not None
            subjects.append(
                store_subject(
                    session,
                    storage,
                    dataset=dataset,
                    subject_key=p.key,
                    label=p.fields.label,
                    split=p.fields.split,
                    site=p.fields.site,
                    target=p.fields.target,
                    files=files_of,
                )
            )
    except BaseException:
        remove_subject_files(storage, subjects)
        raise
    consumed = [part_path(storage, u.id) for u in uploads]
    for upload in uploads:
        session.delete(upload)
    session.flush()
    return ImportResult(layout, subjects, consumed, rejected)
