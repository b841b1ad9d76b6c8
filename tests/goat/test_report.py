"""`report.html` of a real run (replayed answers on the fixture): the misclassified memes, escaping, the fixture
banner, placeholders for missing images, thumbnails."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from verticals.goat import report
from verticals.goat.runner import EvalSettings, evaluate

SCRIPT = "<script>alert(1)</script>"
WORDS = {"sarcasm": ("non-sarcastic", "sarcastic"), "hatefulness": ("non-hateful", "hateful")}


class Page(HTMLParser):
    """What a reader sees: per task, each gallery meme's picture (or placeholder) and fields; every tag."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.confusion: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._task: str | None = None
        self._meme: dict[str, Any] | None = None
        self._capture: str | None = None
        self._text: list[str] = []
        self._key = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._task = a["data-task"]
            self.tasks[self._task] = []
        elif tag == "figure":
            self._meme = {"id": a["data-meme"], "img": None, "placeholder": None, "fields": {}}
            self.tasks[self._task].append(self._meme)  # type: ignore[index]
        elif tag == "img" and self._meme is not None:
            self._meme["img"] = a["src"]
        elif tag == "table" and a.get("class") == "confusion":
            self._table = self.confusion[self._task] = []  # type: ignore[index]
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        if tag in ("dt", "dd", "td", "th") or (tag == "div" and a.get("class") == "no-image"):
            self._capture, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._capture:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._meme = None
        if tag == "table":
            self._table = None
        if tag != self._capture:
            return
        text, self._capture = "".join(self._text), None
        if tag in ("td", "th"):
            if self._table is not None:
                self._table[-1].append(text)
        elif tag == "dt":
            self._key = text
        elif tag == "dd":
            self._meme["fields"][self._key] = text  # type: ignore[index]
        else:
            self._meme["placeholder"] = text  # type: ignore[index]

    def gallery(self, task: str) -> dict[str, dict[str, Any]]:
        return {m["id"]: m for m in self.tasks[task]}


def records(data: Path, task: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / task / "test.jsonl").read_text().splitlines()]


def intended(i: int, gold: int) -> int | None:
    """The label each replayed answer means: right, wrong, unreadable or missing, in turn."""
    return [gold, 1 - gold, None, None][i % 4]


def answer_for(i: int, gold: int) -> str | None:
    return [("Yes" if gold else "No"), ("No" if gold else "Yes"), "Perhaps, hard to say.", None][i % 4]


def run(data: Path, out: Path, tasks: tuple[str, ...], answer=answer_for) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Evaluate replayed answers (`answer(i, gold)`, None: no line) on `tasks`; returns results."""
    lines = []
    for task in tasks:
        for i, row in enumerate(records(data, task)):
            text = answer(i, row["label"])
            if text is not None:
                lines.append(json.dumps({"id": row["id"], "task": task, "answer": text}) + "\n")
    answers = out.parent / f"{out.name}-answers.jsonl"
    answers.write_text("".join(lines))
    return evaluate(EvalSettings(data, f"replay:{answers}", out, tasks=",".join(tasks), max_unknown=1.0))


def page(out: Path) -> tuple[str, Page]:
    text = (out / "report.html").read_text(encoding="utf-8")
    return text, Page(text)


def test_the_gallery_holds_exactly_the_misclassified_memes(fixture_set: Path, tmp_path: Path) -> None:
    run(fixture_set, tmp_path / "run", ("sarcasm", "hatefulness"))
    _, html = page(tmp_path / "run")
    assert list(html.tasks) == ["sarcasm", "hatefulness"]
    for task in html.tasks:
        rows = records(fixture_set, task)
        expected = {r["id"]: intended(i, r["label"]) for i, r in enumerate(rows)
                    if intended(i, r["label"]) != r["label"]}
        gallery = html.gallery(task)
        assert set(gallery) == set(expected) and len(html.tasks[task]) == len(expected)
        negative, positive = WORDS[task]
        for i, row in enumerate(rows):
            if row["id"] not in expected:
                continue
            fields = gallery[row["id"]]["fields"]
            assert fields["caption"] == row["text"]
            assert fields["gold"] == (positive if row["label"] else negative)
            assert fields["predicted"] == {0: negative, 1: positive, None: "unknown (not read as Yes or No)"}[
                expected[row["id"]]]
            assert fields["answer"] == (answer_for(i, row["label"]) or "(no answer)")
        # the confusion matrix: gold down, predicted 0 / 1 / unknown across
        head, *lines = html.confusion[task]
        assert head[1:] == [f"predicted {negative}", f"predicted {positive}", "unknown"]
        assert [line[0] for line in lines] == [f"gold {negative}", f"gold {positive}"]
        counts = [[sum(r["label"] == g and intended(i, r["label"]) == p for i, r in enumerate(rows))
                   for p in (0, 1, None)] for g in (0, 1)]
        assert [[int(c) for c in line[1:]] for line in lines] == counts


def test_the_gallery_is_capped_and_points_to_the_samples(fixture_set: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "GALLERY_SIZE", 3)
    run(fixture_set, tmp_path / "run", ("sarcasm",), answer=lambda i, gold: "No" if gold else "Yes")
    text, html = page(tmp_path / "run")
    assert len(html.tasks["sarcasm"]) == 3
    assert "7 more in samples_sarcasm.jsonl" in text


def test_markup_in_captions_answers_and_ids_is_escaped(memes: Path, tmp_path: Path) -> None:
    rows = records(memes, "sarcasm")
    rows[0]["text"] = f"{SCRIPT} & 'quoted'"
    rows[1]["id"] = 'x"><script>alert(2)</script>'
    (memes / "sarcasm" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(memes, tmp_path / "run", ("sarcasm",), answer=lambda i, gold: SCRIPT if i < 2 else ("Yes" if gold else "No"))
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples_sarcasm.jsonl").read_text().splitlines()]
    samples[0]["judge"] = {"verdict": SCRIPT}
    (tmp_path / "run" / "samples_sarcasm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    report.write_report(tmp_path / "run", json.loads((tmp_path / "run" / "results.json").read_text()))

    text, html = page(tmp_path / "run")
    assert "<script" not in text.lower() and not any(tag == "script" for tag, _ in html.tags)
    gallery = html.gallery("sarcasm")
    assert set(gallery) == {rows[0]["id"], rows[1]["id"]}  # the id survives, as data
    assert gallery[rows[0]["id"]]["fields"]["caption"] == f"{SCRIPT} & 'quoted'"
    assert gallery[rows[1]["id"]]["fields"]["answer"] == SCRIPT
    assert SCRIPT in gallery[rows[0]["id"]]["fields"]["judge"]
    policy = next(a["content"] for tag, a in html.tags if tag == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in policy and "script-src" not in policy  # nothing falls back to allowing scripts
    assert all(a["src"].startswith("data:") for tag, a in html.tags if "src" in a)  # loads nothing
    assert not any(tag == "link" or "href" in a for tag, a in html.tags)


def test_the_fixture_banner_shows_for_a_fixture_run_only(memes: Path, tmp_path: Path) -> None:
    run(memes, tmp_path / "fixture", ("sarcasm",))
    (memes / "goat.toml").unlink()  # the same memes as a meme set of one's own
    results = run(memes, tmp_path / "own", ("sarcasm",))
    assert not results["fixture"]
    fixture_text, fixture_html = page(tmp_path / "fixture")
    own_text, own_html = page(tmp_path / "own")
    assert any(a.get("class") == "fixture" for _, a in fixture_html.tags) and "not GOAT-Bench" in fixture_text
    assert not any(a.get("class") == "fixture" for _, a in own_html.tags) and "GOAT-Bench" not in own_text


def test_missing_or_broken_images_show_a_placeholder(memes: Path, tmp_path: Path) -> None:
    rows = records(memes, "sarcasm")
    image = {r["id"]: memes / "sarcasm" / r["image"] for r in rows}
    image[rows[0]["id"]].unlink()  # gone before the run: the sample has no image
    wrong = lambda i, gold: "No" if gold else "Yes"  # noqa: E731
    results = run(memes, tmp_path / "run", ("sarcasm",), answer=wrong)
    image[rows[1]["id"]].unlink()  # gone after the run: the sample names a file that is not there
    image[rows[2]["id"]].write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    (tmp_path / "run" / "report.html").unlink()
    report.write_report(tmp_path / "run", results)

    _, html = page(tmp_path / "run")
    gallery = html.gallery("sarcasm")
    assert len(gallery) == len(rows)
    for row, why in zip(rows[:3], ("no image", "image not found", "image not readable")):
        assert gallery[row["id"]]["img"] is None and gallery[row["id"]]["placeholder"] == why
    assert all(gallery[r["id"]]["img"] and gallery[r["id"]]["placeholder"] is None for r in rows[3:])


def test_thumbnails_are_decodable_jpegs_of_at_most_160_px(memes: Path, tmp_path: Path) -> None:
    rows = records(memes, "sarcasm")
    Image.new("RGB", (120, 900), "red").save(memes / "sarcasm" / rows[0]["image"])  # tall
    Image.new("RGBA", (50, 30), (0, 0, 255, 128)).save(memes / "sarcasm" / rows[1]["image"])  # small, not enlarged
    run(memes, tmp_path / "run", ("sarcasm",), answer=lambda i, gold: "No" if gold else "Yes")
    _, html = page(tmp_path / "run")
    sizes = {}
    for meme in html.tasks["sarcasm"]:
        head, _, data = meme["img"].partition(",")
        assert head == "data:image/jpeg;base64"
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as picture:
            picture.load()
            assert picture.format == "JPEG"
            sizes[meme["id"]] = picture.size
    assert len(sizes) == len(rows) and all(max(size) <= report.THUMBNAIL_PX for size in sizes.values())
    assert sizes[rows[0]["id"]] == (21, 160) and sizes[rows[1]["id"]] == (50, 30)
    assert sizes[rows[2]["id"]] == (160, 120)  # the fixture's 360 x 270
