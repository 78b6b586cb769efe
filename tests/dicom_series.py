"""A small MR DICOM series written with pydicom, with identifying headers to look for later.

The series is axial: ``n_slices`` slices of ``size`` x ``size`` voxels (1 x 1 mm, 2 mm apart),
with the positions, orientation, spacing and thickness dcm2niix needs to stack them into one
volume, and a bright sphere so the volume is not empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "SECRET123"
# What must never be stored: the name, its parts and the patient's ID.
IDENTIFYING = (PATIENT_NAME, "Doe", "Jane", PATIENT_ID)


def dicom_series(
    folder: Path,
    *,
    n_slices: int = 8,
    size: int = 16,
    description: str = "T1 MPRAGE Doe",
    patient_name: str = PATIENT_NAME,
    patient_id: str = PATIENT_ID,
) -> list[Path]:
    """Write the series as ``folder/IM0001`` ... (no suffix, as scanners do); the paths."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    zz, yy, xx = np.mgrid[:n_slices, :size, :size]
    centre = ((n_slices - 1) / 2, (size - 1) / 2, (size - 1) / 2)
    r2 = ((zz - centre[0]) * 2) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    volume = np.where(r2 < (size / 3) ** 2, 800, 100).astype(np.uint16)
    volume += (np.arange(volume.size, dtype=np.uint16) % 7).reshape(volume.shape)
    paths = []
    for k in range(n_slices):
        instance = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = instance
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = instance
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.InstitutionName = "Jane Doe Memorial"
        ds.ReferringPhysicianName = "Doe^John"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240102"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = "101010"
        ds.AccessionNumber = "ACC" + patient_id
        ds.StudyID = "1"
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.MagneticFieldStrength = 3
        ds.RepetitionTime = 2300
        ds.EchoTime = 2.98
        ds.InversionTime = 900
        ds.FlipAngle = 9
        ds.ScanningSequence = ["GR", "IR"]
        ds.SequenceVariant = ["SK", "SP", "MP"]
        ds.MRAcquisitionType = "3D"
        ds.SeriesDescription = description
        ds.ProtocolName = description
        ds.SeriesNumber = 3
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.SpacingBetweenSlices = 2.0
        ds.SliceLocation = 2.0 * k
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = volume[k].tobytes()
        path = folder / f"IM{k + 1:04d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
