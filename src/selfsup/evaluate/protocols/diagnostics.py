"""``diagnostics``: the label-free figures of :mod:`selfsup.evaluate.diagnostics`, on demand.

Embeds ``--query-size`` (default 2,000) samples of the test split (the training split when
there is none; a seeded draw from all of it, or a stream's first samples) and reports effective
rank (RankMe), normalised std, uniformity, the collapse verdict and the normalised
singular-value spectrum (first 64 values), and for image methods the alignment of two augmented
views (random flip and pad-crop, Wang & Isola 2020), computed on the method's evaluation
features. No labels are needed.
"""

from __future__ import annotations

from typing import Any

import torch

from selfsup.config import ConfigError
from selfsup.evaluate.protocols import EvalOptions, register_protocol

DEFAULT_SAMPLES = 2000


@register_protocol("diagnostics", "label-free: effective rank, uniformity, alignment, collapse")
def diagnostics(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """``selfsup evaluate RUN --protocol diagnostics [--query-size N]``."""
    from selfsup.evaluate.diagnostics import alignment, collapse, singular_values, uniformity
    from selfsup.evaluate.features import collate_for, extract
    from selfsup.evaluate.protocols.finetune import flip_and_crop

    if options.extra:
        raise ConfigError(
            f"protocol diagnostics takes no --arg options, got {', '.join(options.extra)}"
        )
    split = "test" if source.test is not None else "train"
    dataset = source.test if source.test is not None else source.train
    limit = options.query_size or DEFAULT_SAMPLES
    method = run.method
    collate = collate_for(method, run.tokenizer, run.config.seq_len)
    z, _, _ = extract(method.embed, dataset, options.batch_size, limit, collate, options.device)
    if len(z) < 2:
        raise ConfigError(f"protocol diagnostics needs at least 2 samples of {source.name!r}")
    verdict = collapse(z)
    s = singular_values(z)
    result: dict[str, Any] = {
        "split": split,
        "samples": len(z),
        "dim": z.shape[1],
        "effective_rank": verdict.effective_rank,
        "normalized_std": verdict.normalized_std,
        "uniformity": uniformity(z),
        "collapse": verdict.kind,
        "spectrum": (s / s.sum().clamp_min(1e-12))[:64].tolist(),
    }
    if method.kind == "image":
        generator = torch.Generator().manual_seed(options.seed)

        def view(batch: dict[str, Any]) -> torch.Tensor:
            images = flip_and_crop(batch["image"].cpu(), generator).to(batch["image"].device)
            return method.embed({**batch, "image": images})

        with torch.random.fork_rng(devices=[]):
            a, _, _ = extract(view, dataset, options.batch_size, limit, collate, options.device)
            b, _, _ = extract(view, dataset, options.batch_size, limit, collate, options.device)
        result["alignment"] = alignment(a, b)
    return result
