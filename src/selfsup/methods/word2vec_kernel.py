"""word2vec's compiled CPU step: the draws, then the C tool's SGD one example after another.

:func:`draw_examples` subsamples the words, draws every centre's window and the noise words in
one compiled loop: the same distributions as the torch kernel's draws, from a splitmix64
generator seeded from torch's (so seeded and resumed runs draw the same). In torch, about 20
small operations a step, the draws took as long as CBOW's update on a 2-core CPU.

:func:`sequential_sgd` takes the same draws as :func:`.word2vec_sgd.fused_sgd` and applies them
as word2vec.c's inner loop does: for each input vector (a skip-gram context word, or CBOW's mean
of the context words), score it against each output row in turn, move that output row at once,
and move the input vector(s) by the summed error after the last output row. Every update sees
all the updates before it, so no chunk ever sums the updates of a frequent word, and a pair's
6 rows of 100 floats stay in the cache, where the vectorised torch update gathers and scatters
them through megabyte-sized temporaries. Compiled with numba (``kernel="numba"``). On one thread
(default) the result is the same every run. Both loops release the GIL, so that with
``threads`` > 1 each thread runs its share of a step's blocks at the same time
(:func:`thread_pool`), without locks, as gensim's workers do.

Numerics are the C tool's except for its sigmoid table: exact sigmoids, no skipped updates
beyond |score| 6 (as :mod:`.word2vec` says of the torch paths).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
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
def _compiled(function: Any) -> Any:  # noqa: ANN401
    """``function`` compiled (1-2 s), cached on disk beside this file where numba may write."""
    import numba

    try:
        return numba.njit(nogil=True, fastmath=True, cache=True)(function)
    except RuntimeError:  # no writable cache directory: compile in every process
        return numba.njit(nogil=True, fastmath=True)(function)


def _draws(
    ids: np.ndarray,
    keep: np.ndarray,
    sep_id: int,
    window: int,
    cbow: bool,
    per_pair: bool,
    negative: int,
    noise_prob: np.ndarray,
    noise_alias: np.ndarray,
    noise_words: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The loop numba compiles for :func:`draw_examples`."""
    state = np.full(1, seed, np.uint64)

    def uniform() -> float:  # splitmix64 (Steele, Lea, Flood 2014): a double in [0, 1)
        state[0] += np.uint64(0x9E3779B97F4A7C15)
        z = state[0]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return ((z ^ (z >> np.uint64(31))) >> np.uint64(11)) * (1.0 / 9007199254740992.0)

    blocks, length = ids.shape
    words = np.empty(blocks * length, np.int64)
    segment = np.empty(blocks * length, np.int64)
    m = 0
    for b in range(blocks):  # subsampling; a sentence ends at [SEP] and at the block's end
        sentence = b * length
        for i in range(length):
            word = ids[b, i]
            if word == sep_id:
                sentence += 1
            if uniform() < keep[word]:
                words[m], segment[m] = word, sentence
                m += 1
    width = 2 * window
    slots = 1 if per_pair else width
    most = m * width if per_pair else m
    bags = np.zeros((most, slots), np.int64)
    valid = np.zeros((most, slots), np.bool_)
    targets = np.empty(most, np.int64)
    noise = np.empty((most, negative), np.int64)
    e, sampled = 0, len(noise_prob)
    for i in range(m):
        radius = 1 + int(uniform() * window)
        start = e
        for j in range(width):  # positions i-W..i-1, i+1..i+W
            offset = j - window if j < window else j - window + 1
            p = i + offset
            if abs(offset) > radius or p < 0 or p >= m or segment[p] != segment[i]:
                continue
            if per_pair:  # skip-gram, one example per (context, centre) pair
                bags[e, 0], valid[e, 0], targets[e] = words[p], True, words[i]
                e += 1
            else:
                bags[e, j], valid[e, j] = words[p], True
        if not per_pair and (not cbow or valid[e].any()):  # CBOW: centres with a context
            targets[e] = words[i]
            e += 1
        for n in range(start, e):  # noise words: Walker's alias method
            for k in range(negative):  # one uniform: its integer part the slot, the rest the coin
                u = uniform() * sampled
                slot = min(int(u), sampled - 1)
                if u - slot >= noise_prob[slot]:
                    slot = noise_alias[slot]
                noise[n, k] = noise_words[slot]
    return bags[:e], valid[:e], targets[:e], noise[:e], m


@torch.no_grad()
def draw_examples(
    ids: Tensor,
    keep: Tensor,
    sep_id: int,
    window: int,
    *,
    cbow: bool,
    per_pair: bool,
    negative: int,
    noise: tuple[Tensor, Tensor, Tensor],
    seed: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int]:
    """A step's random draws, compiled: what :func:`selfsup.data.word_blocks.draw_examples`,
    :func:`~selfsup.data.word_blocks.one_example_per_pair` and the noise draws give the torch
    kernel, with the same distributions from a splitmix64 generator seeded from torch's (so a
    seeded run, and a resumed one, draws the same).

    Args:
        ids, keep, sep_id, window, cbow: as for the torch function.
        per_pair: skip-gram with a noise set per pair: one example per (context, centre) pair,
            ``(N, 1)`` slots.
        negative: noise words per example (0: none).
        noise: ``(noise_prob, noise_alias, noise_words)``, the alias sampler.
        seed: the generator's seed (None: drawn from torch's generator).

    Returns:
        ``(bags, valid, targets, noise (E, K) or None, words)``: ``words`` is how many words
        subsampling kept.
    """
    seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
    prob, alias, words = (x.cpu().numpy() for x in noise)
    bags, valid, targets, drawn, kept = _compiled(_draws)(
        np.ascontiguousarray(ids.cpu().numpy()), keep.cpu().numpy(), sep_id, window, cbow,
        per_pair, negative, prob, alias, words, seed,
    )  # fmt: skip
    as_tensor = torch.from_numpy
    return (as_tensor(bags), as_tensor(valid), as_tensor(targets),
            as_tensor(drawn) if negative else None, int(kept))  # fmt: skip


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
            "method_args.kernel='numba' needs float32 tables on the CPU: "
            "use kernel='auto' or 'torch' on a GPU"
        )

    def array(x: Tensor, dtype: Any) -> np.ndarray:  # noqa: ANN401
        return np.ascontiguousarray(x.detach().numpy().astype(dtype, copy=False))

    vectors = weight.detach().numpy()  # views: the loop updates the tables in place
    tables = tuple(t.table.weight.detach().numpy() for t in terms)
    if not all(a.flags.c_contiguous for a in (vectors, *tables)):
        raise ValueError("the numba kernel needs contiguous tables")
    total = _compiled(_examples_in_order)(
        vectors,
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


@cache
def thread_pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` threads, kept for the process (the compiled loops release the GIL)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="word2vec")
