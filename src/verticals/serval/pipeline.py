"""`sersal()`: the whole job in one call, as `verticals serval run` does it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from verticals.serval.annotate import make_annotator
from verticals.serval.config import ServalConfig, ServalError
from verticals.serval.datasets import TabularData, load_dataset
from verticals.serval.evaluate import evaluate
from verticals.serval.prompts import PromptTemplate
from verticals.serval.report import write_report
from verticals.serval.run import Say, SersalRun


def sersal(data: TabularData | str, llm: str, out: str | Path, config: ServalConfig | None = None, *,
           metadata: str | Path | None = None, prompts: str | Path | None = None, device: str = "auto",
           progress: bool = True, say: Say | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or resume) SERSAL on a table and write `results.json`, `samples.jsonl` and `report.html`.

    Args:
        data: a `TabularData`, a registered dataset name, or a CSV path (with `metadata`).
        llm: `bundled`, a model folder, an OpenAI-compatible URL, or `simulated:auc=0.75` (a study tool).
        out: the run folder; rerunning the same call there resumes it.
        config (`ServalConfig`, *optional*): loops, annotation method, small model, reverse tuning.
        force: go on when the label-free teacher check finds that the LLM says little about the table.

    Returns:
        The results (as in `results.json`).

    Raises:
        ServalError: bad data, settings or run folder. `LLMError` / `FinetuneError` come from the model.
    """
    config = config or ServalConfig()
    if Path(out).exists() and not Path(out).is_dir():
        raise ServalError(f"--out {out} is a file; give a folder for the run")
    table = data if isinstance(data, TabularData) else load_dataset(data, metadata)
    table = subsample(table, config.max_rows, config.seed)
    template = PromptTemplate.load(prompts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = None
    if not llm.startswith("simulated"):
        from verticals.llm import ResponseCache

        cache = ResponseCache(out / "llm_cache.sqlite")
    annotator = make_annotator(llm, method=config.annotation, style=config.style, votes=config.votes,
                               progress=progress, device=device, cache=cache)
    if hasattr(annotator, "template"):
        annotator.template = template
    run = SersalRun(table, annotator, out, config, llm_spec=llm, template=template, progress=progress, say=say,
                    force=force)
    loops = run.run()
    results = evaluate(run, loops)
    write_report(out, results)
    return results


def subsample(table: TabularData, max_rows: int, seed: int) -> TabularData:
    """A seeded random subset of `max_rows` rows (drawn without labels); the table itself when smaller or 0."""
    if not max_rows or len(table) <= max_rows:
        return table
    rows = np.random.default_rng(seed).choice(len(table), max_rows, replace=False)
    return table.subset(np.sort(rows))
