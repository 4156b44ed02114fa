"""word2vec's compiled CPU update: the C tool's per-example SGD, one example after another.

:func:`sequential_sgd` takes the same draws as :func:`.word2vec_sgd.fused_sgd` and applies them
as word2vec.c's inner loop does: for each input vector (a skip-gram context word, or CBOW's mean
of the context words), score it against each output row in turn, move that output row at once,
and move the input vector(s) by the summed error after the last output row. Every update sees
all the updates before it, so no chunk ever sums the updates of a frequent word, and a pair's
6 rows of 100 floats stay in the cache, where the vectorised torch update gathers and scatters
them through megabyte-sized temporaries. Compiled with numba (``kernel="numba"``), one thread:
the result is the same every run. (Two threads sharing a step's examples without locks, as
gensim's workers do, ran 0.8-1.1x as fast end to end on a 2-core CPU; not kept.)

Numerics are the C tool's except for its sigmoid table: exact sigmoids, no skipped updates
beyond |score| 6 (as :mod:`.word2vec` says of the torch paths).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfsup.methods.word2vec_sgd import Couples


@cache
def numba_available() -> bool:
    """True when numba imports (it compiles :func:`sequential_sgd`'s loop)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def _compiled() -> Any:  # noqa: ANN401
    """The loop compiled (about 1 s), cached on disk beside this file where numba may write."""
    import numba

    try:
        return numba.njit(nogil=True, fastmath=True, cache=True)(_examples_in_order)
    except RuntimeError:  # no writable cache directory: compile in every process
        return numba.njit(nogil=True, fastmath=True)(_examples_in_order)


def _examples_in_order(
    weight: np.ndarray,
    rows: np.ndarray,
    slots: np.ndarray,
    tables: tuple[np.ndarray, ...],
    outputs: tuple[np.ndarray, ...],
    signs: tuple[np.ndarray, ...],
    counted: tuple[np.ndarray, ...],
    lr: float,
    cbow: bool,
    cbow_mean: bool,
) -> float:
    """The loop numba compiles: :func:`sequential_sgd`'s work on numpy views of the tables."""
    n, width = rows.shape
    dim = weight.shape[1]
    hidden = np.empty(dim, np.float32)
    error = np.empty(dim, np.float32)
    total = 0.0
    for e in range(n):
        for s in range(1 if cbow else width):
            if cbow:  # one input vector: the context words' sum or mean
                hidden[:] = 0.0
                size = 0
                for j in range(width):
                    if slots[e, j]:
                        row = rows[e, j]
                        for d in range(dim):
                            hidden[d] += weight[row, d]
                        size += 1
                if size == 0:
                    continue
                if cbow_mean:
                    hidden *= np.float32(1.0 / size)
            else:  # skip-gram: each context word's vector on its own
                if not slots[e, s]:
                    continue
                row = rows[e, s]
                for d in range(dim):
                    hidden[d] = weight[row, d]
            error[:] = 0.0
            likelihood = 1.0  # the product of this input's s(z): its loss is -log of it
            for k in range(len(tables)):
                table, out, sign, count = tables[k], outputs[k], signs[k], counted[k]
                for t in range(out.shape[1]):
                    if not count[e, t]:
                        continue
                    o = out[e, t]
                    score = np.float32(0.0)
                    for d in range(dim):
                        score += hidden[d] * table[o, d]
                    z = sign[e, t] * score  # loss -log s(z); step lr * sign * s(-z)
                    small = math.exp(-abs(z))
                    inverse = 1.0 / (1.0 + small)
                    if z > 0:
                        likelihood *= inverse  # s(z)
                        step = small * inverse
                    else:
                        if small > 1e-300:
                            likelihood *= small * inverse
                        else:  # s(z) underflows: -log s(z) = -z to double precision
                            total -= z
                        step = inverse
                    if likelihood < 1e-250:  # one log per input vector, unless it underflows
                        total -= math.log(likelihood)
                        likelihood = 1.0
                    g = np.float32(lr * sign[e, t] * step)
                    for d in range(dim):
                        error[d] += g * table[o, d]
                        table[o, d] += g * hidden[d]
            total -= math.log(likelihood)
            if cbow:  # every context word gets the whole error (word2vec.c)
                for j in range(width):
                    if slots[e, j]:
                        row = rows[e, j]
                        for d in range(dim):
                            weight[row, d] += error[d]
            else:
                for d in range(dim):
                    weight[row, d] += error[d]
    return total


@torch.no_grad()
def sequential_sgd(
    weight: Tensor,
    rows: Tensor,
    slots: Tensor,
    terms: list[Couples],
    lr: float,
    *,
    cbow: bool,
    cbow_mean: bool,
) -> Tensor:
    """Apply the draws' SGD updates of learning rate ``lr`` one example after another, in place.

    Arguments as for :func:`.word2vec_sgd.fused_sgd` (float32 tables on the CPU).

    Returns:
        The summed loss, each term's loss taken just before its own update (a scalar).
    """
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        raise ValueError(
            "method_args.kernel='numba' needs float32 tables on the CPU: use kernel='auto' or 'torch' on a GPU"
        )

    def array(x: Tensor, dtype: Any) -> np.ndarray:  # noqa: ANN401
        return np.ascontiguousarray(x.detach().numpy().astype(dtype, copy=False))

    tables = tuple(t.table.weight.detach().numpy() for t in terms)
    if not all(a.flags.c_contiguous for a in (weight.detach().numpy(), *tables)):
        raise ValueError("the numba kernel needs contiguous tables")
    total = _compiled()(
        weight.detach().numpy(),
        array(rows, np.int64),
        array(slots, np.bool_),
        tables,
        tuple(array(t.outputs, np.int64) for t in terms),
        tuple(array(t.sign, np.float32) for t in terms),
        tuple(array(t.counted, np.bool_) for t in terms),
        float(lr),
        cbow,
        cbow_mean,
    )
    return torch.tensor(total, dtype=torch.float32)
