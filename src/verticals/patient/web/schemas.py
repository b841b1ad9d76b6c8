"""What the web API takes and gives: typed, bounded, documented in its OpenAPI schema.

Text fields are bounded where the engine is (report 50,000 characters, question 2,000).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from verticals.patient.answer import MAX_QUESTION_CHARS
from verticals.patient.report import MAX_REPORT_CHARS

ReportText = Annotated[str, Field(max_length=MAX_REPORT_CHARS, description="the report's text")]
QuestionText = Annotated[str, Field(max_length=MAX_QUESTION_CHARS, description="the person's question")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportIn(_In):
    text: ReportText


class QuestionIn(_In):
    report: ReportText
    question: QuestionText
    image: str | None = Field(default=None, max_length=2 * 1024 * 1024, description=(
        "the picture on the person's screen as a data:image/png;base64 URL; used only when the server's model "
        "sees images (GET /api/settings)"))


class ServerSettings(BaseModel):
    sees_images: bool = Field(description="the model is shown the picture on screen for questions about it")
    drafts: bool = Field(description="a model drafts answers (else they come from the report's words and templates)")


class ExampleSummary(BaseModel):
    id: str
    title: str


class ExampleList(BaseModel):
    examples: list[ExampleSummary]


class ExampleOut(ExampleSummary):
    text: str


class ThemeOut(BaseModel):
    id: str
    name: str
    description: str
    verified: bool
    suggestions: list[str]


class ThemeList(BaseModel):
    themes: list[ThemeOut]


class Span(BaseModel):
    start: int
    end: int


class ImageCitation(BaseModel):
    series: int | None = Field(description="the series cited; null when the sentence names only an image")
    image: int
    last: int | None = Field(description="the last image of a cited range")
    start: int = Field(description="offset of the citation in the sentence")
    end: int


class SentenceView(BaseModel):
    index: int
    section: str
    start: int
    end: int
    nodes: list[dict[str, Any]] = Field(description="the sentence's text as nested marks: {text} leaves, "
                                                    "{kind: finding|term, ..., children}")
    images: list[ImageCitation] = Field(description="the images this sentence cites (series 3, image 45)")


class SpotOut(BaseModel):
    part: str
    finding: str
    sentence: int
    certainty: Literal["present", "uncertain"]


class UnplacedOut(BaseModel):
    finding: str
    sentence: int
    why: Literal["no place", "elsewhere"]


class DiagramOut(BaseModel):
    svg: str = Field(description="the chest diagram (our own drawing) with the named parts lit")
    parts: dict[str, Literal["present", "uncertain"]] = Field(description="lit part -> strongest claim")
    names: dict[str, str] = Field(description="part -> its name in plain words")
    spots: list[SpotOut]
    unplaced: list[UnplacedOut]


class ImageInfo(BaseModel):
    kind: Literal["dicom", "picture"]
    modality: str
    series: int | None
    image: int | None
    position: float | None
    width: int
    height: int
    windows: list[str] = Field(description="the CT windows this image can be shown through (none for a picture)")


class TermOut(BaseModel):
    term: str
    definition: str


class FindingOut(BaseModel):
    finding: str
    name: str
    certainty: Literal["present", "absent", "uncertain"]
    urgent: bool


class NoticeOut(BaseModel):
    kind: str
    text: str


class ReportView(BaseModel):
    text: str = Field(description="the report as read (line ends normalised); every offset refers to it")
    headings: list[Span]
    sentences: list[SentenceView]
    terms: dict[str, TermOut]
    findings: list[FindingOut]
    notices: list[NoticeOut]
    diagram: DiagramOut
