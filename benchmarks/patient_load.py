"""The patient web app under load: simulated users on 127.0.0.1, each pasting a bundled report and
asking three questions, for a fixed time, against `verticals patient serve` in its own process.

Per configuration (no model: templates only; the bundled model drafting): requests, errors (a
non-200, an error line in a stream, a dropped connection), and p50 / p95 of the seconds to the
first streamed line (urgent notices come first), to the first piece of the answer's text, and to
the whole answer; how many answers the model drafted and how many got the template because the
model stayed busy longer than `--model-wait`. Bounded: users start no new question after
`--seconds`, every request has a timeout, and at most `--max-questions` are asked.

      .venv/bin/python benchmarks/patient_load.py                 (about 3 min)
      .venv/bin/python benchmarks/patient_load.py --users 5 --seconds 20 --models none
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from verticals.patient import questions
from verticals.patient.examples import examples

VERTICALS = str(Path(sys.executable).parent / "verticals")


@dataclass
class Tally:
    reports: int = 0
    answers: int = 0
    errors: list[str] = field(default_factory=list)
    first_line: list[float] = field(default_factory=list)
    first_piece: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)
    drafted: int = 0
    busy: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(model: str, model_wait: float, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The server in its own process, logging to a file (a pipe nobody reads would fill and stall it)."""
    port = free_port()
    with log.open("wb") as sink:
        server = subprocess.Popen([VERTICALS, "patient", "serve", "--model", model, "--port", str(port),
                                   "--model-wait", str(model_wait)], stderr=sink, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/themes", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"the server with --model {model} did not start")


async def user(client: httpx.AsyncClient, rng: random.Random, asked: list[str], tally: Tally, until: float,
               budget: list[int], timeout: float) -> None:
    reports = list(examples().values())
    while time.monotonic() < until and budget[0] > 0:
        text = rng.choice(reports).text
        try:
            response = await client.post("/api/report", json={"text": text}, timeout=timeout)
            if response.status_code != 200:
                tally.errors.append(f"report {response.status_code}")
                continue
            tally.reports += 1
            for question in rng.sample(asked, 3):
                if time.monotonic() >= until or budget[0] <= 0:
                    return
                budget[0] -= 1
                await ask(client, text, question, tally, timeout)
        except httpx.HTTPError as err:
            tally.errors.append(type(err).__name__)


async def ask(client: httpx.AsyncClient, report: str, question: str, tally: Tally, timeout: float) -> None:
    started = time.monotonic()
    first_line = first_piece = None
    async with client.stream("POST", "/api/answer", json={"report": report, "question": question},
                             timeout=timeout) as response:
        if response.status_code != 200:
            tally.errors.append(f"answer {response.status_code}")
            return
        async for line in response.aiter_lines():
            if not line:
                continue
            now = time.monotonic() - started
            first_line = now if first_line is None else first_line
            event = json.loads(line)
            if event["type"] == "piece" and first_piece is None:
                first_piece = now
            elif event["type"] == "error":
                tally.errors.append("error line")
                return
            elif event["type"] == "answer":
                tally.answers += 1
                tally.drafted += event["source"] == "model"
                tally.busy += "model_error" in event["checks"]
    if first_line is None or first_piece is None:
        tally.errors.append("stream ended early")
        return
    tally.first_line.append(first_line)
    tally.first_piece.append(first_piece)
    tally.whole.append(time.monotonic() - started)


async def load(url: str, users: int, seconds: float, max_questions: int, timeout: float, seed: int) -> Tally:
    asked = [q.text for q in questions("test")]
    tally, budget = Tally(), [max_questions]
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=users + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        await asyncio.gather(*(user(client, random.Random(seed + i), asked, tally, until, budget, timeout)
                               for i in range(users)))
    return tally


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[int(q) - 1]:.2f}" if len(values) > 1 \
        else f"{values[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--models", default="none,bundled", help="comma-separated --model values to serve")
    parser.add_argument("--model-wait", type=float, default=10.0)
    parser.add_argument("--max-questions", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one request may take")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=160)
    table = Table(title=f"patient app: {args.users} users for {args.seconds:g} s, 3 questions per report "
                        f"(--model-wait {args.model_wait:g})")
    for column in ("model", "reports", "answers", "errors", "first line p50/p95 s", "first piece p50/p95 s",
                   "whole answer p50/p95 s", "drafted by model", "template: model busy"):
        table.add_column(column, justify="right")
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "server.log"
            server, url = start(model, args.model_wait, log)
            try:
                tally = asyncio.run(load(url, args.users, args.seconds, args.max_questions, args.timeout, args.seed))
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
            logged = log.read_text(errors="replace")
        leaked = [e.id for e in examples().values() if any(line.strip() and line.strip() in logged
                                                          for line in e.text.splitlines() if len(line) > 30)]
        table.add_row(model, str(tally.reports), str(tally.answers), str(len(tally.errors)),
                      f"{pct(tally.first_line, 50)} / {pct(tally.first_line, 95)}",
                      f"{pct(tally.first_piece, 50)} / {pct(tally.first_piece, 95)}",
                      f"{pct(tally.whole, 50)} / {pct(tally.whole, 95)}",
                      f"{tally.drafted} ({tally.drafted / max(1, tally.answers):.0%})",
                      f"{tally.busy} ({tally.busy / max(1, tally.answers):.0%})")
        if tally.errors:
            console.print(f"{model}: errors {sorted(set(tally.errors))[:5]}", markup=False)
        if "Traceback" in logged:
            console.print(f"{model}: the server logged a traceback", markup=False)
        console.print(f"{model}: {len(logged.splitlines())} log lines; report text in them: "
                      f"{', '.join(leaked) or 'none'}", markup=False)
    console.print(table)


if __name__ == "__main__":
    main()
