"""The image beside the report: windows by the DICOM formula, a CT series read in order, identifiers never out."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.patient.dicom_util import SECRETS, ct_series, ct_slice
from verticals.patient.config import PatientError
from verticals.patient.imaging import WINDOWS, apply_window, read_images, read_picture

# (window, HU, grey) worked by hand from PS3.3 C.11.2.1.2.1: lung is center -600, width 1500, so black
# at or below -1350 and white above 149; mediastinum is 40 / 400: black at or below -160, white above 239.
HAND = [
    ("lung", -2000, 0), ("lung", -1350, 0), ("lung", -600, 128), ("lung", 0, 230), ("lung", 149, 255),
    ("lung", 150, 255), ("mediastinum", -160, 0), ("mediastinum", 40, 128), ("mediastinum", 100, 166),
    ("mediastinum", 239, 255), ("mediastinum", 1000, 255), ("bone", 400, 128), ("bone", -500, 0),
]


@pytest.mark.parametrize(("window", "hu", "grey"), HAND)
def test_windows_give_the_grey_values_worked_by_hand(window: str, hu: int, grey: int) -> None:
    assert int(apply_window(np.array([hu]), *WINDOWS[window])[0]) == grey


def test_a_series_is_read_in_order_and_a_cited_image_is_found(tmp_path: Path) -> None:
    study = read_images(ct_series(tmp_path / "cd"))
    assert study.modality == "CT" and study.series == [3]
    assert [(s.series, s.image) for s in study.slices] == [(3, 44), (3, 45), (3, 46)]
    assert study.index_of(3, 45) == 1 and study.index_of(None, 46) == 2 and study.index_of(4, 45) is None
    first = study.slices[0].pixels
    assert first[0, 0] == -1000 and first[0, -1] == 1000  # stored + rescale intercept: Hounsfield units
    grey = np.asarray(Image.open(io.BytesIO(study.png(0, "lung"))))
    assert grey.shape == (16, 16) and grey[0, 0] == 60 and grey[0, -1] == 255  # -1000 HU: (-399.5 / 1499 + 0.5) x 255


def test_identifiers_in_the_tags_never_reach_the_result_the_pictures_or_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    study = read_images(ct_series(tmp_path / "cd"))
    shown = repr(study) + repr(study.slices) + "".join(study.png(i, w).decode("latin-1")
                                                       for i in range(3) for w in WINDOWS)
    for secret in SECRETS:
        assert secret not in shown and secret not in caplog.text, secret


def test_a_picture_from_a_portal(tmp_path: Path) -> None:
    picture = tmp_path / "ct.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(picture)
    study = read_images(picture)
    assert study.modality == "picture" and not study.hounsfield
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(study.png(0)))), np.arange(64).reshape(8, 8))
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, format="GIF")
    with pytest.raises(PatientError, match="is a GIF image; give a PNG or JPEG"):
        read_picture(gif.getvalue(), "scan.gif")


def test_what_cannot_be_read_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PatientError, match="holds no DICOM file"):
        read_images(tmp_path / "empty")
    with pytest.raises(PatientError, match="image not found"):
        read_images(tmp_path / "absent.dcm")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PatientError, match="neither a PNG or JPEG picture nor a DICOM file"):
        read_images(tmp_path / "notes.txt")
    packed = ct_slice(tmp_path / "jpeg.dcm", np.zeros((8, 8), dtype=np.int16), series=1, image=1, z=0.0,
                      transfer_syntax="1.2.840.10008.1.2.4.70")  # JPEG Lossless, its bytes not JPEG at all
    with pytest.raises(PatientError, match="cannot be decoded here; export the series uncompressed"):
        read_images(packed)
    with pytest.raises(PatientError, match="unknown window 'soft'"):
        read_images(ct_series(tmp_path / "cd")).png(0, "soft")


def test_the_cli_shows_the_slice_a_report_cites_and_says_nothing_of_the_patient(tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    cd = ct_series(tmp_path / "cd" / "DICOM")
    report = tmp_path / "report.txt"
    report.write_text("FINDINGS: A 6 mm nodule in the right upper lobe (image 45 of series 3). Old rib fracture.\n")
    shown = run_cli("patient", "image", str(tmp_path / "cd"), "--report", str(report), "--window", "lung",
                    "--out", str(tmp_path / "slice.png"), tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "series 3, image 45 (2 of 3, lung window)" in shown.stdout
    assert np.array_equal(np.asarray(Image.open(tmp_path / "slice.png")),
                          np.asarray(Image.open(io.BytesIO(read_images(cd).png(1, "lung")))))
    for secret in SECRETS:
        assert secret not in shown.stdout + shown.stderr
    missing = run_cli("patient", "image", str(cd), "--series", "3", "--image", "99", "--out",
                      str(tmp_path / "x.png"), tmp_path=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no image 99 in series 3 here (series: 3; images 44-46)"
    drawn = run_cli("patient", "diagram", str(report), "--out", str(tmp_path / "chest.svg"), tmp_path=tmp_path)
    assert drawn.returncode == 0 and "right upper lobe: lung nodule" in drawn.stdout
    assert "rib fracture: not in the chest drawing" in drawn.stdout and (tmp_path / "chest.svg").is_file()


def test_a_malformed_value_pydicom_would_quote_reaches_no_warning_and_no_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.WARN)  # its default
    monkeypatch.setattr(logging.getLogger("pydicom"), "level", logging.NOTSET)
    file = ct_series(tmp_path / "cd") / "IM0000"
    series = b"\x20\x00\x11\x00IS\x02\x003 "  # (0020,0011) IS "3 ": replaced by an ID where a number belongs
    assert series in file.read_bytes()
    file.write_bytes(file.read_bytes().replace(series, b"\x20\x00\x11\x00IS\x0c\x00MRN-99887766"))
    caplog.set_level(logging.DEBUG)
    study = read_images(file)
    assert study.slices[0].series is None and study.slices[0].image == 46
    said = caplog.text + " ".join(str(w.message) for w in recwarn)
    for secret in SECRETS:
        assert secret not in said, secret



@pytest.mark.parametrize("padding", [0, 6000])
def test_a_deflated_file_is_refused_before_it_is_inflated_wherever_its_header_names_it(tmp_path: Path,
                                                                                       padding: int) -> None:
    file = ct_slice(tmp_path / "deflated.dcm", np.zeros((8, 8), dtype=np.int16), series=1, image=1, z=0.0,
                    transfer_syntax="1.2.840.10008.1.2.1.99", meta_padding=padding)
    with pytest.raises(PatientError, match="is a deflated DICOM file, which is not read here"):
        read_images(file)
    long = ct_slice(tmp_path / "long.dcm", np.zeros((8, 8), dtype=np.int16), series=1, image=1, z=0.0,
                    meta_padding=70_000)
    with pytest.raises(PatientError, match="its header names no transfer syntax in its first 64 kB"):
        read_images(long)


def test_a_huge_picture_header_and_a_16_bit_picture(tmp_path: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))  # 1.6 billion pixels claimed
    with pytest.raises(PatientError, match="pixels"):
        read_picture(huge, "huge.png")
    deep = np.linspace(1000, 3000, 64).astype(np.uint16).reshape(8, 8)
    png = io.BytesIO()
    Image.fromarray(deep).save(png, format="PNG")
    grey = read_picture(png.getvalue()).slices[0].pixels
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 30  # stretched, not clipped white


def test_a_folder_skips_dicom_files_that_hold_no_slice(tmp_path: Path) -> None:
    import pydicom

    folder = ct_series(tmp_path / "cd")
    report = pydicom.dcmread(folder / "IM0000")
    del report.PixelData  # as a dose report or a DICOMDIR: DICOM, but no picture
    report.save_as(folder / "DOSE")
    study = read_images(folder)
    assert len(study.slices) == 3 and study.skipped == 1
