"""The image a patient has: a picture from a patient portal (PNG, JPEG) or a CT series from the CD
the hospital hands out (DICOM: one file, or a folder of one or more series).

Only what a viewer needs leaves a DICOM file: the pixels (in Hounsfield units for CT), the series
and image numbers reports cite, the slice position for ordering and the modality. Names, IDs,
dates, institutions and every other tag are never read into the result, so they cannot reach the
page, an answer or a log. CT is shown through the usual windows (center, width in HU), by the DICOM
standard's linear function (PS3.3 C.11.2.1.2.1).

Example:
    >>> study = read_images("cd/DICOM/series3")                       # doctest: +SKIP
    >>> png = study.png(study.index_of(3, 45), "lung")                # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verticals.patient.config import PatientError

#: center and width in Hounsfield units, as radiology viewers preset them
WINDOWS = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0), "bone": (400.0, 1800.0)}
MAX_FILES = 2000  # slices in one folder: a chest CT series has a few hundred
MAX_FILE_BYTES = 64 * 2**20
MAX_PIXELS = 4096 * 4096  # per slice or picture
PICTURES = (".png", ".jpg", ".jpeg")
DEFLATED = "1.2.840.10008.1.2.1.99"  # the Deflated Explicit VR Little Endian transfer syntax
MAX_META_BYTES = 64 * 1024  # the file meta group a slice starts with is a few hundred bytes
_LONG_VRS = (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN")


@dataclass(frozen=True)
class Slice:
    """One image: its series and image (instance) numbers, its position along the body (mm), its pixels."""

    series: int | None
    image: int | None
    position: float | None
    pixels: np.ndarray


@dataclass(frozen=True)
class Study:
    """The slices, ordered by series, then position (or image number), and their modality ("picture"
    for a PNG or JPEG)."""

    slices: tuple[Slice, ...]
    modality: str
    skipped: int = 0  # DICOM files of a folder that hold no greyscale slice (a DICOMDIR, a dose report)

    @property
    def hounsfield(self) -> bool:
        """CT pixels are Hounsfield units: the windows apply."""
        return self.modality == "CT"

    @property
    def series(self) -> list[int]:
        return sorted({s.series for s in self.slices if s.series is not None})

    def index_of(self, series: int | None, image: int) -> int | None:
        """Where the report's "series 3, image 45" is (series None: the first series that has that image)."""
        for index, one in enumerate(self.slices):
            if one.image == image and (series is None or one.series == series):
                return index
        return None

    def png(self, index: int, window: str | None = None, size: int | None = None) -> bytes:
        """Slice `index` as an 8-bit PNG; CT through `window` (default mediastinum); shrunk to at most
        `size` pixels a side when given."""
        from PIL import Image

        if not 0 <= index < len(self.slices):
            raise PatientError(f"there is no slice {index}: the study has {len(self.slices)}")
        pixels = self.slices[index].pixels
        if self.hounsfield:
            name = window or "mediastinum"
            if name not in WINDOWS:
                raise PatientError(f"unknown window {name!r}; the windows are {', '.join(WINDOWS)}")
            grey = apply_window(pixels, *WINDOWS[name])
        elif pixels.dtype == np.uint8:
            grey = pixels
        else:  # another modality: stretch its own range
            low, high = float(pixels.min()), float(pixels.max())
            grey = apply_window(pixels, (low + high) / 2, max(high - low, 1.0))
        picture = Image.fromarray(grey)
        if size is not None and max(picture.size) > size:
            picture.thumbnail((size, size))
        out = io.BytesIO()
        picture.save(out, format="PNG")  # no text chunks: nothing but pixels
        return out.getvalue()


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """8-bit grey values by the DICOM linear window: below center - 0.5 - (width - 1) / 2 black, above
    center - 0.5 + (width - 1) / 2 white, a straight line between."""
    if width < 1:
        raise PatientError(f"a window's width must be at least 1, got {width}")
    x = values.astype(np.float64)
    scaled = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    scaled = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, scaled)
    scaled = np.where(x > center - 0.5 + (width - 1) / 2, 255.0, scaled)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_images(path: str | Path) -> Study:
    """A picture, a DICOM file, or a folder of DICOM files (other files in it are skipped).

    Raises:
        PatientError: nothing readable, too many or too large files, a compressed DICOM without a
            decoder, or slices of different sizes in one series.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if len(files) > MAX_FILES:
            raise PatientError(f"{path} holds {len(files)} files; a folder of at most {MAX_FILES} slices is read")
        slices, modalities, refused = [], set(), []
        for file in files:
            if not _is_dicom(file):
                continue
            try:
                one, modality = _dicom_slice(file, file.name)
            except PatientError as err:  # a DICOMDIR, a dose report, a screen capture in colour: not a slice
                refused.append(str(err))
                continue
            slices.append(one)
            modalities.add(modality)
        if not slices:
            raise PatientError(refused[0] if refused else f"{path} holds no DICOM file")
        if len(modalities) > 1:
            raise PatientError(f"{path} mixes modalities ({', '.join(sorted(modalities))}); give one study")
        return Study(_ordered(slices), modalities.pop(), skipped=len(refused))
    if not path.is_file():
        raise PatientError(f"image not found: {path}")
    if _is_dicom(path):
        one, modality = _dicom_slice(path, path.name)
        return Study((one,), modality)
    if path.suffix.lower() in PICTURES:
        return Study((Slice(None, None, None, _picture(path.read_bytes(), path.name)),), "picture")
    raise PatientError(f"{path.name} is neither a PNG or JPEG picture nor a DICOM file")


def read_picture(data: bytes, name: str = "upload") -> Study:
    """A PNG or JPEG given as bytes (an upload)."""
    return Study((Slice(None, None, None, _picture(data, name)),), "picture")


def read_upload(data: bytes, name: str = "the file") -> Study:
    """One uploaded file's bytes: a DICOM slice, or a PNG or JPEG picture."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        one, modality = _dicom_slice(data, name)
        return Study((one,), modality)
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        return read_picture(data, name)
    raise PatientError(f"{name} is neither a DICOM file nor a PNG or JPEG picture")


def _picture(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_FILE_BYTES:
        raise PatientError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: the size is checked before pixels
            if image.format not in ("PNG", "JPEG"):
                raise PatientError(f"{name} is a {image.format} image; give a PNG or JPEG")
            if image.width * image.height > MAX_PIXELS:
                raise PatientError(f"{name} is {image.width} x {image.height} pixels; at most {MAX_PIXELS:,} are read")
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit grey: its own range, stretched
                values = np.asarray(image, dtype=np.float64)
                low, high = float(values.min()), float(values.max())
                return apply_window(values, (low + high) / 2, max(high - low, 1.0))
            return np.asarray(image.convert("L"))
    except Image.DecompressionBombError:  # Pillow's own refusal of a huge header, before ours
        raise PatientError(f"{name} is too many pixels; at most {MAX_PIXELS:,} are read") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise PatientError(f"{name} cannot be read as a picture: {err}") from None


def _is_dicom(file: Path) -> bool:
    with file.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _dicom_slice(source: Path | bytes, name: str) -> tuple[Slice, str]:
    """The pixels and the few tags a viewer needs; nothing else is kept. pydicom's warnings and log
    lines quote tag values (a malformed name, say), so they are silenced while it reads."""
    import pydicom

    # process-wide and thread-safe (warning filters are neither): no value is validated, so none is quoted
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    try:
        return _read_slice(source, name)
    except PatientError:
        raise
    except Exception as err:  # noqa: BLE001 - a malformed file trips the parser anywhere: say so, in one line
        raise PatientError(f"{name} cannot be read as DICOM ({type(err).__name__})") from None


def _read_slice(source: Path | bytes, name: str) -> tuple[Slice, str]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PatientError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB")
    if isinstance(source, bytes):
        head = source[:MAX_META_BYTES]
    else:
        with source.open("rb") as handle:
            head = handle.read(MAX_META_BYTES)
    if transfer_syntax(head, name) == DEFLATED:  # inflated whole on reading: a small file could become gigabytes
        raise PatientError(f"{name} is a deflated DICOM file, which is not read here; export it uncompressed")
    try:
        data = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PatientError(f"{name} cannot be read as DICOM: {why}") from None
    rows, columns = int(data.get("Rows", 0)), int(data.get("Columns", 0))
    if "PixelData" not in data or rows * columns == 0:
        raise PatientError(f"{name} holds no image")
    if rows * columns > MAX_PIXELS:
        raise PatientError(f"{name} is {columns} x {rows} pixels; at most {MAX_PIXELS:,} are read")
    frames, samples, bits = (int(data.get(tag) or 1) for tag in ("NumberOfFrames", "SamplesPerPixel", "BitsAllocated"))
    if frames != 1 or samples != 1 or bits > 16:  # checked before decoding: each would be decoded whole first
        raise PatientError(f"{name} holds {frames} frame(s) of {samples} sample(s) at {bits} bits; one greyscale "
                           "slice per file is read")
    try:
        raw = data.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as err:
        syntax = getattr(getattr(data, "file_meta", None), "TransferSyntaxUID", None)
        stored = getattr(syntax, "name", "unknown")
        raise PatientError(f"{name}: its pixels are stored as {stored}, which cannot be decoded here; export "
                           f"the series uncompressed, or the slice as PNG ({type(err).__name__})") from None
    if raw.ndim != 2:
        raise PatientError(f"{name} holds {raw.shape} pixels; one greyscale slice per file is read")
    modality = str(data.get("Modality", "OT"))
    slope, intercept = float(data.get("RescaleSlope", 1) or 1), float(data.get("RescaleIntercept", 0) or 0)
    pixels = raw.astype(np.float32) * slope + intercept
    position = data.get("ImagePositionPatient")
    z = float(position[2]) if position is not None and len(position) == 3 else None
    return Slice(_number(data.get("SeriesNumber")), _number(data.get("InstanceNumber")), z, pixels), modality


def transfer_syntax(head: bytes, name: str) -> str:
    """The transfer syntax named in the file meta group (after the 128-byte preamble and "DICM"), read
    element by element (explicit VR, little endian, as the standard fixes for that group), so the check
    does not depend on where in the file it sits.

    Raises:
        PatientError: a meta group longer than MAX_META_BYTES, cut short, or without a transfer syntax.
    """
    at = 132
    while at + 8 <= len(head) and head[at:at + 2] == b"\x02\x00":  # group 0002
        element, vr = int.from_bytes(head[at + 2:at + 4], "little"), head[at + 4:at + 6]
        if vr in _LONG_VRS:
            length, value_at = int.from_bytes(head[at + 8:at + 12], "little"), at + 12
        else:
            length, value_at = int.from_bytes(head[at + 6:at + 8], "little"), at + 8
        if value_at + length > len(head):
            break
        if element == 0x0010:
            return head[value_at:value_at + length].rstrip(b"\x00 ").decode("ascii", "replace")
        at = value_at + length
    raise PatientError(f"{name} cannot be read as DICOM: its header names no transfer syntax in its first "
                       f"{MAX_META_BYTES // 1024} kB")


def _number(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _ordered(slices: list[Slice]) -> tuple[Slice, ...]:
    """By series, then image number (what reports cite), then position; one size per series."""
    ordered = sorted(slices, key=lambda s: (s.series if s.series is not None else -1,
                                            s.image if s.image is not None else 10**9,
                                            s.position if s.position is not None else 0.0))
    shapes: dict[int | None, tuple[int, ...]] = {}
    for one in ordered:
        if shapes.setdefault(one.series, one.pixels.shape) != one.pixels.shape:
            raise PatientError(f"series {one.series} mixes slice sizes {shapes[one.series]} and {one.pixels.shape}")
    return tuple(ordered)
