"""Subjects' brain masks: stored at import as ``brain.nii.gz`` beside ``image.nii.gz``.

A subject's brain mask is the user's own when one came with the import (a manifest's
``brain_mask`` column, the upload's ``brain_mask`` field, a BIDS ``*desc-brain*_mask``), and
otherwise one computed from the image (``attrivue_core.brainmask.compute_brain_mask``: smoothed,
thresholded between the background and Otsu's level, largest component, holes filled). Either
way it is uint8 0/1 on the image's grid, written with the image's (de-identified) header.

Subjects imported before brain masks existed get theirs lazily: ``ensure_brain_mask`` computes
and stores it the first time the route, the map statistics or a training run asks for it.

numpy, scipy, scikit-image and nibabel only: the backend never imports torch.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from sqlalchemy.orm import Session

from attrivue_core.brainmask import compute_brain_mask
from backend.models import Subject
from backend.storage import Storage

__all__ = ["BRAIN_FILE", "GIVEN", "COMPUTED", "ensure_brain_mask", "write_computed_brain_mask"]

BRAIN_FILE = "brain.nii.gz"
GIVEN = "given"
COMPUTED = "computed"


def write_computed_brain_mask(image_path: Path, dest: Path) -> None:
    """Compute the brain mask of the NIfTI image at ``image_path`` and write it to ``dest``.

    The mask keeps the image's header (grid, affine, qform and sform codes) with the data
    type set to uint8 and no scaling, so it lies on the image's grid exactly. The file is
    written under a temporary name and renamed into place.

    Args:
        image_path: A stored (3D) subject image.
        dest: Where the mask goes (``.nii.gz``).
    """
    img = nib.load(image_path)
    assert isinstance(img, nib.Nifti1Image)  # stored images are NIfTI-1 (or its subclass)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = data.reshape(data.shape[:3])
    spacing = [float(z) for z in img.header.get_zooms()[:3]]
    spacing = [z if z > 0 else 1.0 for z in spacing]
    mask = compute_brain_mask(data, spacing).astype(np.uint8)
    header = img.header.copy()
    header.set_data_shape(mask.shape)
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    out = nib.Nifti1Image(mask, img.affine, header=header)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    try:
        part.write_bytes(gzip.compress(out.to_bytes(), compresslevel=1))
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def ensure_brain_mask(session: Session, storage: Storage, subject: Subject) -> Path:
    """The subject's stored brain mask, computed and stored now if it has none yet.

    A subject imported before brain masks existed (or whose file went missing) gets a computed
    one; ``subject.brain_path`` and ``brain_source`` are set in the session (the caller
    commits).

    Returns:
        The absolute path of the brain mask.
    """
    if subject.brain_path:
        path = storage.absolute(subject.brain_path)
        if path.is_file():
            return path
    dest = storage.subject_dir(subject.dataset_id, subject.id) / BRAIN_FILE
    write_computed_brain_mask(storage.absolute(subject.image_path), dest)
    subject.brain_path = storage.relative(dest)
    subject.brain_source = COMPUTED
    session.flush()
    return dest
