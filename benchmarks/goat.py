"""GOAT-Bench's harness on the synthetic fixture: overhead, cached rerun, OCR, baselines.

Writes a fixture (5 tasks x 60 train / 100 test memes, seed 0: 500 test memes) into --work and
measures in one run:
  * ocr: the bundled OCR's throughput (memes/s, nothing cached) and its character error rate
    against the captions drawn on the 500 test images (target: under 5%);
  * overhead: memes/s of `verticals goat eval --model openai:URL` against `verticals llm serve`
    on a meme set of exactly the memes sent (40 by default)
    (bundled model, OCR of image parts) at concurrency 1, 4 and 16, against the same requests
    sent raw with httpx at the same concurrency (raw, harness, raw again: the machine drifts);
    the harness pass includes loading the memes, writing samples, results and both reports
    (target: under 5% overhead);
  * baselines: macro-F1 per task with 95% intervals for ocr+bundled (zero-shot), fusion:text,
    fusion:image, fusion and align (LoRA on the train split's OCR text, then ocr+bundled with the
    adapter); then the fully cached rerun of ocr+bundled on the 500 memes, in this process and
    as a fresh `verticals goat eval` process (target: under 5 s).
Every cache is made fresh in --work (unless --reuse), so first runs really compute.

      .venv/bin/python benchmarks/goat.py                  (~40 min on 2 cores)
      .venv/bin/python benchmarks/goat.py --quick          (smoke run, a few minutes)
      .venv/bin/python benchmarks/goat.py --part ocr       (one part: ocr, overhead or baselines)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from verticals.config import cache_home
from verticals.goat.data import load_split
from verticals.goat.fixture import write_fixture
from verticals.goat.prompts import get_style, messages_for
from verticals.goat.tasks import paper_tasks
from verticals.llm.cache import ResponseCache

sys.path.insert(0, str(Path(__file__).parent))
from serve import start_server  # noqa: E402  (the server benchmark starts the server the same way)

BASELINES = ("ocr+bundled", "fusion:text", "fusion:image", "fusion", "align")


def fixture(work: Path, train: int, test: int) -> Path:
    data = work / "memes"
    if not (data / "goat.toml").is_file():
        shutil.rmtree(data, ignore_errors=True)
        write_fixture(data, train=train, test=test, seed=0)
    return data


def split_memes(data: Path, per_task: int | None = None) -> list:  # type: ignore[type-arg]
    memes = []
    for task in paper_tasks().values():
        loaded, _ = load_split(data, task, "test", images=True)
        memes += [(task, m) for m in loaded[:per_task]]
    return memes


def part_ocr(data: Path, console: Console) -> None:
    from verticals.encoders import character_error_rate, read_text

    memes = split_memes(data)
    pictures = [m.image.read_bytes() for _, m in memes]
    read_text(pictures[0])  # load the engine outside the timing
    start = time.perf_counter()
    reads = [read_text(p) for p in pictures]
    seconds = time.perf_counter() - start
    rate = character_error_rate([m.text for _, m in memes], reads)
    table = Table(title=f"bundled OCR on the fixture's {len(memes)} test memes")
    for column in ("measure", "value", "target"):
        table.add_column(column, justify="right")
    table.add_row("memes/s (one process, nothing cached)", f"{len(memes) / seconds:.2f}", "")
    table.add_row("character error rate (case and spacing normalised)", f"[bold]{rate:.2%}[/]", "< 5%")
    console.print(table)


def part_overhead(work: Path, levels: list[int], per_level: int, port: int, console: Console) -> None:
    from verticals.goat.runner import EvalSettings, evaluate

    # a meme set of exactly the memes sent, so the harness pass loads no meme it does not ask about
    per_task = max(1, per_level // 5)
    data = work / "overhead-memes"
    shutil.rmtree(data, ignore_errors=True)
    write_fixture(data, train=1, test=per_task, seed=1)
    memes = split_memes(data)
    style = get_style("zero-shot")
    bodies = [{"model": "smollm2-135m-instruct", "messages": messages_for(style, task, meme, images=True),
               "max_tokens": style.max_tokens, "temperature": 0.0} for task, meme in memes]
    server = start_server("bundled", port)
    base = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
            def raw(level: int) -> float:
                start = time.perf_counter()
                with ThreadPoolExecutor(level) as pool:
                    for answer in pool.map(lambda body: client.post(f"{base}/chat/completions", json=body), bodies):
                        answer.raise_for_status()
                return len(bodies) / (time.perf_counter() - start)

            raw(4)  # warm-up: the server's first requests load its OCR engine
            # and the harness's once-per-process imports (matplotlib for the chart, Pillow's codecs)
            shutil.rmtree(work / "overhead-warm-up", ignore_errors=True)
            evaluate(EvalSettings(data, f"openai:{base}#smollm2-135m-instruct", work / "overhead-warm-up", limit=1,
                                  tasks="sarcasm", max_unknown=1.0), cache=fresh_cache(work / "warm-up.sqlite"))
            for level in levels:
                before = raw(level)
                out = work / f"overhead-{level}"
                shutil.rmtree(out, ignore_errors=True)
                cache = fresh_cache(work / f"overhead-{level}.sqlite")
                start = time.perf_counter()
                results = evaluate(EvalSettings(data, f"openai:{base}#smollm2-135m-instruct", out,
                                                concurrency=level, max_unknown=1.0), cache=cache)
                harness = results["overall"]["memes"] / (time.perf_counter() - start)
                after = raw(level)
                rows.append((level, len(bodies), before, after, harness))
    finally:
        server.terminate()
        server.wait(timeout=30)
    table = Table(title=f"goat eval through the OpenAI adapter against verticals llm serve (bundled), "
                        f"{len(bodies)} memes per pass")
    for column in ("concurrency", "raw memes/s (before)", "raw memes/s (after)", "harness memes/s",
                   "harness overhead", "target"):
        table.add_column(column, justify="right")
    for level, _, before, after, harness in rows:
        overhead = (before + after) / 2 / harness - 1  # time per meme through the harness over raw
        table.add_row(str(level), f"{before:.3f}", f"{after:.3f}", f"{harness:.3f}", f"[bold]{overhead:+.1%}[/]",
                      "< 5%")
    console.print(table)


def part_baselines(data: Path, work: Path, align_steps: int, reuse: bool, console: Console) -> None:
    from verticals.goat.align import AlignSettings, align
    from verticals.goat.runner import EvalSettings, evaluate

    runs = work / "runs"
    if not reuse:  # first runs that really compute
        for folder in (runs, work / "align-adapter"):
            shutil.rmtree(folder, ignore_errors=True)
    cache = ResponseCache(work / "baselines.sqlite") if reuse else fresh_cache(work / "baselines.sqlite")
    rows, timings = {}, {}
    for spec in BASELINES:
        out = runs / spec.replace(":", "-").replace("+", "-")
        if (out / "results.json").is_file():
            rows[spec] = json.loads((out / "results.json").read_text())
            continue
        start = time.perf_counter()
        if spec == "align":
            adapter = work / "align-adapter"
            shutil.rmtree(adapter, ignore_errors=True)
            align(AlignSettings(data, adapter, steps=align_steps), cache=cache)
            settings = EvalSettings(data, "ocr+bundled", out, adapter=adapter, probabilities=True, max_unknown=1.0)
        else:
            settings = EvalSettings(data, spec, out, probabilities=True, max_unknown=1.0)
        rows[spec] = evaluate(settings, cache=cache)
        timings[spec] = time.perf_counter() - start

    # the fully cached rerun: every answer and every OCR text is in the cache
    rerun = runs / "ocr-bundled-rerun"
    shutil.rmtree(rerun, ignore_errors=True)
    start = time.perf_counter()
    again = evaluate(EvalSettings(data, "ocr+bundled", rerun, probabilities=True, max_unknown=1.0), cache=cache)
    in_process = time.perf_counter() - start
    same = again["tasks"] == rows["ocr+bundled"]["tasks"]
    shutil.rmtree(rerun)
    # the command reads the default cache: give it one holding this run's answers, beside the converted
    # bundled model it would otherwise convert again
    home = work / "cli-cache"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    (home / "models").symlink_to((cache_home() / "models").resolve())
    with sqlite3.connect(work / "baselines.sqlite") as source, sqlite3.connect(home / "responses.sqlite") as copy:
        source.backup(copy)  # a consistent copy, write-ahead log included
    env = {"VERTICALS_CACHE_DIR": str(home)}
    command = [sys.executable, "-m", "verticals", "goat", "eval", "--data", str(data), "--model", "ocr+bundled",
               "--out", str(rerun), "--probabilities", "--max-unknown", "1"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode:
        raise SystemExit(f"the cached rerun failed: {done.stderr[-800:]}")
    as_command = time.perf_counter() - start

    tasks = list(paper_tasks())
    table = Table(title=f"macro-F1 on the fixture (not GOAT-Bench), {rows['ocr+bundled']['overall']['memes']} test "
                        "memes, 95% bootstrap intervals")
    for column in ("model", *tasks, "mean", "first run s"):
        table.add_column(column, justify="right")
    for spec, results in rows.items():
        cells = []
        for task in tasks:
            scores = results["tasks"][task]
            low, high = scores["macro_f1_ci95"]
            cells.append(f"{scores['macro_f1']:.3f} ({low:.2f}-{high:.2f})")
        name = spec if spec != "align" else f"align ({align_steps} steps) + ocr+bundled"
        seconds = f"{timings[spec]:.0f}" if spec in timings else "earlier"
        table.add_row(name, *cells, f"[bold]{results['overall']['macro_f1']:.3f}[/]", seconds)
    console.print(table)
    table = Table(title=f"fully cached rerun of ocr+bundled on {again['overall']['memes']} memes")
    for column in ("measure", "seconds", "target"):
        table.add_column(column, justify="right")
    table.add_row("evaluate() in this process", f"{in_process:.2f}", "< 5")
    table.add_row("a fresh `verticals goat eval` process (imports included)", f"{as_command:.2f}", "< 5")
    table.add_row("same results as the first run", "yes" if same else "[red]NO[/]", "yes")
    console.print(table)


def fresh_cache(file: Path) -> ResponseCache:
    """An empty response cache at `file` (an earlier, interrupted benchmark may have left one)."""
    for leftover in (file, file.with_name(file.name + "-wal"), file.with_name(file.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return ResponseCache(file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "ocr", "overhead", "baselines"], default="all")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-goat"), help="fixture, caches and runs")
    parser.add_argument("--quick", action="store_true", help="a small fixture and few requests, for a smoke run")
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--per-level", type=int, default=40, help="memes per overhead pass")
    parser.add_argument("--align-steps", type=int, default=100)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--reuse", action="store_true", help="keep baseline runs and answers of an earlier run "
                                                               "(their 'first run s' then says 'earlier')")
    args = parser.parse_args()
    work = args.work / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    console = Console(width=150)
    data = fixture(work, *((12, 8) if args.quick else (60, 100)))
    wall = time.perf_counter()
    if args.part in ("all", "ocr"):
        part_ocr(data, console)
    if args.part in ("all", "overhead"):
        part_overhead(work, args.levels, 10 if args.quick else args.per_level, args.port, console)
    if args.part in ("all", "baselines"):
        part_baselines(data, work, 4 if args.quick else args.align_steps, args.reuse, console)
    seconds = time.perf_counter() - wall
    console.print(f"{seconds:.0f} s in all; results under {work}")


if __name__ == "__main__":
    main()
