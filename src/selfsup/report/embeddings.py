"""What the report shows of a trained encoder: diagnostics and spectrum of the test embeddings,
their 2-D map (UMAP when ``umap-learn`` is installed, else t-SNE; PCA under 50 samples), the
nearest training neighbours of a few test queries (images, or sentences for text), and the
method's own figures (``Method.report_panels``; class-token attention for ViT encoders)."""

from __future__ import annotations

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


@dataclass
class Embedded:
    """Embeddings of a fixed subset of a split, with what the report shows of them."""

    features: Tensor  # (N, D)
    labels: Tensor  # (N,) -1 where unlabelled
    thumbnails: Tensor | None  # (N, 3, h, w) float in [0, 1], images only
    texts: list[str]
    head: Tensor | None = None  # (N, D') the method's head output (``embed_head``), if any


@torch.no_grad()
def embed_samples(
    method: Any,  # noqa: ANN401
    dataset: Any,  # noqa: ANN401
    limit: int,
    collate: Any,  # noqa: ANN401
    device: str,
    thumbnail: int = 64,
    head: bool = False,
) -> Embedded:
    """``method.embed`` (and, with ``head``, ``method.embed_head`` of those features where the
    method has a head) of ``limit`` samples (``fixed_subset``), keeping labels, texts and small
    copies of the images (at most ``thumbnail`` px)."""
    from selfsup.evaluate.features import fixed_subset

    loader = DataLoader(fixed_subset(dataset, limit), batch_size=256, collate_fn=collate)
    feats, heads, labels, thumbs, texts, seen = [], [], [], [], [], 0
    for batch in loader:
        n = len(next(iter(batch.values())))
        take = min(n, limit - seen)
        on_device = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        features = method.embed(on_device)
        feats.append(features[:take].float().cpu())
        output = method.embed_head(features) if head else None
        if output is not None:
            heads.append(output[:take].float().cpu())
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
        torch.cat(heads) if len(heads) == len(feats) else None,
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
    shown = embed_samples(method, split, samples, collate, device, head=True)
    z = shown.features
    spaces = {"encoder features": z}
    if shown.head is not None:
        spaces["projector output"] = shown.head
    rows = [["samples", *[len(x) for x in spaces.values()]],
            ["dimensions", *[x.shape[1] for x in spaces.values()]]]  # fmt: skip
    verdicts = [collapse(x) for x in spaces.values()]
    rows.append(["effective rank (RankMe)", *[v.effective_rank for v in verdicts]])
    rows.append(["normalised std", *[v.normalized_std for v in verdicts]])
    rows.append(["uniformity", *[uniformity(x) if len(x) >= 2 else float("nan")
                                 for x in spaces.values()]])  # fmt: skip
    verdict_html = "".join(
        f'<p class="alarm">{page.esc(name)}: {page.esc(v.message)}</p>'
        if v.kind != "none"
        else page.note(f"{name}: {v.message}")
        for name, v in zip(spaces, verdicts, strict=True)
    )
    out = [
        page.section(
            f"Embeddings of the {split_name} split of {source.name} (step {run.step})",
            page.table(["figure", *spaces], rows),
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
    """The ``k`` nearest training samples of a few test samples (images or texts)."""
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
    from selfsup.evaluate.features import fixed_subset
    from selfsup.report.attention import cls_attention

    method = run.method
    batch = next(iter(DataLoader(fixed_subset(split, 256), batch_size=256, collate_fn=collate)))
    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    panels: list[Panel] = []
    # the panels' draws (masks, views) seeded, on the device, and the generators left as they were
    gpu = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=gpu):
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
    # the encoder that embed and export use (DINO's teacher), else the backbone
    backbone = None
    if "image" in batch and hasattr(method, "preprocess"):
        encoder = getattr(method, "encoder", None)
        backbone = encoder() if callable(encoder) else getattr(method, "backbone", None)
    if hasattr(backbone, "model"):
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
