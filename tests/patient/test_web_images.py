"""The web API's image side: cited images and the chest diagram in the report view, DICOM and pictures
read from upload bodies (never kept, identifiers never out), every failure in the protocol's shape."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    deflated = ct_slice(tmp_path / "deflated.dcm", np.zeros((8, 8), dtype=np.int16), series=1, image=1, z=0.0,
                        transfer_syntax="1.2.840.10008.1.2.1.99").read_bytes()
    assert "deflated" in error_of(client.post("/api/image/info", content=deflated), 400)["message"]
    assert error_of(client.post("/api/image/info", content=b"\0" * (3 * 2**20)), 413)["code"]


def test_a_model_that_sees_images_is_shown_the_slice_on_screen_end_to_end(tmp_path: Path) -> None:
    """The page's API -> the answer engine -> the OpenAI client -> HTTP -> a multimodal server, and back."""
    import base64
    import json

    import httpx

    from tests.patient.vision_util import Seer
    from tests.patient.web_util import running_app, running_asgi
    from verticals.llm import OpenAIModel

    seer = Seer("The nodule might be in the upper part of the lung, on the left side of the picture.")
    folder = ct_series(tmp_path / "cd")
    with running_asgi(seer.app()) as vision:
        model = OpenAIModel(f"{vision}/v1", "seer", timeout=10.0, max_retries=0)
        with running_app(lambda: model, WebSettings(sees_images=True, model_slots=2)) as url, httpx.Client() as http:
            assert http.get(f"{url}/api/settings").json() == {"sees_images": True, "drafts": True}
            data = (folder / "IM0001").read_bytes()  # image 45
            slice_png = http.post(f"{url}/api/image/render?window=lung", content=data).content
            picture = "data:image/png;base64," + base64.b64encode(slice_png).decode()
            asked = http.post(f"{url}/api/answer", json={"report": REPORT, "question": "Where is the nodule?",
                                                         "image": picture}, timeout=60)
            lines = [json.loads(line) for line in asked.text.splitlines()]
            refused = http.post(f"{url}/api/answer", json={"report": REPORT, "question": "Where is it?",
                                                           "image": "data:image/gif;base64,R0lGOD"})
    final = lines[-1]
    assert final["type"] == "answer" and final["source"] == "model_image"
    assert final["text"].startswith("Looking at the picture you have on screen") and "upper part" in final["text"]
    assert seer.images and np.array_equal(np.asarray(Image.open(io.BytesIO(seer.images[-1]))),
                                          np.asarray(Image.open(io.BytesIO(slice_png))))  # the slice shown
    text_part = next(p for p in seer.requests[-1][-1]["content"] if p["type"] == "text")["text"]
    assert "right upper lobe (series 3, image 45)" in text_part
    assert error_of(refused, 400)["param"] == "image"


def test_a_text_only_server_never_sends_the_picture(tmp_path: Path) -> None:
    import base64
    import json

    import httpx

    from tests.patient.vision_util import Seer
    from tests.patient.web_util import running_app, running_asgi
    from verticals.llm import OpenAIModel

    seer = Seer("A nodule is a small round spot in the lung.")
    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, format="PNG")
    picture = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    with running_asgi(seer.app()) as vision:
        model = OpenAIModel(f"{vision}/v1", "seer", timeout=10.0, max_retries=0)
        with running_app(lambda: model, WebSettings(model_slots=2)) as url, httpx.Client() as http:
            assert http.get(f"{url}/api/settings").json() == {"sees_images": False, "drafts": True}
            asked = http.post(f"{url}/api/answer", json={"report": REPORT, "question": "Where is the nodule?",
                                                         "image": picture}, timeout=60)
    final = json.loads(asked.text.splitlines()[-1])
    assert final["source"] == "template" and seer.images == []
    assert "right upper lobe" in final["text"] and "do not look at the images" in str(final["notices"])


@pytest.mark.slow
def test_the_slice_reaches_our_own_openai_compatible_server_as_an_image_part(bundled_model: Any,
                                                                            tmp_path: Path) -> None:
    """End to end against `verticals llm serve`'s app with the bundled model, which reads image parts by
    OCR (a multimodal model cannot run here): the question with the slice is accepted and answered, and
    whatever the 135M model says is checked; the answer is the checked draft or the report's words."""
    import base64
    import json

    import httpx

    from tests.llm.server_util import running_server
    from tests.patient.web_util import running_app
    from verticals.llm import OpenAIModel

    data = (ct_series(tmp_path / "cd") / "IM0001").read_bytes()
    with running_server(bundled_model, "smollm2", read_images=True) as served:
        model = OpenAIModel(served, "smollm2", timeout=120.0, max_retries=0)
        settings = WebSettings(sees_images=True, model_slots=1, model_wait=120)
        with running_app(lambda: model, settings) as url, httpx.Client(timeout=120) as http:
            slice_png = http.post(f"{url}/api/image/render?window=lung", content=data).content
            picture = "data:image/png;base64," + base64.b64encode(slice_png).decode()
            asked = http.post(f"{url}/api/answer", json={"report": REPORT, "question": "Where is the nodule?",
                                                         "image": picture})
    final = json.loads(asked.text.splitlines()[-1])
    assert final["type"] == "answer" and "model_error" not in final["checks"]  # the server took the image, answered
    if final["source"] == "model_image":  # its words passed every check: introduced as an AI's reading
        assert final["text"].startswith("Looking at the picture you have on screen") and not final["checks"]
    else:
        assert final["source"] == "template" and final["checks"]
        assert final["text"].endswith("marks the parts of the chest your report names.")
