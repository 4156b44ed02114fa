"""Token masking for masked language modelling, batched on the device.

BERT (Devlin et al. 2019, section 3.1 and appendix C.2): a fraction ``mlm_probability`` (15 %) of
the maskable positions is selected for prediction; of the selected tokens 80 % are replaced by
[MASK], 10 % by a random token and 10 % are left unchanged, so that the encoder cannot rely on
[MASK] marking the positions it is asked about (a token it never sees at fine-tuning time).

Selection is an independent Bernoulli draw per position, as in RoBERTa's dynamic masking and
``transformers.DataCollatorForLanguageModeling``: the rate is 15 % in expectation, not exactly 15 %
of every sequence as in BERT's static preprocessing. :func:`mask_batch` applies
:func:`mask_tokens` to a text batch, with its attention and special-token masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100  # label of unselected positions; ``F.cross_entropy``'s default ignore_index


def _random_regular_tokens(
    shape: torch.Size,
    vocab_size: int,
    special_token_ids: Sequence[int],
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """Ids drawn uniformly from ``[0, vocab_size)`` minus ``special_token_ids``, shape ``shape``.

    A draw ``r`` in ``[0, vocab_size - k)`` maps to the ``r``-th regular id by adding the number
    of special ids ``s_j`` (sorted, ``j = 0..k-1``) with ``s_j - j <= r``; no host sync, unlike
    indexing a ``nonzero()`` list of allowed ids.
    """
    specials = sorted({int(i) for i in special_token_ids if 0 <= int(i) < vocab_size})
    regular = vocab_size - len(specials)
    if regular <= 0:
        raise ValueError("every token id of the vocabulary is special; nothing to sample")
    r = torch.randint(regular, shape, generator=generator, device=device)
    if not specials:
        return r
    shifted = torch.tensor(specials, device=device) - torch.arange(len(specials), device=device)
    return r + torch.searchsorted(shifted, r, right=True)


def mask_tokens(
    input_ids: Tensor,
    special_tokens_mask: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace: float = 0.8,
    random_replace: float = 0.1,
    attention_mask: Tensor | None = None,
    special_token_ids: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking of a batch of token ids (Devlin et al. 2019).

    Args:
        input_ids: ``(B, L)`` int64 token ids; not modified.
        special_tokens_mask: ``(B, L)`` bool, True = special token ([CLS], [SEP], [PAD], ...),
            never selected.
        mask_token_id: id of [MASK].
        vocab_size: number of token ids of the tokenizer (``len(tokenizer)``); random
            replacements are drawn from ``[0, vocab_size)``.
        mlm_probability: probability that a maskable position is selected for prediction.
        mask_replace: fraction of selected positions replaced by [MASK].
        random_replace: fraction of selected positions replaced by a random regular token; the
            rest (``1 - mask_replace - random_replace``) keep their token.
        attention_mask: optional ``(B, L)``, 1 = real token, 0 = padding (never selected).
        special_token_ids: ids never used as random replacements (``tokenizer.all_special_ids``);
            default ``[mask_token_id]``.
        generator: RNG on ``input_ids.device``; None uses torch's global RNG. A fixed generator
            gives a reproducible mask (evaluation).

    Returns:
        ``(masked_ids, labels)``, both ``(B, L)`` int64 on ``input_ids.device``: the corrupted
        input, and the original id at selected positions (True = masked, predicted) with
        ``IGNORE_INDEX`` (-100) everywhere else.
    """
    check_masking(mlm_probability, mask_replace, random_replace, training=False)
    device, shape = input_ids.device, input_ids.shape
    maskable = ~special_tokens_mask.bool()  # (B, L) True = may be selected
    if attention_mask is not None:
        maskable &= attention_mask.bool()
    selected = maskable & (torch.rand(shape, generator=generator, device=device) < mlm_probability)
    # one uniform draw per position splits the selected ones into [MASK] / random / unchanged
    action = torch.rand(shape, generator=generator, device=device)
    to_mask = selected & (action < mask_replace)
    to_random = selected & (action >= mask_replace) & (action < mask_replace + random_replace)
    if special_token_ids is None:
        special_token_ids = [mask_token_id]
    random_ids = _random_regular_tokens(shape, vocab_size, special_token_ids, device, generator)

    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)  # (B, L)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # (B, L)
    return masked, labels


def check_masking(
    mlm_probability: float, mask_replace: float, random_replace: float, training: bool = True
) -> None:
    """Refuse masking rates out of range, naming the argument (a method checks them when it is
    built, before a run starts). Training needs some tokens selected: ``mlm_probability > 0``.

    Raises:
        ValueError: a rate out of range.
    """
    low = "(0, 1]" if training else "[0, 1]"
    if not (0.0 < mlm_probability <= 1.0 if training else 0.0 <= mlm_probability <= 1.0):
        raise ValueError(f"mlm_probability must be in {low}, got {mlm_probability}")
    if mask_replace < 0 or random_replace < 0 or mask_replace + random_replace > 1:
        raise ValueError(
            "mask_replace and random_replace must be >= 0 with a sum of at most 1, got "
            f"{mask_replace} and {random_replace}"
        )


def mask_batch(
    batch: dict[str, Tensor],
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: list[int],
    mlm_probability: float,
    mask_replace: float,
    random_replace: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Select and corrupt tokens of ``batch["input_ids"]`` for masked-token prediction.

    Args:
        batch: ``input_ids (B, L)``, optional ``attention_mask (B, L)`` (1 = token) and
            ``special_tokens_mask (B, L)`` (True = special; derived from ``special_token_ids``
            if absent). Special and padding tokens are never selected.
        mask_token_id, vocab_size, special_token_ids: the tokenizer's [MASK], size and specials.
        mlm_probability, mask_replace, random_replace: selection rate and the fractions of
            selected tokens replaced by [MASK] and by a random regular token (BERT: 0.15, 0.8,
            0.1; ELECTRA: 0.15, 1.0, 0.0).
        generator: RNG on the batch's device; None = torch's global RNG.

    Returns:
        ``(masked_ids, labels, attention_mask)``, all ``(B, L)``; ``labels`` holds the original
        id at selected positions and ``IGNORE_INDEX`` elsewhere.
    """
    ids = batch["input_ids"]
    attention_mask = batch.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(ids)
    special = batch.get("special_tokens_mask")
    if special is None:
        special = torch.isin(ids, torch.tensor(special_token_ids, device=ids.device))
    masked, labels = mask_tokens(
        ids,
        special,
        mask_token_id=mask_token_id,
        vocab_size=vocab_size,
        mlm_probability=mlm_probability,
        mask_replace=mask_replace,
        random_replace=random_replace,
        attention_mask=attention_mask,
        special_token_ids=special_token_ids,
        generator=generator,
    )
    return masked, labels, attention_mask


@torch.no_grad()
def sample_tokens(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token id per row, drawn from ``softmax(logits)`` in fp32, without gradient (ELECTRA's
    generator sample, which replaces the masked tokens for the discriminator).

    Args:
        logits: ``(N, V)`` generator scores at the N masked positions.
        generator: RNG on ``logits.device``; None = torch's global RNG.

    Returns:
        ``(N,)`` int64 sampled ids.
    """
    if logits.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=logits.device)
    probs = torch.softmax(logits.detach().float(), dim=-1)  # (N, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)
