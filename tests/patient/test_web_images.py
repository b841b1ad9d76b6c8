"""The web API's image side: cited images and the chest diagram in the report view, DICOM and pictures
read from upload bodies (never kept, identifiers never out), every failure in the protocol's shape."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.patient.dicom_util import SECRETS, ct_series, ct_slice
from tests.patient.test_web import REPORT, Writer, error_of
from verticals.patient.imaging import WINDOWS, apply_window
from verticals.patient.web import WebSettings, create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(lambda: Writer(), WebSettings(model_wait=0.2))) as test_client:
        yield test_client


def test_the_report_view_carries_cited_images_and_the_lit_diagram(client: TestClient) -> None:
    view = client.post("/api/report", json={"text": REPORT}).json()
    cited = [(s["index"], s["images"]) for s in view["sentences"] if s["images"]]
    assert len(cited) == 1 and [(i["series"], i["image"]) for i in cited[0][1]] == [(3, 45)]
    sentence = next(s for s in view["sentences"] if s["images"])
    where = sentence["images"][0]
    text = view["text"][sentence["start"]:sentence["end"]]
    assert text[where["start"]:where["end"]] == "series 3, image 45"
    diagram = view["diagram"]
    assert diagram["parts"] == {"right_upper_lobe": "present", "left_lower_lobe": "uncertain"}
    assert diagram["names"]["right_upper_lobe"] == "right upper lobe" and "<svg" in diagram["svg"]
    assert {s["finding"] for s in diagram["spots"]} == {"lung nodule", "ground-glass opacity"}


def test_a_dicom_slice_is_described_and_drawn_through_each_window(client: TestClient, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    folder = ct_series(tmp_path / "cd")
    data = next(f for f in sorted(folder.iterdir()) if f.name.startswith("IM")).read_bytes()
    info = client.post("/api/image/info", content=data).json()
    assert info == {"kind": "dicom", "modality": "CT", "series": 3, "image": 46, "position": -460.0,
                    "width": 16, "height": 16, "windows": list(WINDOWS)}
    hu = np.tile(np.linspace(-1000, 1000, 16), (16, 1)).astype(np.int16) + 200  # what ct_series wrote as image 46
    for window in WINDOWS:
        drawn = client.post(f"/api/image/render?window={window}", content=data)
        assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(drawn.content))),
                              apply_window(hu.astype(np.float32), *WINDOWS[window]))
        for secret in SECRETS:
            assert secret.encode() not in drawn.content
    for secret in SECRETS:
        assert secret not in str(info) and secret not in caplog.text


def test_a_picture_is_drawn_as_it_is(client: TestClient) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    png = io.BytesIO()
    Image.fromarray(grey).save(png, format="PNG")
    info = client.post("/api/image/info", content=png.getvalue()).json()
    assert info["kind"] == "picture" and info["windows"] == [] and info["series"] is None
    drawn = client.post("/api/image/render?window=lung", content=png.getvalue())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(drawn.content))), grey)


def test_what_cannot_be_drawn_is_a_400_in_the_protocols_shape(client: TestClient, tmp_path: Path) -> None:
    assert error_of(client.post("/api/image/info", content=b""), 400)["code"] == "invalid_image"
    hello = client.post("/api/image/info", content=b"hello")
    assert "neither a DICOM file nor a PNG" in error_of(hello, 400)["message"]
    packed = ct_slice(tmp_path / "jpeg.dcm", np.zeros((8, 8), dtype=np.int16), series=1, image=1, z=0.0,
                      transfer_syntax="1.2.840.10008.1.2.4.70").read_bytes()
    assert "cannot be decoded here" in error_of(client.post("/api/image/render", content=packed), 400)["message"]
    cut = ct_series(tmp_path / "cd").joinpath("IM0000").read_bytes()[:400]  # a file cut short
    assert error_of(client.post("/api/image/info", content=cut), 400)["code"] == "invalid_image"
    assert error_of(client.post("/api/image/render?window=soft", content=cut), 400)["param"] == "window"
    deflated = bytearray(cut)
    deflated[200:222] = b"1.2.840.10008.1.2.1.99"
    assert "deflated" in error_of(client.post("/api/image/info", content=bytes(deflated)), 400)["message"]
    assert error_of(client.post("/api/image/info", content=b"\0" * (3 * 2**20)), 413)["code"]
