"""``selfsup compare RUN_DIR...``: runs side by side on one self-contained page, a table
(budget, steps, time, and the last result of each protocol, pretrained and at random init) and
the training curves overlaid."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.config import ConfigError, run_config_path
from selfsup.report import page, plots
from selfsup.report.build import read_jsonl

HEADLINE = {
    "knn": "top1",
    "linear": "top1",
    "fewshot": "5shot_top1",
    "finetune": "top1",
    "zeroshot": "top1",
    "retrieval": "i2t_R@1",
    "mlm": "masked_token_acc",
    "perplexity": "perplexity",
    "pseudo_perplexity": "pseudo_perplexity",
    "diagnostics": "effective_rank",
    "wordsim": "wordsim353_spearman",
    "analogy": "total_accuracy",
}
# What a result records besides its figures: never a headline.
SETTINGS = {"step", "seed", "k", "temperature", "bank", "queries", "time", "images", "pairs",
            "templates", "tokens", "blocks", "classes", "chance"}  # fmt: skip


def headline(result: dict[str, Any]) -> str | None:
    """The figure of ``result`` that ``compare`` shows: its protocol's headline, else its first
    number that is not a setting (a registered protocol's own)."""
    figure = HEADLINE.get(str(result.get("protocol")))
    if figure in result:
        return figure
    return next(
        (k for k, v in result.items()
         if isinstance(v, float) and not isinstance(v, bool) and k not in SETTINGS),
        None,
    )  # fmt: skip


def compare(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write one page comparing runs: a table of budgets and results, and overlaid curves."""
    from selfsup.config import load_config

    if not run_dirs:
        raise ConfigError("compare needs at least one run directory")
    rows, curves, protocols = [], {}, []
    runs = []
    for given in run_dirs:
        run_dir = Path(given)
        config = load_config(run_config_path(run_dir))
        summary = (
            json.loads((run_dir / "summary.json").read_text())
            if (run_dir / "summary.json").is_file()
            else {}
        )
        results = read_jsonl(run_dir / "results.jsonl")
        latest: dict[str, Any] = {}
        for r in results:  # the last result of each protocol and setting
            figure = headline(r)
            if figure is not None:
                key = f"{_column(r, config.data)} {figure}"  # the column names its figure
                latest[key] = r[figure]
                if key not in protocols:
                    protocols.append(key)
        name = run_dir.name
        if name in curves:
            name = str(run_dir)
        curves[name] = read_jsonl(run_dir / "metrics.jsonl")
        runs.append((name, config, summary, latest))
    for name, config, summary, latest in runs:
        rows.append(
            [
                name,
                config.method,
                config.data,
                config.backbone or "default",
                config.budget,
                summary.get("steps", ""),
                summary.get("seconds", ""),
                summary.get("samples_per_s", ""),
                *[latest.get(p, "") for p in protocols],
            ]  # fmt: skip
        )
    headers = ["run", "method", "data", "backbone", "budget", "steps", "seconds", "samples/s",
               *protocols]  # fmt: skip
    sections = [
        page.section(
            "Runs and results",
            page.table(headers, rows),
            page.note(
                "Each result column holds the last result of that protocol and setting in the "
                "run's results.jsonl: evaluation data other than the run's, random "
                "initialisation, and [bank/queries], the samples a kNN or linear result used "
                "(figures of other sizes do not compare). Compare runs at equal budget (the "
                "budget column)."
            ),
        )  # fmt: skip
    ]
    overlay = plots.overlaid_curves(curves)
    if overlay is not None:
        sections.append(page.section("Training curves", page.image(overlay, "overlaid curves")))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        page.document(
            f"selfsup compare: {len(runs)} runs",
            f"written {time.strftime('%Y-%m-%d %H:%M')}",
            sections,
        )
    )
    return path


def _column(result: dict[str, Any], run_data: str) -> str:
    """The column of a result: its protocol and what changes its figure besides the encoder."""
    parts = [str(result.get("protocol"))]
    if result.get("data") not in (None, run_data):
        parts.append(f"on {result['data']}")
    if result.get("random_init"):
        parts.append("(random init)")
    if "bank" in result and "queries" in result:
        parts.append(f"[{result['bank']}/{result['queries']}]")
    return " ".join(parts)
