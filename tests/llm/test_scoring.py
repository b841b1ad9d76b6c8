"""`choice_logprobs` (prefix sharing, tree branches, packing) against a naive forward pass per option."""

from __future__ import annotations

import random

import numpy as np
import pytest

from verticals.llm._scoring import choice_logprobs, common_prefix_length, pack_batches


@pytest.fixture(scope="module")
def net(tiny_model):
    return tiny_model.model


@pytest.fixture(scope="module")
def vocab(tiny_model) -> int:
    return len(tiny_model.tokenizer)


def _random_ids(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(3, vocab) for _ in range(n)]


SINGLE = [[352], [346], [120]]
MIXED = [[352], [79, 307, 68], [120, 121], [300, 5, 6, 7]]


@pytest.mark.parametrize("choices", [SINGLE, MIXED], ids=["single-token", "multi-token"])
@pytest.mark.parametrize("max_batch_tokens", [2048, 1, 40], ids=["one-batch", "row-per-batch", "few-batches"])
def test_shared_prefix_matches_naive(net, vocab, naive_logprobs, choices, max_batch_tokens) -> None:
    rng = random.Random(1)
    prefix = _random_ids(rng, 12, vocab)
    rows = [prefix + _random_ids(rng, n, vocab) for n in (1, 7, 3, 12, 5)]
    extra = sum(len(c) - 1 for c in choices)
    n_batches = len(pack_batches([len(r) - len(prefix) for r in rows], extra, max_batch_tokens))
    assert n_batches == 1 if max_batch_tokens == 2048 else n_batches > 1
    got, computed = choice_logprobs(net, rows, choices, max_batch_tokens=max_batch_tokens)
    want = naive_logprobs(net, rows, choices)
    assert got.shape == (len(rows), len(choices))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    naive_tokens = sum(len(r) + len(c) for r in rows for c in choices)
    assert computed < naive_tokens


@pytest.mark.parametrize("choices", [SINGLE, MIXED], ids=["single-token", "multi-token"])
def test_no_shared_prefix_matches_naive(net, vocab, naive_logprobs, choices) -> None:
    rng = random.Random(2)
    rows = [[5] + _random_ids(rng, 6, vocab), [6] + _random_ids(rng, 2, vocab), [7] + _random_ids(rng, 9, vocab)]
    assert common_prefix_length(rows) == 0
    got, computed = choice_logprobs(net, rows, choices, max_batch_tokens=30)
    np.testing.assert_allclose(got, naive_logprobs(net, rows, choices), atol=1e-4, rtol=0)
    # no prefix pass: exactly the padded batches went through the decoder
    extra = sum(len(c) - 1 for c in choices)
    assert computed >= sum(len(r) + extra for r in rows)


@pytest.mark.parametrize("choices", [SINGLE, MIXED], ids=["single-token", "multi-token"])
def test_single_prompt_matches_naive(net, vocab, naive_logprobs, choices) -> None:
    rows = [_random_ids(random.Random(3), 10, vocab)]
    got, _ = choice_logprobs(net, rows, choices)
    np.testing.assert_allclose(got, naive_logprobs(net, rows, choices), atol=1e-4, rtol=0)


def test_identical_prompts_and_one_token_prompt(net, vocab, naive_logprobs) -> None:
    row = _random_ids(random.Random(4), 8, vocab)
    rows = [row, list(row), [row[0]]]  # whole-prompt prefix and a prompt of one token
    got, _ = choice_logprobs(net, rows, MIXED)
    np.testing.assert_allclose(got, naive_logprobs(net, rows, MIXED), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got[0], got[1])


@pytest.mark.parametrize(("rows", "expected"), [
    ([[1, 2, 3], [1, 2, 4], [1, 2]], 2),
    ([[1, 2, 3]], 3),
    ([[1, 2, 3], [1, 2, 3]], 3),
    ([[1, 2], [2, 1]], 0),
    ([[5, 6, 7, 8], [5, 6, 9], [5, 7]], 1),
    ([[1, 2, 3], []], 0),
])
def test_common_prefix_length(rows, expected) -> None:
    assert common_prefix_length(rows) == expected


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("extra", "budget"), [(0, 1), (2, 16), (3, 50), (0, 10_000)])
def test_pack_batches_respects_budget_and_covers_every_row(seed, extra, budget) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 20) for _ in range(rng.randint(1, 30))]
    batches = pack_batches(lengths, extra, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert batch
        width = max(lengths[i] for i in batch) + extra
        assert len(batch) == 1 or len(batch) * width <= budget
    if budget >= sum(lengths) + extra * len(lengths) and max(lengths) * len(lengths) <= budget:
        assert len(batches) == 1


def test_pack_batches_groups_similar_lengths() -> None:
    batches = pack_batches([10, 1, 10, 1], 0, 20)
    assert sorted(map(sorted, batches)) == [[0, 2], [1, 3]]
