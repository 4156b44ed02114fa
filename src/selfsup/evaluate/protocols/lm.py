"""Causal language-model perplexity on held-out text.

The held-out split is packed as in GPT training (:class:`selfsup.methods.causal_lm.CausalBlocks`:
each document followed by eos, the stream cut into non-overlapping blocks of the run's
``seq_len``), keeping the final partial block so that every token of the split is scored except
the first of each block, which has no context. Perplexity is ``exp`` of the token-weighted mean
negative log-likelihood over all scored tokens (not the mean of per-block perplexities).

Non-overlapping blocks give each token between 0 and ``seq_len - 1`` tokens of context; a strided
sliding window (as GPT-2's paper evaluated) gives more and so a lower perplexity. Figures are
comparable between runs with the same tokenizer and ``seq_len`` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from selfsup.config import ConfigError
from selfsup.evaluate.protocols import EvalOptions, register_protocol


@torch.no_grad()
def corpus_perplexity(
    method: Any,  # noqa: ANN401
    batches: Iterable[dict[str, Tensor]],
) -> dict[str, Any]:
    """Perplexity of ``method`` over ``batches``, in eval mode (training mode restored after).

    Args:
        method: has ``token_nll(batch) -> (sum_nll, count)`` (summed next-token NLL in nats
            and the number of targets), as :class:`selfsup.methods.causal_lm.CausalLM`.
        batches: dicts with ``input_ids (B, L)`` and ``attention_mask (B, L)`` (1 = real token).

    Returns:
        ``{"perplexity", "nll" (mean per token, nats), "tokens" (scored), "blocks"}``.
    """
    device = next(method.parameters()).device
    was_training = method.training
    method.eval()
    total, tokens, blocks = 0.0, 0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}
            nll, count = method.token_nll(batch)
            total += float(nll)  # a Python float (double): no fp32 drift over a long corpus
            tokens += int(count)
            blocks += batch["input_ids"].shape[0]
    finally:
        method.train(was_training)
    if tokens == 0:
        raise ValueError("no token to score: the held-out text is shorter than two tokens")
    mean = total / tokens
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": tokens, "blocks": blocks}


@register_protocol(
    "perplexity", "causal-LM perplexity of the held-out split, non-overlapping seq_len blocks"
)
def perplexity(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """The ``perplexity`` protocol: :func:`corpus_perplexity` of ``run.method`` on
    ``source.test`` packed into blocks of ``run.config.seq_len``.

    Batches hold ``min(options.batch_size, run.config.batch_size)`` blocks (training fitted that
    many in memory); ``options.query_size`` keeps only the first N blocks. Takes no ``--arg``.
    """
    from selfsup.methods.causal_lm import CausalBlocks

    if options.extra:
        raise ConfigError(
            f"protocol perplexity takes no --arg options, got {', '.join(options.extra)}"
        )
    if source.test is None:
        raise ConfigError(f"data {source.name!r} has no test split to evaluate on")
    if not hasattr(run.method, "token_nll"):
        raise ConfigError(
            f"protocol perplexity needs a causal language model, not {run.config.method}"
        )
    seq_len = run.config.seq_len
    blocks = CausalBlocks(source.test, run.tokenizer, seq_len, keep_tail=True)
    batch_size = min(options.batch_size, run.config.batch_size)
    loader: Iterable[dict[str, Tensor]] = DataLoader(blocks, batch_size=batch_size)
    if options.query_size is not None:
        loader = _first_blocks(loader, options.query_size)
    return {
        "seq_len": seq_len,
        "packing": "non-overlapping",
        **corpus_perplexity(run.method, loader),
    }


def _first_blocks(loader: Iterable[dict[str, Tensor]], limit: int) -> Iterable[dict[str, Tensor]]:
    seen = 0
    for batch in loader:
        if seen >= limit:
            return
        take = min(limit - seen, batch["input_ids"].shape[0])
        yield {k: v[:take] for k, v in batch.items()}
        seen += take
