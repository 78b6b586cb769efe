"""Dataset imports: many subjects at once from a manifest, a zip or a BIDS folder, and the
resumable chunked uploads that bring large files.

An import is checked whole before anything is stored: the names, the archive, every table
row and every file, and each problem is named with its file and row (``ImportFailed``).
Only then are the subjects stored, in the caller's transaction; on any failure no row and no
file stays. Files wait in a staging folder under the data directory's ``tmp/`` that the
caller removes (``new_staging``); a zip's entries are never used as paths: the few files an
import needs are extracted under generated names.

Tables: a manifest (CSV or TSV; columns subject, image, label and optionally mask, brain_mask,
target, split, site; image, mask and brain_mask name uploaded files) or a BIDS participants.tsv
(participant_id, label or group, and optionally split, site, target). The layout follows the
table's columns. Labels: 0 or 1, or in any case healthy/control (0) and pathological/patient
(1). Splits: train, val, test (empty: train). BIDS images are
``sub-*/[ses-*/]anat/*_T1w|_FLAIR.nii[.gz]``; a brain mask there (or under ``derivatives/*/``)
is named ``*desc-brain*_mask`` or ``*label-brain*_mask``, a lesion mask ``*_mask``,
``*desc-lesion*`` or ``*label-lesion*``. A subject without a brain mask gets one computed from
its image (``backend.services.brainmasks``).

The parts: ``common`` (problems, limits, file names), ``staging`` (staging folders, their
locks and cleanup), ``chunked`` (resumable chunked uploads), ``archive`` (file sets; zip
safety), ``planning`` (the table and the subjects it describes) and ``importer`` (the import
itself). The multipart body of an import is parsed by ``backend.api.multipart``.
"""

from __future__ import annotations

from backend.services.imports.chunked import (
    UploadChunk,
    create_upload,
    delete_upload,
    finish_chunk,
    get_upload,
    list_uploads,
    open_chunk,
    sweep_stale_uploads,
)
from backend.services.imports.common import (
    MAX_TABLE_BYTES,
    ImportFailed,
    Limits,
    Problem,
    StagedFile,
)
from backend.services.imports.importer import ImportResult, import_subjects
from backend.services.imports.staging import drop_staging, new_staging, sweep_orphaned_staging

__all__ = [
    "MAX_TABLE_BYTES",
    "ImportFailed",
    "ImportResult",
    "Limits",
    "Problem",
    "StagedFile",
    "UploadChunk",
    "create_upload",
    "delete_upload",
    "drop_staging",
    "finish_chunk",
    "get_upload",
    "import_subjects",
    "list_uploads",
    "new_staging",
    "open_chunk",
    "sweep_orphaned_staging",
    "sweep_stale_uploads",
]
