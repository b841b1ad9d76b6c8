"""A synthetic CT series written with pydicom: a few slices whose tags hold identifiers that must never surface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "MRN-99887766", "PatientBirthDate": "19610203",
               "InstitutionName": "St Example Hospital", "AccessionNumber": "ACC-55443",
               "ReferringPhysicianName": "Smith^Alan", "StudyDate": "20261130"}
#: what the patient's identifiers look like in any text or bytes
SECRETS = ("Doe", "Jane", "MRN-99887766", "19610203", "St Example", "ACC-55443", "Smith", "20261130")


def ct_slice(file: Path, hu: np.ndarray, *, series: int, image: int, z: float,
             transfer_syntax: str | None = None, meta_padding: int = 0) -> Path:
    """One CT slice holding `hu` (stored as hu + 1024, rescale intercept -1024), with identifiers."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    if meta_padding:  # a long header field before the transfer syntax (the standard allows it)
        meta.FileMetaInformationVersion = b"\x00\x01" + b"\x00" * meta_padding
    data = FileDataset(str(file), {}, file_meta=meta, preamble=b"\0" * 128)
    for tag, value in IDENTIFIERS.items():
        setattr(data, tag, value)
    data.Modality = "CT"
    data.SOPClassUID = CTImageStorage
    data.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    data.SeriesNumber = series
    data.InstanceNumber = image
    data.ImagePositionPatient = [0.0, 0.0, z]
    data.Rows, data.Columns = hu.shape
    data.SamplesPerPixel = 1
    data.PhotometricInterpretation = "MONOCHROME2"
    data.BitsAllocated = 16
    data.BitsStored = 16
    data.HighBit = 15
    data.PixelRepresentation = 0
    data.RescaleIntercept = -1024
    data.RescaleSlope = 1
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16).tobytes()
    if transfer_syntax is None or transfer_syntax == "1.2.840.10008.1.2.1.99":  # deflated: whole, not fragments
        data.PixelData = stored
    else:  # a compressed syntax: the bytes go in fragments (here not really compressed: a decoder must fail)
        from pydicom.encaps import encapsulate

        data.PixelData = encapsulate([stored])
    data.save_as(file, enforce_file_format=True)
    return file


def ct_series(folder: Path, images: tuple[int, ...] = (44, 45, 46), series: int = 3) -> Path:
    """Slices written out of order (the reader must order them); slice k's pixels are HU ramps plus 100 k."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(reversed(images)):
        hu = np.tile(np.linspace(-1000, 1000, 16), (16, 1)).astype(np.int16) + 100 * (len(images) - 1 - k)
        ct_slice(folder / f"IM{k:04d}", hu, series=series, image=image, z=-10.0 * image)
    (folder / "DICOMDIR.txt").write_text("not a slice")  # what a CD also holds: skipped
    return folder
