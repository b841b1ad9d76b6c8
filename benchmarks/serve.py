"""`verticals llm serve` against the model's own generation rate: overhead, throughput, latency.

Starts `verticals llm serve` (bundled SmolLM2-135M-Instruct by default) in a subprocess on
127.0.0.1, loads the same model in this process, and measures in one run:
  * concurrency 1: the same greedy requests, alternately through the server and by calling
    `LocalModel.chat` here (so load changes hit both alike); overhead = server time / local time - 1
    (target: under 5%);
  * concurrency 1, 4 and 16: requests/s and p50 / p95 latency through the server, and requests/s
    as a share of the local sequential rate (one generation at a time: the share should stay near
    100% and the latency grow with the queue).
Both sides generate the same tokens (greedy, same weights, same thread count); each reply's token
count is checked to match.

Run on a quiet machine (the last line says how much CPU other processes took meanwhile):
      .venv/bin/python benchmarks/serve.py                 (~9 min on 2 cores)
      .venv/bin/python benchmarks/serve.py --quick         (smoke run, ~1 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from verticals.llm.local import LocalModel

QUESTIONS = [
    "What does an ejection fraction of 35% mean?", "Why is a high LDL cholesterol a risk for the heart?",
    "What is a pulmonary nodule?", "What does a troponin test measure?", "What is atrial fibrillation?",
    "Why do doctors check the HbA1c in diabetes?", "What is a ground-glass opacity on a chest CT?",
    "What does a creatinine level tell about the kidneys?",
]


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


def start_server(model: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "verticals", "llm", "serve", "--model", model, "--port", str(port),
               "--max-queue", "64"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        try:
            httpx.get(f"http://127.0.0.1:{port}/health").raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not start within 180 s")


def served(client: httpx.Client, url: str, i: int, max_tokens: int) -> tuple[float, int]:
    """Seconds and completion tokens of one greedy request through the server."""
    start = time.perf_counter()
    answer = client.post(url, json={"messages": prompt(i), "max_tokens": max_tokens, "temperature": 0})
    seconds = time.perf_counter() - start
    answer.raise_for_status()
    return seconds, int(answer.json()["usage"]["completion_tokens"])


def local(model: LocalModel, i: int, max_tokens: int) -> tuple[float, int]:
    """Seconds and completion tokens of the same request answered in this process."""
    start = time.perf_counter()
    tokens = list(model.generate(prompt(i), _params(max_tokens)))
    return time.perf_counter() - start, len(tokens)


def _params(max_tokens: int):  # type: ignore[no-untyped-def]
    from verticals.llm.base import GenerationParams

    return GenerationParams(max_tokens=max_tokens, temperature=0.0)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds taken by everyone (pid None, hypervisor steal included) or by one process; Linux only."""
    try:
        if pid is None:
            fields = Path("/proc/stat").read_text().split("\n")[0].split()[1:9]
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled", help="bundled or a model folder")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per reply")
    parser.add_argument("--rounds", type=int, help="alternating local/server pairs at concurrency 1 (default 16)")
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 16)
    console = Console(width=130)  # whole column names, also when the output is a file

    lm = LocalModel.bundled() if args.model == "bundled" else LocalModel(args.model)
    server = start_server(args.model, args.port)
    url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
    start_all, start_own, start_server_cpu = cpu_seconds(), time.process_time(), cpu_seconds(server.pid)
    wall_start = time.perf_counter()
    try:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64)) as client:
            served(client, url, 0, 4), local(lm, 0, 4)  # warm-up of both
            pairs = []
            for i in range(rounds):
                here, there = local(lm, i, args.max_tokens), served(client, url, i, args.max_tokens)
                if here[1] != there[1]:
                    raise SystemExit(f"request {i}: {here[1]} tokens here, {there[1]} through the server")
                pairs.append((here, there))
            local_s = sum(h[0] for h, _ in pairs)
            served_s = sum(t[0] for _, t in pairs)
            tokens = sum(h[1] for h, _ in pairs)

            levels = []
            for level in args.levels:
                n = max(level * (2 if args.quick else 3), rounds if level == 1 else 0)
                # the local rate again, just before: this VM drifts by several percent within minutes
                reference = [local(lm, i, args.max_tokens)[0] for i in range(min(n, 4))]
                start = time.perf_counter()
                with ThreadPoolExecutor(level) as pool:
                    results = list(pool.map(lambda i: served(client, url, i, args.max_tokens), range(n)))
                wall = time.perf_counter() - start
                levels.append((level, n, n / wall, len(reference) / sum(reference), [r[0] for r in results]))
    finally:
        server_cpu = cpu_seconds(server.pid) - start_server_cpu
        server.terminate()
        server.wait(timeout=30)

    table = Table(title=f"concurrency 1, alternating: {rounds} requests each way, "
                        f"{tokens / rounds:.0f} tokens per reply")
    for column in ("measure", "value", "target"):
        table.add_column(column, justify="right")
    table.add_row("local LocalModel.generate, mean s per request", f"{local_s / rounds:.3f}", "")
    table.add_row("through the server, mean s per request", f"{served_s / rounds:.3f}", "")
    table.add_row("local generation rate, tokens/s", f"{tokens / local_s:.1f}", "")
    overhead = served_s / local_s - 1
    table.add_row("server overhead", f"[bold]{overhead:+.1%}[/]", "< 5%")
    console.print(table)

    table = Table(title="throughput and latency through the server (local rate measured just before each level)")
    for column in ("concurrency", "requests", "requests/s", "local requests/s", "of local rate", "p50 latency s",
                   "p95 latency s"):
        table.add_column(column, justify="right")
    for level, n, rate, reference_rate, latencies in levels:
        table.add_row(str(level), str(n), f"{rate:.3f}", f"{reference_rate:.3f}", f"{rate / reference_rate:.0%}",
                      f"{statistics.median(latencies):.2f}", f"{percentile(latencies, 0.95):.2f}")
    console.print(table)
    wall = time.perf_counter() - wall_start
    ours = time.process_time() - start_own + server_cpu
    others = (cpu_seconds() - start_all - ours) / (wall * (os.cpu_count() or 1))
    console.print(f"{wall:.0f} s; other processes (or VMs) took {max(others, 0):.0%} of the CPU meanwhile"
                  + (" (above ~5% the rates are noisy: rerun on a quiet machine)" if others > 0.05 else ""))


if __name__ == "__main__":
    main()
