"""Masked-token accuracy of a masked language model (protocol ``mlm``).

The test split is packed into ``seq_len`` blocks (:class:`~selfsup.data.packing.PackedBlocks`,
one ``[CLS] ... [SEP]`` segment each: the same held-out blocks for every method, including
``bert`` and ``albert``, which train on segment pairs with token types) and each block is masked
with the method's training rates (BERT's 15 %, 80/10/10 by default) by a generator seeded with
``--seed``, so the figure is the same run to run; the score is the share of masked positions
where the model's top token is the original. A method supports the protocol when it has
``predict_masked(batch, generator) -> (logits, targets)``, as every
:class:`~selfsup.methods.mlm.MaskedEncoder` does (``mlm``, ``bert``, ``roberta``, ``albert``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from selfsup.config import ConfigError
from selfsup.evaluate.protocols import EvalOptions, register_protocol

if TYPE_CHECKING:
    from selfsup.methods.mlm import MaskedEncoder


@torch.no_grad()
def masked_token_accuracy(
    method: MaskedEncoder, loader: Any, seed: int = 0, max_batches: int | None = None
) -> float:
    """Accuracy at masked positions over ``loader`` with a fixed masking seed (reproducible).

    The model runs in eval mode (no dropout) and its training mode is restored afterwards; with a
    deterministic loader the same seed gives the same figure.

    Args:
        method: a ``MaskedEncoder`` (``mlm``, ``bert``, ``roberta``, ``albert``).
        loader: yields text batches (dicts of ``(B, L)`` tensors).
        seed: seed of the masking generator.
        max_batches: stop after this many batches (None = the whole loader).
    """
    device = next(method.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    was_training = method.training
    method.eval()
    correct = total = 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}
            logits, targets = method.predict_masked(batch, generator)
            correct += int((logits.argmax(dim=-1) == targets).sum())
            total += targets.numel()
    finally:
        method.train(was_training)
    return correct / max(total, 1)


@register_protocol("mlm", "masked-token accuracy of a masked LM on the held-out split, fixed seed")
def masked_accuracy(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """Masked-token accuracy (%) of ``run``'s model on ``source``'s test split."""
    from selfsup.data.packing import PackedBlocks

    if options.extra:
        raise ConfigError(f"protocol mlm takes no --arg options, got {', '.join(options.extra)}")
    if source.test is None:
        raise ConfigError(f"data {source.name!r} has no test split to evaluate on")
    blocks = PackedBlocks(source.test, run.tokenizer, run.config.seq_len)
    loader = torch.utils.data.DataLoader(blocks, batch_size=options.batch_size)
    accuracy = masked_token_accuracy(run.method, loader, seed=options.seed)
    return {"masked_token_acc": 100.0 * accuracy}
