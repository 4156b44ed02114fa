"""T5's span corruption of token blocks, batched on the device (Raffel et al. 2020, "Exploring
the Limits of Transfer Learning with a Unified Text-to-Text Transformer", sections 3.1.4 and
3.3.4; the method is :mod:`selfsup.methods.t5`).

As in the reference T5 code's ``random_spans_noise_mask``: a block of n tokens gets
round(0.15 n) noise tokens (at least 1, at most n - 1) in round(noise / 3) spans (at least 1);
the noise and the non-noise tokens are each cut into that many non-empty spans, every cut equally
likely, and the spans alternate starting with non-noise. Each noise span becomes one sentinel in
the input, and the target is each sentinel followed by its span's tokens, then EOS.
:func:`span_corruption_lengths` gives the raw block length whose corrupted input has exactly
``seq_len`` tokens, EOS included, and the target length, so packed blocks train with no padding
(the reference's ``compute_input_and_target_lengths``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def noise_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a block of ``length`` tokens, clamped as the reference."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def span_corruption_lengths(
    seq_len: int, noise_density: float = 0.15, mean_span: float = 3.0
) -> tuple[int, int]:
    """Raw block length and target length for corrupted inputs of exactly ``seq_len`` tokens.

    A raw block of n tokens with k noise tokens in s spans gives an input of n - k + s + 1 tokens
    (non-noise, one sentinel per span, EOS) and a target of k + s + 1. The input length grows by
    0 or 1 as n grows by 1 (k and s grow by at most 1 each, s no faster than k), so the largest n
    whose input fits has an input of exactly ``seq_len``.

    Returns:
        ``(raw_length, target_length)``.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be at least 3 for span corruption, got {seq_len}")

    def input_length(n: int) -> int:
        noise, spans = noise_counts(n, noise_density, mean_span)
        return n - noise + spans + 1

    n = 2
    while input_length(n + 1) <= seq_len:
        n += 1
    if input_length(n) != seq_len:  # cannot happen (steps of 0 or 1); guards the argument
        raise ValueError(f"no raw length gives inputs of exactly {seq_len} tokens")
    noise, spans = noise_counts(n, noise_density, mean_span)
    return n, noise + spans + 1


def _random_segmentation(
    total: int, segments: int, batch: int, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """``(batch, segments)`` positive lengths summing to ``total``, each split equally likely.

    A split is a choice of ``segments - 1`` distinct cut points among the ``total - 1`` gaps;
    ranking i.i.d. uniforms gives a uniformly random such choice per row.
    """
    if segments == 1:
        return torch.full((batch, 1), total, device=device)
    noise = torch.rand(batch, total - 1, generator=generator, device=device)
    cuts = noise.argsort(dim=1)[:, : segments - 1].sort(dim=1).values + 1  # (batch, S-1)
    edges = [torch.zeros_like(cuts[:, :1]), cuts, torch.full_like(cuts[:, :1], total)]
    return torch.cat(edges, dim=1).diff(dim=1)  # (batch, S)


def random_spans_noise_mask(
    batch: int,
    length: int,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """T5's noise mask for ``batch`` blocks of ``length`` tokens.

    Returns:
        ``noise (B, L)`` bool (True = dropped into the target) and ``span (B, L)`` int64, the
        index j of the noise span at noise tokens and of the non-noise span just before noise
        span j elsewhere (spans alternate non-noise, noise, ..., starting with non-noise).
    """
    device = torch.device(device)
    noise_count, spans = noise_counts(length, noise_density, mean_span)
    if length - noise_count < spans:
        raise ValueError(f"a block of {length} tokens is too short for {spans} noise spans")
    noise_lengths = _random_segmentation(noise_count, spans, batch, device, generator)
    keep_lengths = _random_segmentation(length - noise_count, spans, batch, device, generator)
    interleaved = torch.stack([keep_lengths, noise_lengths], dim=2).reshape(batch, 2 * spans)
    starts = interleaved.cumsum(dim=1)[:, :-1]  # (B, 2S-1) first token of spans 1 .. 2S-1
    marks = torch.zeros(batch, length, dtype=torch.long, device=device)
    marks.scatter_(1, starts, 1)
    index = marks.cumsum(dim=1)  # (B, L) span number in the interleaved order, 0 .. 2S-1
    return index % 2 == 1, index // 2


def corrupt_spans(
    ids: Tensor, noise: Tensor, span: Tensor, sentinel_ids: Tensor, eos_id: int
) -> tuple[Tensor, Tensor]:
    """Inputs and targets of span corruption.

    Args:
        ids: ``(B, L)`` raw token ids.
        noise: ``(B, L)`` True = noise, with the same number of noise tokens and spans per row.
        span: ``(B, L)`` span index from ``random_spans_noise_mask``.
        sentinel_ids: ``(S_max,)`` ids of ``<extra_id_0>``, ``<extra_id_1>``, ...
        eos_id: appended to inputs and targets.

    Returns:
        ``inputs (B, L - k + s + 1)``: the non-noise tokens with each noise span replaced by its
        sentinel, then EOS; ``targets (B, k + s + 1)``: each sentinel followed by its span's
        tokens, then EOS (k noise tokens in s spans per row).
    """
    b = ids.shape[0]
    first = torch.zeros_like(noise[:, :1])
    previous = torch.cat([first, noise[:, :-1]], dim=1)  # (B, L) noise flag of the token before
    sentinels = sentinel_ids[span]  # (B, L)
    eos = torch.full((b, 1), eos_id, dtype=ids.dtype, device=ids.device)
    # input: keep non-noise tokens and the first token of each noise span, as its sentinel
    keep_in = ~noise | ~previous
    inputs = torch.where(noise, sentinels, ids)[keep_in].view(b, -1)
    # target: keep noise tokens and the first token of each non-noise span, as the sentinel of
    # the noise span that follows it
    starts_keep = ~noise & (previous | (torch.arange(ids.shape[1], device=ids.device) == 0))
    targets = torch.where(noise, ids, sentinels)[noise | starts_keep].view(b, -1)
    return torch.cat([inputs, eos], dim=1), torch.cat([targets, eos], dim=1)
