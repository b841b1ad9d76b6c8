"""`report.md` and a bar chart of macro-F1 per task with its 95% interval, for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(out: Path, results: dict[str, Any]) -> None:
    """Write `report.md` (and `macro_f1.png`) into `out` from `results`."""
    _chart(out / "macro_f1.png", results)
    lines = [f"# {results['model']['spec']} on {results['benchmark']}", ""]
    if results["fixture"]:
        lines += ["> **Fixture**: a synthetic meme set made by `verticals goat fixture` for tests and demos. "
                  "These figures say nothing about GOAT-Bench.", ""]
    overall = results["overall"]
    lines += [f"Prompt `{results['prompt']['style']}` ({results['prompt']['fingerprint']}), "
              f"{overall['memes']} memes in {overall['tasks']} tasks. Mean macro-F1 over tasks "
              f"**{overall['macro_f1']:.3f}**, accuracy {overall['accuracy']:.3f}, "
              f"{overall['unknown']} answers not readable as Yes or No (scored as wrong).", "",
              "![macro-F1 per task](macro_f1.png)", "",
              "| task | memes | macro-F1 | 95% interval | accuracy | recall (abusive) | unknown | AUROC | skipped |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, task in results["tasks"].items():
        low, high = task["macro_f1_ci95"]
        auroc = task.get("auroc")
        skipped = sum(task["loading"]["skipped"].values())
        lines.append(f"| {name} | {task['n']} | {task['macro_f1']:.3f} | {low:.3f}-{high:.3f} | "
                     f"{task['accuracy']:.3f} | {task['recall']['1']:.3f} | {task['unknown_rate']:.1%} | "
                     f"{'-' if auroc is None else f'{auroc:.3f}'} | {skipped} |")
    skipped_notes = [f"- {name}: {', '.join(f'{n} {k}' for k, n in t['loading']['skipped'].items())} "
                     f"(first: `{t['loading']['examples'][0]}`)"
                     for name, t in results["tasks"].items() if t["loading"]["skipped"]]
    if skipped_notes:
        lines += ["", "Records skipped while loading:", *skipped_notes]
    if results.get("tasks_left_out"):
        lines += ["", "Tasks left out:", *(f"- {name}: {why}" for name, why in results["tasks_left_out"].items())]
    lines += ["", "Per-meme prompts, answers and readings: `samples_<task>.jsonl`; every number: `results.json`.", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def _chart(file: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    values = [results["tasks"][n]["macro_f1"] for n in names]
    lows = [v - results["tasks"][n]["macro_f1_ci95"][0] for n, v in zip(names, values)]
    highs = [results["tasks"][n]["macro_f1_ci95"][1] - v for n, v in zip(names, values)]
    figure, axes = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6))
    axes.bar(names, values, yerr=[lows, highs], capsize=4, color="#4c72b0")
    axes.set_ylim(0, 1)
    axes.set_ylabel("macro-F1 (95% interval)")
    title = f"{results['model']['spec']}, {results['prompt']['style']}"
    axes.set_title(title + (" (fixture)" if results["fixture"] else ""))
    axes.axhline(results["overall"]["macro_f1"], color="#dd8452", linestyle="--", label="mean over tasks")
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(file, dpi=110)
    plt.close(figure)
