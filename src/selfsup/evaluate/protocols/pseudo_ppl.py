"""Pseudo-perplexity of a masked language model (protocol ``pseudo_perplexity``).

Salazar, Liang, Nguyen, Kirchhoff 2020, "Masked Language Model Scoring", ACL,
https://arxiv.org/abs/1910.14659, section 2: each token ``w_t`` of a text is masked on its own,
in a copy of the text where only it is masked, and the model's log-probability of the original
token there is read; the pseudo-log-likelihood is ``PLL = sum_t log P(w_t | W without w_t)``, and
over the ``N`` tokens scored in a corpus the pseudo-perplexity is ``PPPL = exp(-PLL / N)``.
Lower is better; a model that knows nothing has PPPL close to the vocabulary size.

Here the held-out text is the test split packed into ``seq_len`` blocks (``[CLS] ... [SEP]``,
:class:`~selfsup.data.packing.PackedBlocks`; the same blocks for every method, although ``bert``
and ``albert`` train on segment pairs with token types); every non-special token is
scored, in stream order, until ``max_tokens`` tokens are scored (``--arg max_tokens=N``, default
5000; 0 = all). The choice is deterministic (no masking seed is involved), so the figure is the
same run to run. The masked copies of a block are run ``--batch-size`` at a time.

A method supports the protocol when it has ``mask_token_id`` and
``token_logits(input_ids, attention_mask, selected, token_type_ids=None) -> (N, V)`` (vocabulary
scores at the selected positions, row-major), as every
:class:`~selfsup.methods.mlm.MaskedEncoder` does (``mlm``, ``bert``, ``roberta``, ``albert``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.config import ConfigError
from selfsup.engine.logging import SHOW_PROGRESS, Progress
from selfsup.evaluate.protocols import EvalOptions, register_protocol

DEFAULT_MAX_TOKENS = 5000


@torch.no_grad()
def pseudo_log_likelihood(
    method: Any,  # noqa: ANN401
    blocks: Iterable[dict[str, Tensor]],
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    batch_size: int = 256,
) -> tuple[float, int]:
    """Sum of ``log P(original token | block with only it masked)`` over the scored tokens.

    The model runs in eval mode (no dropout) on its own device; its mode is restored afterwards.

    Args:
        method: a masked-token method (``mask_token_id``, ``special_token_ids``,
            ``token_logits``).
        blocks: single examples ``{"input_ids": (L,), "attention_mask": (L,) optional,
            "special_tokens_mask": (L,) optional (True = special, not scored),
            "token_type_ids": (L,) optional}``.
        max_tokens: stop after scoring this many tokens (None = all).
        batch_size: masked copies per forward pass.

    Returns:
        ``(pseudo-log-likelihood, number of scored tokens)``.
    """
    device = next(method.parameters()).device
    was_training = method.training
    method.eval()
    total, count = 0.0, 0
    # one forward per scored token: minutes on a CPU for a few thousand
    bar = Progress(max_tokens, "tokens", SHOW_PROGRESS.get(), label="pseudo_perplexity")
    of = f" of {max_tokens:,}" if max_tokens is not None else ""
    try:
        for block in blocks:
            if max_tokens is not None and count >= max_tokens:
                break
            ids = block["input_ids"].to(device)  # (L,)
            attention = block.get("attention_mask")
            attention = torch.ones_like(ids) if attention is None else attention.to(device)
            special = block.get("special_tokens_mask")
            if special is None:
                specials = torch.tensor(method.special_token_ids, device=device)
                special = torch.isin(ids, specials)
            types = block.get("token_type_ids")
            positions = (~special.to(device).bool() & attention.bool()).nonzero().squeeze(1)
            if max_tokens is not None:
                positions = positions[: max_tokens - count]  # (n,) scored positions
            for chunk in positions.split(batch_size):
                c = len(chunk)
                rows = torch.arange(c, device=device)
                copies = ids.expand(c, -1).clone()  # (C, L) one masked token per copy
                copies[rows, chunk] = method.mask_token_id
                selected = torch.zeros_like(copies, dtype=torch.bool)  # True = scored
                selected[rows, chunk] = True
                logits = method.token_logits(
                    copies,
                    attention.expand(c, -1),
                    selected,
                    None if types is None else types.to(device).expand(c, -1),
                )  # (C, V): row r scores position chunk[r]
                log_p = F.log_softmax(logits.float(), dim=-1)[rows, ids[chunk]]  # (C,)
                total += float(log_p.sum())
                count += c
                bar.update(count, f"{count:,}{of} tokens scored")
    finally:
        bar.close()
        method.train(was_training)
    return total, count


def _max_tokens(extra: dict[str, str]) -> int | None:
    """``max_tokens`` from ``--arg`` (0 = no cap); any other key is an error naming the valid."""
    unknown = sorted(set(extra) - {"max_tokens"})
    if unknown:
        raise ConfigError(
            f"protocol pseudo_perplexity: unknown --arg {', '.join(unknown)}; valid: max_tokens"
        )
    raw = extra.get("max_tokens", str(DEFAULT_MAX_TOKENS))
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"--arg max_tokens must be an integer >= 0 (0 = all), got {raw!r}")
    return value or None


@register_protocol(
    "pseudo_perplexity",
    "pseudo-perplexity of a masked LM on the held-out split (Salazar et al. 2020)",
)
def pseudo_perplexity(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """PPPL of ``run``'s masked language model on ``source``'s test split (module docstring)."""
    from selfsup.data.packing import PackedBlocks

    max_tokens = _max_tokens(options.extra)
    method = run.method
    if not hasattr(method, "token_logits"):
        raise ConfigError(f"protocol pseudo_perplexity needs a masked LM; {run.path} is not one")
    if source.test is None:
        raise ConfigError(f"data {source.name!r} has no test split to evaluate on")
    blocks = PackedBlocks(source.test, run.tokenizer, run.config.seq_len)
    total, count = pseudo_log_likelihood(method, blocks, max_tokens, options.batch_size)
    if count == 0:
        raise ConfigError(
            f"data {source.name!r}: the test split has no block of seq_len={run.config.seq_len} "
            "tokens to score"
        )
    return {
        "pseudo_perplexity": math.exp(-total / count),
        "pseudo_log_likelihood_per_token": total / count,
        "scored_tokens": count,
        "max_tokens": max_tokens or 0,
        "seq_len": run.config.seq_len,
    }
