"""word2vec's two ways to train on a batch of draws (see :mod:`.word2vec`).

:func:`summed_loss` is the loss for autograd and the engine's optimizer (``fused=False``, or
several processes). Sparse gradients (``sparse=True``, default) then let SGD touch only the rows a
step used; set ``sparse=False`` for optimizers without sparse support (AdamW, LARS) and for DDP
over NCCL.

:func:`fused_sgd` (``fused=True``, default, one process) is what the engine runs through
``Word2Vec.update`` with ``kernel="torch"`` (a GPU's, and a CPU's without numba): the updates
applied in place, ``chunk_size`` examples at a time, without autograd. Within a chunk every
update comes from the vectors before it (one SGD step on the loss); chunks apply in order, like
the C tool's sequential updates. :func:`.word2vec_kernel.sequential_sgd` (the numba kernel) takes
the same arguments. Both are plain SGD, so the run must use optimizer sgd without momentum,
weight decay or gradient clipping (refused otherwise).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.nce import logistic_loss


@dataclasses.dataclass
class Couples:
    """One loss term: input vectors scored against rows ``outputs (E, T)`` of ``table``, with
    labels ``sign (E, T)`` (+1 target or code bit 0, -1 noise or code bit 1) where ``counted``."""

    table: nn.Embedding
    outputs: Tensor
    sign: Tensor
    counted: Tensor


class Scratch:
    """Reused, uninitialised buffers by name: the fused update's large per-chunk temporaries.

    Allocating megabyte-sized temporaries for every chunk costs page faults on a CPU (glibc
    returns such blocks to the system when they are freed): reusing them made skip-gram's update
    about 1.7x faster on a 2-core CPU (``benchmarks/word2vec.md``).
    """

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    def __call__(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A ``shape`` view of buffer ``name``, of ``like``'s dtype and device."""
        numel = int(np.prod(shape))
        buffer = self.buffers.get(name)
        if (
            buffer is None
            or buffer.numel() < numel
            or buffer.dtype != like.dtype
            or (buffer.device != like.device)
        ):
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self.buffers[name] = buffer
        return buffer[:numel].view(shape)


def summed_loss(
    table: nn.Embedding,
    rows: Tensor,
    slots: Tensor,
    terms: list[Couples],
    *,
    cbow: bool,
    cbow_mean: bool,
    sparse: bool,
) -> Tensor:
    """The loss summed over the examples, differentiable (arguments as for :func:`fused_sgd`;
    ``table`` holds the input vectors, ``sparse`` its gradient's layout for CBOW's bags).

    Returns:
        Scalar: the sum of the terms' logistic losses.
    """
    if cbow:
        sizes = slots.sum(1)  # (E,) context words per example, packed into bags
        hidden = F.embedding_bag(rows[slots], table.weight, sizes.cumsum(0) - sizes, mode="sum",
                                 sparse=sparse)  # fmt: skip
        if cbow_mean:  # the mean's value, the sum's gradient (word2vec.c's update)
            hidden = hidden + (hidden / sizes[:, None] - hidden).detach()
        hidden, slots = hidden[:, None], slots.new_ones(len(rows), 1)  # (E, 1, D)
    else:
        hidden = table(rows)  # (E, S, D)
    total = [
        logistic_loss(hidden, t.table(t.outputs), t.sign, slots[:, :, None] & t.counted[:, None])
        for t in terms
    ]
    return sum(total[1:], total[0])


@torch.no_grad()
def fused_sgd(
    weight: Tensor,
    rows: Tensor,
    slots: Tensor,
    terms: list[Couples],
    lr: float,
    *,
    chunk_size: int,
    cbow: bool,
    cbow_mean: bool,
    scratch: Scratch,
) -> Tensor:
    """Apply SGD updates of learning rate ``lr`` to ``weight`` and the terms' tables.

    Within a chunk of ``chunk_size`` examples every update is computed from the vectors as they
    were before it (as one SGD step on the summed loss would); chunks apply one after another,
    so a later chunk sees the earlier ones' updates, as the C tool's sequential updates do. With
    one chunk the result equals an SGD step of ``lr`` on :func:`summed_loss`.

    Args:
        weight: ``(V, D)`` input vectors.
        rows, slots: ``(E, S)`` each example's input rows and which of them count.
        terms: what the inputs are scored against (``Word2Vec.couples``).
        lr: learning rate.
        chunk_size: examples per update.
        cbow: one hidden vector per example, from its context words (else skip-gram: each input
            row is scored on its own).
        cbow_mean: CBOW's hidden vector is the mean (else the sum); every context word receives
            the hidden vector's whole error either way.
        scratch: the reused buffers.

    Returns:
        The summed loss before the updates (a detached scalar).
    """
    total = torch.zeros((), device=weight.device)
    everywhere = cbow or bool(slots.all())  # every slot an input (CBOW: packed below)
    # per term: the loss's weights (E, T) and each score's step lr * sign where counted
    scales = [(t.counted.float(), lr * t.sign * t.counted) for t in terms]
    with torch.autocast(weight.device.type, enabled=False):
        for start in range(0, len(rows), chunk_size):
            part = slice(start, start + chunk_size)
            r, m = rows[part], slots[part]  # (n, S)
            n, dim = len(r), weight.shape[1]
            if cbow:  # one hidden vector per example: its context words, packed
                sizes = m.sum(1)  # (n,) >= 1
                context = r[m]  # (N,) row by row
                offsets = sizes.cumsum(0) - sizes
                hidden = F.embedding_bag(context, weight, offsets, mode="sum")  # (n, D)
                if cbow_mean:
                    hidden /= sizes[:, None]
                hidden = hidden[:, None]  # (n, 1, D)
            else:  # skip-gram: each input vector against the example's outputs
                hidden = scratch("hidden", (*r.shape, dim), weight)
                torch.index_select(weight, 0, r.flatten(), out=hidden.view(-1, dim))
                if not everywhere:
                    hidden *= m[..., None]
            grad_hidden = scratch("grad_hidden", hidden.shape, weight)
            updates = []
            for k, (t, (counted, step)) in enumerate(zip(terms, scales, strict=True)):
                ids = t.outputs[part]  # (n, T)
                out = scratch(f"out{k}", (*ids.shape, dim), weight)
                torch.index_select(t.table.weight, 0, ids.flatten(), out=out.view(-1, dim))
                x = torch.bmm(out, hidden.transpose(1, 2)).transpose(1, 2)  # (n, S', T)
                x *= t.sign[part][:, None]  # sign * score
                if everywhere:
                    total -= torch.dot(F.logsigmoid(x).flatten(), counted[part].flatten())
                else:  # skip-gram with shared noise words: only the window's slots count
                    total -= (F.logsigmoid(x) * counted[part][:, None] * m[..., None]).sum()
                g = torch.sigmoid(x.neg_()).mul_(step[part][:, None])  # lr (label - s)
                if k == 0:
                    torch.bmm(g, out, out=grad_hidden)  # (n, S', D)
                else:
                    grad_hidden.baddbmm_(g, out)
                grad_out = scratch(f"grad_out{k}", out.shape, weight)
                if hidden.shape[1] == 1:  # an outer product: elementwise is faster
                    torch.mul(g.transpose(1, 2), hidden, out=grad_out)  # (n, T, D)
                else:
                    torch.bmm(g.transpose(1, 2), hidden, out=grad_out)
                updates.append((t.table.weight, ids, grad_out))
            for table, ids, grad in updates:  # from the vectors before this chunk's update
                table.index_add_(0, ids.flatten(), grad.flatten(0, 1))
            if cbow:  # every context word of an example gets the hidden vector's whole error
                owner = torch.arange(n, device=r.device).repeat_interleave(sizes)  # (N,)
                grad_context = scratch("grad_context", (len(owner), dim), weight)
                torch.index_select(grad_hidden[:, 0], 0, owner, out=grad_context)
                weight.index_add_(0, context, grad_context)
            else:
                if not everywhere:
                    grad_hidden *= m[..., None]
                weight.index_add_(0, r.flatten(), grad_hidden.flatten(0, 1))
    return total
