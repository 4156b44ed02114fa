"""``selfsup report RUN_DIR``: one self-contained HTML page about a run.

From the run's files: its settings and summary, the training curves (loss, learning rate,
throughput, online kNN, the label-free diagnostics, with the steps where a collapse was
announced marked) and every evaluation result in ``results.jsonl`` with its protocol. Then, from
the trained encoder on the run's data (or ``--data``), the sections of
:mod:`selfsup.report.embeddings`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.config import ConfigError, run_config_path
from selfsup.report import page, plots

CONTEXT_KEYS = ("time", "step", "protocol", "data", "random_init", "pooling", "seed")
SETTING_KEYS = {"chance", "temperature", "k", "alpha", "lr", "penalty"}  # settings, not results


# The figure each protocol is known by, for the compare table.
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a missing file or a torn last line gives what is
    readable (a run killed mid-write still gets a report)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def results_section(results: list[dict[str, Any]]) -> str:
    """Every evaluation result with its protocol and parameters; confusion matrices as figures."""
    if not results:
        return page.section(
            "Evaluation results",
            page.note("No results yet: run `selfsup evaluate RUN_DIR --protocol knn` (or linear, "
                      "fewshot, ...); each result is appended to results.jsonl."),
        )  # fmt: skip
    rows = []
    parts = []
    for r in results:  # figures in one column, the settings they were measured with in another
        found = {
            k: v
            for k, v in r.items()
            if k not in CONTEXT_KEYS and isinstance(v, float) and k not in SETTING_KEYS
        }
        params = {
            k: v
            for k, v in r.items()
            if k not in CONTEXT_KEYS and k not in found and not isinstance(v, list | dict)
        }
        rows.append(
            [
                r.get("time", ""),
                r.get("step", ""),
                r.get("protocol", ""),
                r.get("data", ""),
                "random init" if r.get("random_init") else "trained",
                ", ".join(f"{k} {page.fmt(v)}" for k, v in found.items()),
                ", ".join(f"{k}={page.fmt(v)}" for k, v in params.items()),
            ]
        )
        matrix = r.get("confusion")
        if matrix and not r.get("random_init"):
            parts.append(
                page.image(
                    plots.confusion(np.asarray(matrix), r.get("classes") or []),
                    "confusion matrix",
                    f"Confusion matrix of the {r.get('protocol')} protocol on {r.get('data')} "
                    f"(rows: true class, columns: predicted), step {r.get('step')}.",
                )
            )
    headers = ["time", "step", "protocol", "data", "encoder", "result", "parameters"]
    return page.section("Evaluation results", page.table(headers, rows), *parts[-2:])


def training_section(records: list[dict[str, Any]]) -> str:
    curves = plots.training_curves(records)
    if curves is None:
        return page.section("Training", page.note("metrics.jsonl holds no records yet."))
    collapsed = [r for r in records if r.get("collapse", 0) > 0]
    parts = [page.image(curves, "training curves",
                        "Diagnostics are of fixed training samples (encoder features, and the "
                        "projector output where the method has one); red lines: steps where a "
                        "collapse was announced.")]  # fmt: skip
    if collapsed:
        kind = "complete" if collapsed[0]["collapse"] >= 2 else "dimensional"
        parts.insert(
            0,
            f'<p class="alarm">Collapse announced at step {collapsed[0]["step"]} ({kind}); '
            f"{len(collapsed)} diagnostics in all found it.</p>",
        )
    return page.section("Training", *parts)


def report(
    run_dir: str | Path,
    out: str | Path | None = None,
    data: str | None = None,
    samples: int = 1000,
    bank_size: int = 2000,
    queries: int = 6,
    device: str = "auto",
    embeddings: bool = True,
) -> Path:
    """Write the HTML report of a run and return its path (default ``RUN_DIR/report.html``).

    Args:
        run_dir: a run directory.
        out: where to write the page.
        data: data to embed (default: the run's).
        samples: test samples embedded for the diagnostics and the 2-D map.
        bank_size: training samples searched for nearest neighbours.
        queries: test samples whose neighbours are shown.
        device: where the encoder runs ("auto": a GPU when present).
        embeddings: False leaves out everything that needs the encoder (curves and results only).
    """
    run_dir = Path(run_dir)
    config_file = run_config_path(run_dir)
    if samples < 2 or bank_size < 1 or queries < 1:
        raise ConfigError("report needs samples >= 2, bank_size >= 1 and queries >= 1")
    config_text = config_file.read_text()
    summary = (
        json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "summary.json").is_file()
        else {}
    )
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    results = read_jsonl(run_dir / "results.jsonl")
    sections = [
        page.section(
            "Run",
            page.table(["", ""], [[k, v] for k, v in summary.items()])
            if summary
            else page.note("No summary.json: the run has not finished (or was interrupted)."),
            f"<details><summary>config.yaml</summary><pre>{page.esc(config_text)}</pre></details>",
        ),
        training_section(metrics),
        results_section(results),
    ]
    if embeddings:
        from selfsup.engine.checkpoint import latest_checkpoint

        if latest_checkpoint(run_dir / "checkpoints") is None:
            sections.append(page.section("Embeddings", page.note("No checkpoint yet.")))
        else:
            from selfsup.report.embeddings import embedding_sections

            sections += embedding_sections(run_dir, data, samples, bank_size, queries, device)
    first = config_text.splitlines()
    method = next(
        (line.split(":", 1)[1].strip() for line in first if line.startswith("method:")), "?"
    )
    data_name = next(
        (line.split(":", 1)[1].strip() for line in first if line.startswith("data:")), "?"
    )
    html_text = page.document(
        f"selfsup report: {run_dir.name}",
        f"{method} on {data_name}; written {time.strftime('%Y-%m-%d %H:%M')} from {run_dir}",
        sections,
    )
    path = Path(out) if out else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_text)
    return path
