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


class SentenceView(BaseModel):
    index: int
    section: str
    start: int
    end: int
    nodes: list[dict[str, Any]] = Field(description="the sentence's text as nested marks: {text} leaves, "
                                                    "{kind: finding|term, ..., children}")


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
