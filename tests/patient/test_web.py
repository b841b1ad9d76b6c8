"""The patient web API in process: what the page is given, the streamed answer, the limits, the
error shape, the headers, and that nothing a person types reaches the logs or the disk."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from verticals.patient import read_report
from verticals.patient.web import WebSettings, create_app
from verticals.patient.web.app import Drafter, ModelBusy
from verticals.patient.web.view import nest

REPORT = ("EXAMINATION: CT chest.\nFINDINGS: A 4 mm nodule in the right upper lobe (series 3, image 45). "
          "No pleural effusion. Possible ground-glass opacity in the left lower lobe.\n"
          "IMPRESSION: Small nodule, likely benign.")


class Writer:
    """A model whose draft is always the same sentence; counts its calls."""

    def __init__(self, reply: str = "A nodule is a small round spot in the lung.") -> None:
        self.reply, self.calls = reply, 0

    def chat(self, messages: Any, **kwargs: Any) -> str:
        self.calls += 1
        return self.reply


@pytest.fixture(scope="module")
def writer() -> Writer:
    return Writer()


@pytest.fixture(scope="module")
def client(writer: Writer) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: writer, WebSettings(model_wait=0.2))) as test_client:
        yield test_client


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error  # type: ignore[no-any-return]


def events(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def leaves(nodes: list[dict[str, Any]]) -> str:
    return "".join(n["text"] if "text" in n else leaves(n["children"]) for n in nodes)


def test_examples_are_listed_and_each_can_be_fetched(client: TestClient) -> None:
    listed = client.get("/api/examples").json()["examples"]
    assert len(listed) == 10 and listed[0] == {"id": "ct_01", "title": "Follow-up of small lung nodules"}
    example = client.get("/api/examples/ct_02").json()
    assert example["title"] == "Large right pneumothorax" and "pneumothorax" in example["text"].lower()
    assert error_of(client.get("/api/examples/ct_99"), 404)["code"] == "not_found"


def test_themes_offer_suggested_questions_but_not_the_safety_themes(client: TestClient) -> None:
    shown = client.get("/api/themes").json()["themes"]
    ids = [t["id"] for t in shown]
    assert "urgent" not in ids and "off_topic" not in ids
    assert {"terminology", "location", "prognosis", "next_steps", "treatment"} <= set(ids)
    assert all(1 <= len(t["suggestions"]) <= 3 for t in shown)


def test_the_report_view_marks_findings_and_terms_over_the_exact_text(client: TestClient) -> None:
    view = client.post("/api/report", json={"text": REPORT.replace("\n", "\r\n")}).json()
    assert view["text"] == REPORT  # line ends normalised; offsets refer to this text
    for sentence in view["sentences"]:
        assert leaves(sentence["nodes"]) == REPORT[sentence["start"]:sentence["end"]]
    assert [REPORT[h["start"]:h["end"]] for h in view["headings"]] == ["EXAMINATION", "FINDINGS", "IMPRESSION"]
    marks = [n for s in view["sentences"] for n in s["nodes"] if n.get("kind") == "finding"]
    certainty = {leaves(n["children"]).lower(): n["certainty"] for n in marks}
    assert certainty["pleural effusion"] == "absent" and certainty["nodule"] == "present"
    assert certainty["ground-glass opacity"] == "uncertain"
    assert view["terms"]["pulmonary nodule"]["definition"].startswith("A small round spot in the lung")
    assert view["notices"] == []


def test_a_report_with_an_urgent_finding_gets_the_urgent_notice(client: TestClient) -> None:
    view = client.post("/api/report", json={"text": "FINDINGS: Large right tension pneumothorax."}).json()
    assert [n["kind"] for n in view["notices"]] == ["urgent_report"]
    assert any(f["urgent"] for f in view["findings"])


def test_markup_in_a_report_stays_in_plain_text_leaves(client: TestClient) -> None:
    text = 'FINDINGS: <script>alert("x")</script> No pleural effusion. <img src=x onerror=alert(1)>'
    view = client.post("/api/report", json={"text": text}).json()

    def kinds(nodes: list[dict[str, Any]]) -> set[str]:
        return {n.get("kind", "text") for n in nodes} | {k for n in nodes for k in kinds(n.get("children", []))}
    assert kinds([n for s in view["sentences"] for n in s["nodes"]]) <= {"text", "finding", "term"}
    assert "".join(leaves(s["nodes"]) for s in view["sentences"]).count("<script>") == 1
    assert view["text"] == text


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab c", min_size=1, max_size=30),
       spans=st.lists(st.tuples(st.integers(-2, 32), st.integers(-2, 32), st.sampled_from(["finding", "term"])),
                      max_size=6))
def test_nested_marks_always_cover_the_text_exactly_once(text: str, spans: list[tuple[int, int, str]]) -> None:
    marks = [(s, e, {"kind": kind}) for s, e, kind in spans]
    nodes = nest(text, marks)
    assert leaves(nodes) == text

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            if "children" in node:
                assert node["children"] and leaves(node["children"])  # no empty mark
                walk(node["children"])
    walk(nodes)


def test_a_finding_wins_over_a_term_it_partly_overlaps() -> None:
    nodes = nest("pleural effusion", [(0, 10, {"kind": "term", "term": "crossing"}), (8, 16, {"kind": "finding"}),
                                      (0, 16, {"kind": "term", "term": "whole"})])
    assert nodes == [{"kind": "term", "term": "whole", "children": [
        {"text": "pleural "}, {"kind": "finding", "children": [{"text": "effusion"}]}]}]


def test_an_answer_streams_notices_then_pieces_then_the_whole_answer(client: TestClient) -> None:
    lines = events(client.post("/api/answer", json={"report": REPORT, "question": "Where is the nodule?"}))
    kinds = [line["type"] for line in lines]
    assert kinds[-1] == "answer" and kinds.count("answer") == 1 and "piece" in kinds
    final = lines[-1]
    assert "".join(line["text"] for line in lines if line["type"] == "piece") == final["text"]
    assert final["theme"] == "location" and final["source"] == "template"  # location answers never drafted
    assert any("nodule" in c["text"] for c in final["citations"])
    assert all(REPORT[c["start"]:c["end"]] == c["text"] for c in final["citations"])
    assert "question" not in final and final["notices"][-1]["kind"] == "ai"


def test_red_flags_put_the_urgent_notice_first(client: TestClient) -> None:
    question = "I have crushing chest pain right now, what do I do?"
    lines = events(client.post("/api/answer", json={"report": REPORT, "question": question}))
    assert lines[0] == {"type": "notice", "kind": "urgent_question", "text": lines[0]["text"]}
    assert lines[-1]["theme"] == "urgent"


def test_a_drafted_answer_comes_from_the_model_when_it_passes_the_checks(client: TestClient, writer: Writer) -> None:
    before = writer.calls
    final = events(client.post("/api/answer", json={"report": REPORT, "question": "What is a nodule?"}))[-1]
    assert writer.calls == before + 1
    assert final["theme"] == "terminology"
    assert (final["source"], final["text"], final["checks"]) == ("model", writer.reply, [])


def test_a_busy_model_gives_the_template_answer_not_an_error(client: TestClient, writer: Writer) -> None:
    drafter = client.app.state.assistant.drafter  # type: ignore[attr-defined]
    assert drafter._slots.acquire(timeout=1)  # another answer is drafting
    try:
        started = time.monotonic()
        final = events(client.post("/api/answer", json={"report": REPORT, "question": "What is a nodule?"}))[-1]
    finally:
        drafter._slots.release()
    assert final["source"] == "template" and final["checks"] == ["model_error"]
    assert time.monotonic() - started < 5


def test_the_drafter_lets_one_generation_run_and_bounds_the_wait() -> None:
    gate = threading.Event()

    class Slow:
        def chat(self, *args: Any, **kwargs: Any) -> str:
            gate.wait(5)
            return "done"

    drafter = Drafter(Slow(), slots=1, wait=0.1)
    first = threading.Thread(target=drafter.chat, args=([],))
    first.start()
    time.sleep(0.05)
    with pytest.raises(ModelBusy):
        drafter.chat([])
    gate.set()
    first.join(5)
    assert drafter.chat([]) == "done"


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"report": REPORT, "question": "x" * 2001}, "question",
     "The question has 2,001 characters; the most read is 2,000."),
    ({"report": "x" * 50_001, "question": "Why?"}, "report",
     "The report has 50,001 characters; the most read is 50,000."),
    ({"report": REPORT, "question": "   "}, "question", "The question is empty"),
    ({"report": " \n ", "question": "Why?"}, "report", "The report is empty"),
    ({"report": REPORT}, "question", "The request needs 'question'."),
    ({"report": REPORT, "question": "Why?", "save": True}, "save", "Unknown field 'save'."),
    ({"report": REPORT, "question": 3}, "question", "Invalid 'question'"),
])
def test_bad_answer_requests_get_one_clear_400(client: TestClient, body: dict[str, Any], param: str,
                                              message: str) -> None:
    error = error_of(client.post("/api/answer", json=body), 400)
    assert error["param"] == param and error["message"].startswith(message)


def test_bodies_that_are_not_json_objects_get_a_400(client: TestClient) -> None:
    broken = error_of(client.post("/api/report", content=b"{not json", headers={"content-type": "application/json"}),
                      400)
    assert (broken["message"], broken["param"]) == ("The request body is not valid JSON.", None)
    assert error_of(client.post("/api/report"), 400)["message"] == "The request needs a JSON body."
    lone = client.post("/api/report", content=b'{"text": "FINDINGS: \\ud800 nodule."}',
                       headers={"content-type": "application/json"})
    assert error_of(lone, 400)["message"] == "The text holds characters that are not text (a lone UTF-16 surrogate)."
    error_of(client.post("/api/report", json=["a list"]), 400)
    assert error_of(client.get("/api/nothing"), 404)["message"] == "Invalid URL (GET /api/nothing)"


def test_uploads_are_read_and_bounded(client: TestClient) -> None:
    view = client.post("/api/upload", content=REPORT.encode("utf-8-sig"))
    assert view.status_code == 200 and view.json()["text"] == REPORT
    assert error_of(client.post("/api/upload", content=b"\xff\xfe\x00binary"), 400)["message"].startswith(
        "The file is not a text file")
    assert "as a PDF" in error_of(client.post("/api/upload", content=b"%PDF-1.7 broken"), 400)["message"]
    too_big = error_of(client.post("/api/upload", content=b"a" * (2 * 1024 * 1024 + 1)), 413)
    assert "2,097,153 bytes" in too_big["message"] and "at most 2 MB" in too_big["message"]


def test_pdf_uploads_are_read_in_a_child_with_a_deadline(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.patient.pdf_util import form_bomb_pdf, lone_surrogate_pdf, text_pdf
    from verticals.patient.web import upload

    view = client.post("/api/upload", content=text_pdf("FINDINGS: No pleural effusion."))
    assert view.status_code == 200 and view.json()["text"] == "FINDINGS: No pleural effusion."
    odd = client.post("/api/upload", content=lone_surrogate_pdf())  # its font maps a code to a lone surrogate
    assert odd.status_code == 200 and odd.json()["text"].endswith("effusion \ufffd")
    monkeypatch.setattr(upload, "PDF_SECONDS", 2.0)
    started = time.monotonic()
    bomb = form_bomb_pdf()  # under 1 kB; read in process it takes minutes
    assert len(bomb) < 1000
    error = error_of(client.post("/api/upload", content=bomb), 400)
    assert error["message"] == "The file took longer than 2 s to read as a PDF: copy the report's text instead."
    assert time.monotonic() - started < 8
    assert client.post("/api/upload", content=text_pdf("FINDINGS: Stable nodule.")).status_code == 200


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for response in (client.get("/"), client.get("/api/themes"), client.get("/api/examples/none"),
                     client.post("/api/report", json={"text": REPORT}), client.post("/api/report", json={}),
                     client.post("/api/upload", content=b"a" * (3 * 1024 * 1024)), client.get("/nothing")):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store" and len(response.headers["x-request-id"]) == 12


def test_the_page_runs_no_inline_script_and_loads_nothing_from_outside() -> None:
    from importlib import resources

    page = (resources.files("verticals.patient.web") / "static" / "index.html").read_text("utf-8")
    scripts = page.lower().split("<script")[1:]
    assert scripts and all(s.split(">", 1)[0].strip().startswith("src=") and "</script>" in s for s in scripts)
    assert all(s.split(">", 1)[1].startswith("</script>") for s in scripts)  # nothing between the tags
    assert "http://" not in page and "https://" not in page and " on" + "click=" not in page.lower()
    assert "style=" not in page.lower()


def test_nothing_a_person_types_reaches_the_logs_or_the_disk(client: TestClient, caplog: pytest.LogCaptureFixture,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VERTICALS_CACHE_DIR", str(tmp_path / "cache"))
    secret_report = REPORT + " Zebrafinch-7731 lives at 12 Quillby Lane."
    secret_question = "What is a nodule, asks Marigold Quenby?"
    with caplog.at_level(logging.DEBUG):
        client.post("/api/report", json={"text": secret_report})
        events(client.post("/api/answer", json={"report": secret_report, "question": secret_question}))
        client.post("/api/answer", json={"report": secret_report, "question": secret_question * 100})
        client.post("/api/upload", content=secret_report.encode())
        client.get("/api/examples/Zebrafinch-7731")
        client.get("/static/Marigold-Quenby-lung")
        client.request("QUILLBY", "/api/themes")
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))  # the server's
    assert "request=" in logged and "theme=terminology" in logged and "status=400" in logged
    assert "GET (other path) status=404" in logged and "(other) /api/themes status=405" in logged
    for secret in ("Zebrafinch", "Quillby", "Marigold", "Quenby", "nodule"):
        assert secret not in logged
    assert list(tmp_path.iterdir()) == []


def test_settings_are_checked_when_made() -> None:
    from verticals.patient import PatientError

    with pytest.raises(PatientError, match="model_wait"):
        WebSettings(model_wait=0)
    with pytest.raises(PatientError, match="max_upload_bytes"):
        WebSettings(max_upload_bytes=0)


def test_the_report_view_of_every_example_covers_its_sentences() -> None:
    from verticals.patient.examples import examples
    from verticals.patient.web.view import report_view

    for example in examples().values():
        report = read_report(example.text)
        view = report_view(report)
        assert len(view["sentences"]) == len(report.sentences)
        for sentence in view["sentences"]:
            assert leaves(sentence["nodes"]) == report.text[sentence["start"]:sentence["end"]]
