"""Runs side by side: is one model better than another on the same memes (paired bootstrap), and a
Markdown leaderboard of every run in a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from verticals.goat.config import GoatError
from verticals.goat.metrics import paired_bootstrap
from verticals.goat.tasks import PAPER_TASKS


def read_run(folder: Path) -> dict[str, Any]:
    """A run's `results.json`.

    Raises:
        GoatError: not a finished run folder.
    """
    file = folder / "results.json"
    if not file.is_file():
        raise GoatError(f"{folder} holds no results.json: not a finished `verticals goat eval` run")
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GoatError(f"{file} is damaged: {err}") from err
    if not isinstance(results, dict) or "tasks" not in results:
        raise GoatError(f"{file} is not a GOAT results file")
    return results


def _predictions(folder: Path, task: str) -> dict[str, tuple[int, int | None]]:
    """id -> (gold, prediction) from a run's samples file."""
    file = folder / f"samples_{task}.jsonl"
    if not file.is_file():
        raise GoatError(f"{file} is missing: the run's per-meme answers are needed to compare")
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(r["id"]): (int(r["gold"]), r["prediction"]) for r in rows}


def compare_runs(first: Path, second: Path, *, seed: int = 0) -> dict[str, Any]:
    """Per shared task: macro-F1 of both runs on the memes both scored, the difference, its 95% interval
    and the p-value of no difference (paired bootstrap).

    Raises:
        GoatError: a folder is not a run, the runs share no task, or they disagree on a meme's label.
    """
    a, b = read_run(first), read_run(second)
    shared = [t for t in a["tasks"] if t in b["tasks"]]
    if not shared:
        raise GoatError(f"{first} and {second} share no task ({', '.join(a['tasks'])} vs {', '.join(b['tasks'])})")
    rows = {}
    for task in shared:
        left, right = _predictions(first, task), _predictions(second, task)
        ids = sorted(set(left) & set(right))
        if not ids:
            raise GoatError(f"{task}: the two runs share no meme id; were they run on the same data?")
        differing = [i for i in ids if left[i][0] != right[i][0]]
        if differing:
            raise GoatError(f"{task}: the runs disagree on the label of {len(differing)} memes (e.g. {differing[0]}); "
                            "they were not run on the same data")
        gold = [left[i][0] for i in ids]
        test = paired_bootstrap(gold, [left[i][1] for i in ids], [right[i][1] for i in ids], seed=seed)
        rows[task] = {**test, "only_in_first": len(left) - len(ids), "only_in_second": len(right) - len(ids)}
    return {"first": {"run": str(first), "model": a["model"]["spec"], "prompt": a["prompt"]["style"]},
            "second": {"run": str(second), "model": b["model"]["spec"], "prompt": b["prompt"]["style"]},
            "fixture": bool(a.get("fixture") or b.get("fixture")), "tasks": rows}


def leaderboard(root: Path) -> str:
    """A Markdown table of every run under `root` (folders with a results.json), best mean macro-F1 first.

    Raises:
        GoatError: `root` holds no run.
    """
    runs = []
    for file in sorted(root.rglob("results.json")):
        try:
            runs.append((file.parent, read_run(file.parent)))
        except GoatError:
            continue
    if not runs:
        raise GoatError(f"no `verticals goat eval` run under {root}")
    found = dict.fromkeys(t for _, r in runs for t in r["tasks"])
    tasks = [t for t in PAPER_TASKS if t in found] + sorted(t for t in found if t not in PAPER_TASKS)
    runs.sort(key=lambda run: -run[1]["overall"]["macro_f1"])
    lines = ["| run | model | prompt | data | " + " | ".join(tasks) + " | mean macro-F1 |",
             "|---" * (len(tasks) + 5) + "|"]
    for folder, results in runs:
        cells = [f"{results['tasks'][t]['macro_f1']:.3f}" if t in results["tasks"] else "-" for t in tasks]
        data = "fixture" if results.get("fixture") else str(results.get("benchmark", ""))
        lines.append(f"| {folder.relative_to(root) if folder != root else folder.name} | {results['model']['spec']} | "
                     f"{results['prompt']['style']} | {data} | " + " | ".join(cells)
                     + f" | **{results['overall']['macro_f1']:.3f}** |")
    return "\n".join(lines) + "\n"
