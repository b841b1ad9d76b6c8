"""Rows as zero-shot questions: the template is a data file (`prompts.toml`), filled from the metadata."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from verticals.serval.config import ServalError
from verticals.serval.datasets import Metadata, TabularData

KEYS = ("system", "user", "verbalized", "described_line", "described_meaning", "plain_line", "choices")


@dataclass(frozen=True)
class PromptTemplate:
    """The words around a row; see `prompts.toml` for what each field holds."""

    system: str
    user: str
    verbalized: str
    described_line: str
    described_meaning: str
    plain_line: str
    choices: tuple[str, str]

    @classmethod
    def load(cls, file: str | Path | None = None) -> PromptTemplate:
        """The packaged template, or a user's TOML file with the same keys.

        Raises:
            ServalError: a missing file, bad TOML or a missing key.
        """
        if file is None:
            text = (resources.files("verticals.serval") / "prompts.toml").read_text()
        elif not Path(file).is_file():
            raise ServalError(f"prompt template not found: {file}")
        else:
            text = Path(file).read_text()
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ServalError(f"prompt template {file} is not valid TOML: {err}") from None
        absent = [k for k in KEYS if k not in raw]
        if absent or len(raw.get("choices", [])) != 2:
            raise ServalError(f"prompt template {file or 'prompts.toml'} needs {', '.join(KEYS)} "
                              f"(choices: two answers); missing {absent or ['two choices']}")
        return cls(**{k: raw[k] for k in KEYS if k != "choices"}, choices=tuple(raw["choices"]))


def record(row: Any, meta: Metadata, template: PromptTemplate, style: str = "described") -> str:
    """One row as the lines of a clinical note (`described`) or as raw `column: value` pairs (`plain`)."""
    lines = []
    for feature in meta.features:
        value = row[feature.column]
        if style == "plain":
            missing = value is None or isinstance(value, float) and math.isnan(value)
            if isinstance(value, float) and not missing and value.is_integer():
                value = int(value)  # a row read as floats (a gap elsewhere in it) keeps its codes whole: 1, not 1.0
            lines.append(template.plain_line.format(column=feature.column, value="NA" if missing else value))
            continue
        line = template.described_line.format(name=feature.name, value=feature.text(value), unit=feature.unit,
                                              meaning=feature.meaning, column=feature.column)
        lines.append(line + (template.described_meaning.format(meaning=feature.meaning) if feature.meaning else ""))
    return "\n".join(lines)


def questions(data: TabularData, template: PromptTemplate, style: str = "described",
              kind: str = "user") -> list[list[dict[str, str]]]:
    """A chat per row: the system line, then the record and the question (`kind`: user or verbalized)."""
    meta = data.meta
    body = getattr(template, kind)
    return [[{"role": "system", "content": template.system},
             {"role": "user", "content": body.format(record=record(row, meta, template, style), question=meta.question,
                                                     positive=meta.positive, negative=meta.negative)}]
            for _, row in data.frame.iterrows()]
