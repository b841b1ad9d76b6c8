"""The judge: a second model rereads the answers the rules could not read, as VLMEvalKit does.

Only answers read as unknown are sent; the judge's reply is read by the same rules, and what it
cannot settle stays unknown (scored as wrong). Every verdict is marked in the samples (`rule`
"judge", the judge's own reply beside the answer), so a reader can tell rule from judgement.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from importlib import resources

from verticals.goat.config import GoatError
from verticals.goat.extract import Reading, read_answer
from verticals.goat.prompts import fill
from verticals.llm import LanguageModel, ResponseCache, open_model

_FIELD = re.compile(r"\{(question|answer)\}")


@dataclass(frozen=True)
class Judge:
    """A `verticals.llm` model and the wording that asks it to reread an answer."""

    spec: str
    lm: LanguageModel
    template: str
    max_tokens: int

    @property
    def fingerprint(self) -> str:
        """Changes with the judge model or its wording (recorded in results)."""
        wording = hashlib.sha256(f"{self.template}\x1f{self.max_tokens}".encode()).hexdigest()[:12]
        return f"{wording}:{self.lm.fingerprint}"

    def reread(self, questions: list[str], answers: list[str]) -> list[tuple[str, Reading]]:
        """The judge's reply to each (question, answer), and how that reply reads."""
        conversations = [[{"role": "user", "content": self._ask(q, a)}] for q, a in zip(questions, answers)]
        replies = self.lm.chat_batch(conversations, max_tokens=self.max_tokens, temperature=0.0, progress=True)
        return [(reply, read_answer(reply)) for reply in replies]

    def _ask(self, question: str, answer: str) -> str:
        return fill(self.template, {"question": question, "answer": answer})


def open_judge(spec: str, *, cache: ResponseCache | None, concurrency: int = 8) -> Judge:
    """The judge a `--judge` spec names (`bundled`, a model folder or a server URL), its weights
    loaded on first use, so a rerun whose verdicts are cached never loads them."""
    entry = tomllib.loads(resources.files("verticals.goat").joinpath("judge.toml").read_text("utf-8"))
    template, max_tokens = entry.get("template"), entry.get("max_tokens")
    if not isinstance(template, str) or set(_FIELD.findall(template)) != {"question", "answer"}:
        raise GoatError("judge.toml: the template must contain {question} and {answer}")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise GoatError("judge.toml: max_tokens must be a positive whole number")
    lm = open_model(spec.removeprefix("openai:"), cache=cache, concurrency=concurrency, lazy=True)
    return Judge(spec, lm, template, max_tokens)
