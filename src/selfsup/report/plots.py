"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plain(text: str) -> str:
    """A user's string (class name, caption, run name) as matplotlib text: ``$`` escaped, so
    that it is never read as mathtext."""
    return str(text).replace("$", r"\$")


import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402

# Groups of metrics.jsonl keys drawn in one panel each, in this order; a group whose keys never
# appear is left out.
CURVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("learning rate", ("lr",)),
    ("throughput (samples/s)", ("samples_per_s",)),
    ("online kNN top-1 (%)", ("knn_top1",)),
    ("effective rank (RankMe)", ("effective_rank", "head_effective_rank")),
    ("normalised std", ("normalized_std", "head_normalized_std")),
    ("uniformity", ("uniformity", "head_uniformity")),
)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    points = [(s, v) for s, v in points if isinstance(v, int | float) and math.isfinite(v)]
    return [s for s, _ in points], [v for _, v in points]


def _grid(n: int, cols: int = 3) -> tuple[Figure, list[Any]]:
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def training_curves(records: Sequence[dict[str, Any]]) -> bytes | None:
    """Loss, learning rate, throughput, online kNN and diagnostics over steps; steps where the
    diagnostics announced a collapse are marked in red. None when nothing was logged."""
    groups = [(t, keys) for t, keys in CURVES if any(_series(records, k)[0] for k in keys)]
    if not groups:
        return None
    collapsed = [r["step"] for r in records if r.get("collapse", 0) > 0]
    fig, axes = _grid(len(groups))
    for ax, (title, keys) in zip(axes, groups, strict=True):
        for key in keys:
            steps, values = _series(records, key)
            if steps:
                label = "projector output" if key.startswith("head_") else "encoder"
                ax.plot(steps, values, marker="." if len(steps) < 30 else None,
                        label=label if len(keys) > 1 else None)  # fmt: skip
        for step in collapsed:
            ax.axvline(step, color="red", alpha=0.3, linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def overlaid_curves(runs: dict[str, Sequence[dict[str, Any]]]) -> bytes | None:
    """The same panels as :func:`training_curves`, one line per run (``compare``)."""
    groups = [
        (t, k)
        for t, keys in CURVES
        for k in keys[:1]
        if any(_series(r, k)[0] for r in runs.values())
    ]
    if not groups:
        return None
    fig, axes = _grid(len(groups))
    for ax, (title, key) in zip(axes, groups, strict=True):
        for name, records in runs.items():
            steps, values = _series(records, key)
            if steps:
                ax.plot(steps, values, label=plain(name), marker="." if len(steps) < 30 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def embedding_map(points: np.ndarray, labels: np.ndarray, classes: list[str], title: str) -> bytes:
    """A 2-D scatter of the embedded samples, coloured by label (grey where unlabelled)."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    if len(classes) == 0 or (labels < 0).all():
        ax.scatter(points[:, 0], points[:, 1], s=6, color="grey", alpha=0.7)
    for c, name in enumerate(classes):
        mine = labels == c
        if mine.any():
            ax.scatter(points[mine, 0], points[mine, 1], s=6, color=cmap(c % cmap.N),
                       label=plain(name))  # fmt: skip
    if classes:
        ax.legend(fontsize=7, markerscale=2, loc="best", ncol=1 + len(classes) // 12)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return png(fig)


def spectrum(values: np.ndarray) -> bytes:
    """Singular values of the centred embeddings, largest first, on a log scale."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    values = values[values > values.max() * 1e-8] if len(values) else values  # drop round-off
    ax.semilogy(np.arange(1, len(values) + 1), values)
    ax.set_xlabel("index", fontsize=8)
    ax.set_ylabel("singular value", fontsize=8)
    ax.set_title("singular-value spectrum of the test embeddings", fontsize=10)
    ax.tick_params(labelsize=8)
    return png(fig)


def image_rows(
    rows: Sequence[tuple[str, Tensor]],
    frames: Sequence[Sequence[str | None]] | None = None,
    overlays: Sequence[Tensor | None] | None = None,
) -> bytes:
    """A grid of images: one row per ``(label, (N, 3, H, W) float in [0, 1])``.

    Args:
        rows: the rows, each with its label.
        frames: per row and image, a frame colour (e.g. green for a neighbour of the query's
            class) or None.
        overlays: per row, (N, H, W) heat maps in [0, 1] drawn over the images, or None.
    """
    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.2, 1.15 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.set_visible(False)
                continue
            ax.imshow(images[c].permute(1, 2, 0).float().clamp(0, 1).cpu().numpy(),
                      interpolation="nearest")  # fmt: skip
            if overlays is not None and overlays[r] is not None:
                ax.imshow(overlays[r][c].cpu().numpy(), cmap="inferno", alpha=0.55,
                          interpolation="bilinear")  # fmt: skip
            colour = frames[r][c] if frames is not None else None
            for spine in ax.spines.values():
                spine.set_visible(colour is not None)
                if colour is not None:
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
        axes[r][0].set_ylabel(plain(label), fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return png(fig)


def bars(values: Tensor, title: str) -> bytes:
    """Values sorted largest first, as bars (e.g. samples per SwAV prototype)."""
    v = np.sort(values.float().cpu().numpy())[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    ax.bar(np.arange(len(v)), v, width=1.0)
    ax.set_xlabel("rank", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    return png(fig)


def confusion(matrix: np.ndarray, classes: Sequence[str]) -> bytes:
    """A confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    c = len(matrix)
    side = min(7.0, 1.8 + 0.3 * c)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues")
    names = [plain(n) for n in classes] if len(classes) == c else [str(i) for i in range(c)]
    ax.set_xticks(range(c), names, rotation=90, fontsize=7)
    ax.set_yticks(range(c), names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    if c <= 20:
        top = matrix.max() if matrix.size else 1
        for i in range(c):
            for j in range(c):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if matrix[i, j] > top / 2 else "black")  # fmt: skip
    return png(fig)
