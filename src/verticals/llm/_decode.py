"""Token-by-token generation with a KV cache, for chat, streaming and served log-probabilities.

One loop serves `LocalModel.chat`, `.stream` and the OpenAI-compatible server, so all three see
the same tokens, the same stop handling and the same log-probabilities (of the model's own
distribution, before temperature, as OpenAI reports them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class TokenStep:
    """One generated token: its id, log-probability and the most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@torch.inference_mode()
def decode(model: torch.nn.Module, input_ids: Sequence[int], *, max_tokens: int, temperature: float,
           top_p: float, seed: int | None, eos_ids: set[int], top_logprobs: int = 0) -> Iterator[TokenStep]:
    """Yield generated tokens until an end-of-sequence token or `max_tokens`.

    Sampling uses a private generator (seeded by `seed`, else fresh entropy): the global RNG is never touched.
    """
    device = next(model.parameters()).device
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    ids = torch.tensor([list(input_ids)], device=device)
    cache = None
    for _ in range(max_tokens):
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
        token = _choose(logp, temperature, top_p, generator)
        top = []
        if top_logprobs:
            values, indices = logp.topk(top_logprobs)
            top = list(zip(indices.tolist(), values.tolist()))
        yield TokenStep(token, float(logp[token]), top)
        if token in eos_ids:
            return
        ids = torch.tensor([[token]], device=device)


def _choose(logp: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    if temperature == 0:
        return int(logp.argmax())
    # shift first, in float64: the top token scores 0 at any temperature, so a tiny temperature
    # (1e-45) gives -inf elsewhere and a clean one-hot instead of inf/inf = nan
    scaled = (logp.double() - logp.max().double()) / temperature
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs > top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class TextAssembler:
    """Turns token ids into text pieces, holding back what might still become a stop string.

    Args:
        detokenize: ids -> text (special tokens skipped).
        stop: strings that end the reply; they are not part of it.
    """

    def __init__(self, detokenize: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self._detokenize = detokenize
        self._stop = tuple(stop)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._ids: list[int] = []
        self.sent = 0  #: characters of the text shown so far
        self.length = 0  #: characters of the text decoded so far (shown or held back)
        self.stopped = False
        self.cut: int | None = None  #: where the earliest stop string began, once one was found

    def add(self, token_id: int) -> str:
        """The new text that can be shown after `token_id` (possibly empty)."""
        self._ids.append(token_id)
        text = self._detokenize(self._ids)
        self.length = len(text)
        hits = [at for stop in self._stop if (at := text.find(stop)) != -1]
        if hits:  # cut at the earliest stop string, whichever it is
            self.stopped, self.cut = True, min(hits)
            return self._emit(text[: self.cut])
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the next token
            return ""
        return self._emit(text[: max(self.sent, len(text) - self._hold)])

    def flush(self) -> str:
        """What was held back, once generation has ended."""
        if self.stopped:
            return ""
        return self._emit(self._detokenize(self._ids).rstrip("\ufffd"))

    def _emit(self, text: str) -> str:
        piece = text[self.sent :]
        self.sent = max(self.sent, len(text))
        return piece
