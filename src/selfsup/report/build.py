"""``selfsup report RUN_DIR`` and ``selfsup compare RUN_DIR...``: one self-contained HTML page.

The report of a run shows, from its files: the run's settings and summary, the training curves
(loss, learning rate, throughput, online kNN, the label-free diagnostics, with the steps where a
collapse was announced marked) and every evaluation result in ``results.jsonl`` with its
protocol. Then, from the trained encoder on the run's data (or ``--data``): the diagnostics of the
test embeddings and their singular-value spectrum, a 2-D map of the embeddings coloured by label
(UMAP when the ``umap-learn`` package is installed, else t-SNE, PCA for fewer than 50 samples),
the nearest training neighbours of a few test queries (images, or sentences for text), and the
method's own figures (MAE reconstructions, SwAV prototype usage, ViT attention maps).

``compare`` puts runs side by side: one table (budget, steps, time, and the last result of each
protocol, pretrained and at random init) and the training curves overlaid.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from selfsup.config import ConfigError
from selfsup.report import page, plots
from selfsup.report.panels import Panel

log = logging.getLogger("selfsup")

# Keys of a results.jsonl record that say what was measured rather than what was found.
CONTEXT_KEYS = ("time", "step", "protocol", "data", "random_init", "pooling", "seed")
# The figure each protocol is known by, for the compare table.
HEADLINE = {
    "knn": "top1",
    "linear": "top1",
    "fewshot": "5shot_top1",
    "finetune": "top1",
    "zeroshot": "top1",
    "retrieval": "i2t_R@1",
    "mlm": "masked_token_acc",
}


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


@dataclass
class Embedded:
    """Embeddings of the first samples of a split, with what the report shows of them."""

    features: Tensor  # (N, D)
    labels: Tensor  # (N,) -1 where unlabelled
    thumbnails: Tensor | None  # (N, 3, h, w) float in [0, 1], images only
    texts: list[str]


@torch.no_grad()
def embed_samples(
    method: Any,  # noqa: ANN401
    dataset: Any,  # noqa: ANN401
    limit: int,
    collate: Any,  # noqa: ANN401
    device: str,
    thumbnail: int = 64,
) -> Embedded:
    """``method.embed`` of the first ``limit`` samples, keeping labels, texts and small copies
    of the images (at most ``thumbnail`` px)."""
    from selfsup.evaluate.features import first

    loader = DataLoader(first(dataset, limit), batch_size=256, collate_fn=collate)
    feats, labels, thumbs, texts, seen = [], [], [], [], 0
    for batch in loader:
        n = len(next(iter(batch.values())))
        take = min(n, limit - seen)
        on_device = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        feats.append(method.embed(on_device)[:take].float().cpu())
        label = batch.get("label")
        labels.append(
            torch.as_tensor(label)[:take] if label is not None else torch.full((take,), -1)
        )
        if "image" in batch:
            images = batch["image"][:take].float() / 255.0
            if images.shape[-1] > thumbnail:
                images = F.interpolate(images, size=(thumbnail, thumbnail), mode="area")
            thumbs.append(images)
        texts.extend(list(batch.get("text", []))[:take])
        seen += take
        if seen >= limit:
            break
    if not feats:
        raise ConfigError("the data yielded no samples to embed for the report")
    return Embedded(
        torch.cat(feats),
        torch.cat(labels).long(),
        torch.cat(thumbs) if thumbs else None,
        texts,
    )


def project_2d(features: Tensor, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of the features and the name of the projection used."""
    x = F.normalize(features.float(), dim=1).numpy()
    if len(x) >= 50:
        try:
            import umap  # type: ignore[import-not-found]

            return umap.UMAP(random_state=seed).fit_transform(x), "UMAP"
        except ImportError:
            from sklearn.manifold import TSNE

            perplexity = min(30.0, (len(x) - 1) / 3)
            tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
            return tsne.fit_transform(x), "t-SNE"
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(x), "PCA"


def neighbours(queries: Tensor, bank: Tensor, k: int) -> Tensor:
    """``(Q, k)`` indices of the cosine-nearest bank items of each query."""
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    return sim.topk(min(k, bank.shape[0]), dim=1).indices


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
    for r in results:
        found = {
            k: v
            for k, v in r.items()
            if k not in CONTEXT_KEYS and isinstance(v, float) and k != "chance"
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


def embedding_sections(
    run_dir: Path,
    data: str | None,
    samples: int,
    bank_size: int,
    queries: int,
    device: str,
) -> list[str]:
    """Diagnostics, spectrum, 2-D map, nearest neighbours and method figures of the encoder."""
    from selfsup.evaluate.api import _source, resolve_device
    from selfsup.evaluate.diagnostics import collapse, singular_values, uniformity
    from selfsup.evaluate.features import collate_for
    from selfsup.runs import load_run

    device = resolve_device(device)
    run = load_run(run_dir, device)
    source = _source(run, data)
    method = run.method
    collate = collate_for(method, run.tokenizer, run.config.seq_len)
    split = source.test if source.test is not None else source.train
    split_name = "test" if source.test is not None else "train"
    shown = embed_samples(method, split, samples, collate, device)
    z = shown.features
    verdict = collapse(z)
    figures = [
        ["samples", len(z)],
        ["dimensions", z.shape[1]],
        ["effective rank (RankMe)", verdict.effective_rank],
        ["normalised std", verdict.normalized_std],
        ["uniformity", uniformity(z) if len(z) >= 2 else float("nan")],
    ]
    verdict_html = (
        f'<p class="alarm">{page.esc(verdict.message)}</p>'
        if verdict.kind != "none"
        else page.note(verdict.message)
    )
    out = [
        page.section(
            f"Embeddings of the {split_name} split of {source.name} (step {run.step})",
            page.table(["figure", "value"], figures),
            verdict_html,
            page.image(plots.spectrum(singular_values(z).numpy()), "spectrum"),
        )
    ]
    coords, how = project_2d(z)
    out.append(
        page.section(
            "2-D map of the embeddings",
            page.image(
                plots.embedding_map(
                    coords,
                    shown.labels.numpy(),
                    list(source.classes or []),
                    f"{how} of {len(z)} {split_name} embeddings",
                ),  # fmt: skip
                "embedding map",
                f"{how} of the L2-normalised embeddings, coloured by label.",
            ),
        )
    )
    if source.test is not None and source.train is not None:
        bank = embed_samples(method, source.train, bank_size, collate, device)
        out.append(neighbour_section(shown, bank, queries, list(source.classes or [])))
    out.append(method_section(run, shown, split, collate, device))
    return [s for s in out if s]


def neighbour_section(shown: Embedded, bank: Embedded, queries: int, classes: list[str]) -> str:
    """The ``k`` nearest training samples of the first test samples (images or texts)."""
    k = 8
    q = min(queries, len(shown.features))
    idx = neighbours(shown.features[:q], bank.features, k)  # (q, k)

    def name(label: int) -> str:
        return classes[label] if 0 <= label < len(classes) else "-"

    title = f"Nearest training neighbours of {q} test samples (cosine, {len(bank.features)} in the bank)"
    if shown.thumbnails is not None and bank.thumbnails is not None:
        rows, frames = [], []
        for i in range(q):
            label = int(shown.labels[i])
            rows.append((f"query: {name(label)}", torch.cat([shown.thumbnails[i : i + 1],
                                                              bank.thumbnails[idx[i]]])))  # fmt: skip
            frame = [None] + [
                None if label < 0 else ("green" if int(bank.labels[j]) == label else "red")
                for j in idx[i].tolist()
            ]
            frames.append(frame)
        return page.section(
            title,
            page.image(
                plots.image_rows(rows, frames),
                "nearest neighbours",
                "First column: the query; then its neighbours, nearest first, framed green when "
                "they share the query's label and red when not.",
            ),
        )
    if shown.texts and bank.texts:
        rows = []
        for i in range(q):
            near = "<br>".join(
                f"[{page.esc(name(int(bank.labels[j])))}] {page.esc(bank.texts[j][:160])}"
                for j in idx[i, :4].tolist()
            )
            rows.append(
                f"<tr><td>[{page.esc(name(int(shown.labels[i])))}] "
                f"{page.esc(shown.texts[i][:160])}</td><td>{near}</td></tr>"
            )
        return page.section(
            title,
            "<table><tr><th>query [label]</th><th>nearest 4 [label]</th></tr>"
            + "".join(rows)
            + "</table>",
        )
    return ""


def method_section(run: Any, shown: Embedded, split: Any, collate: Any, device: str) -> str:  # noqa: ANN401
    """The method's own panels (``report_panels``) and ViT attention maps."""
    from selfsup.evaluate.features import first
    from selfsup.report.attention import cls_attention

    method = run.method
    batch = next(iter(DataLoader(first(split, 256), batch_size=256, collate_fn=collate)))
    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    panels: list[Panel] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        panels.extend(method.report_panels(batch))
    parts = []
    for panel in panels:
        if panel.kind == "images":
            data = plots.image_rows(list(panel.rows.items()))
        else:
            assert panel.values is not None
            data = plots.bars(panel.values, panel.title)
        parts.append(
            f"<h3>{page.esc(panel.title)}</h3>" + page.image(data, panel.title, panel.caption)
        )
    backbone = getattr(method, "backbone", None)
    if backbone is not None and "image" in batch and hasattr(method, "preprocess"):
        with torch.no_grad():
            maps = cls_attention(backbone.model, method.preprocess(batch["image"][:8]))
        if maps is not None:
            images = batch["image"][:8].float().cpu() / 255.0
            rows = [("image", images), ("attention", images)]
            parts.append(
                "<h3>Attention of the class token (last block)</h3>"
                + page.image(
                    plots.image_rows(rows, overlays=[None, maps.cpu()]),
                    "attention maps",
                    "The [CLS] token's attention over the patches in the last block, averaged "
                    "over heads (as in DINO, figure 1), drawn over the image.",
                )
            )
    if not parts:
        return ""
    return page.section(f"Figures of {run.config.method}", *parts)


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
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    if samples < 2 or bank_size < 1 or queries < 1:
        raise ConfigError("report needs samples >= 2, bank_size >= 1 and queries >= 1")
    config_text = (run_dir / "config.yaml").read_text()
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


def compare(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write one page comparing runs: a table of budgets and results, and overlaid curves."""
    from selfsup.config import load_config

    if not run_dirs:
        raise ConfigError("compare needs at least one run directory")
    rows, curves, protocols = [], {}, []
    runs = []
    for given in run_dirs:
        run_dir = Path(given)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
        config = load_config(run_dir / "config.yaml")
        summary = (
            json.loads((run_dir / "summary.json").read_text())
            if (run_dir / "summary.json").is_file()
            else {}
        )
        results = read_jsonl(run_dir / "results.jsonl")
        latest: dict[str, Any] = {}
        for r in results:  # the last result of each protocol, trained and at random init
            key = f"{r.get('protocol')}{' (random init)' if r.get('random_init') else ''}"
            figure = HEADLINE.get(str(r.get("protocol")), "top1")
            if figure in r:
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
               *[f"{p} {HEADLINE.get(p.split(' ')[0], 'top1')}" for p in protocols]]  # fmt: skip
    sections = [
        page.section(
            "Runs and results",
            page.table(headers, rows),
            page.note(
                "Each result column holds the last result of that protocol in the run's "
                "results.jsonl; compare runs at equal budget (the budget column)."
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
