"""Raw DICOM is refused: DICOM headers name the patient, so a DICOM series is converted to NIfTI
in the browser (the dataset page's DICOM import, with dcm2niix compiled to WebAssembly) and
only the NIfTI is sent. A DICOM file is recognised by its bytes: the 128-byte preamble, then
``DICM``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DICOM_HEAD_BYTES", "DICOM_REFUSED", "is_dicom", "is_dicom_file"]

DICOM_HEAD_BYTES = 132  # the preamble and the magic word after it
DICOM_REFUSED = (
    "raw DICOM is refused: its headers identify the patient. Convert the series to NIfTI in "
    "the browser with the dataset page's DICOM import ('Convert a DICOM folder…'), which "
    "sends only the NIfTI image; see the user guide, 'DICOM import'"
)


def is_dicom(head: bytes) -> bool:
    """Whether these first bytes of a file are a DICOM file's (``DICM`` at byte 128)."""
    return len(head) >= DICOM_HEAD_BYTES and head[128:DICOM_HEAD_BYTES] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    with path.open("rb") as fh:
        return is_dicom(fh.read(DICOM_HEAD_BYTES))
