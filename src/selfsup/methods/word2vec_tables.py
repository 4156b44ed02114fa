"""Tables word2vec derives from the word counts: the subsampling keep probabilities, the noise
sampler's alias table and the Huffman tree of hierarchical softmax (see :mod:`.word2vec`)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def keep_probability(counts: Tensor, sample: float) -> Tensor:
    """Probability of keeping each occurrence of a word (word2vec.c's subsampling).

    Args:
        counts: ``(V,)`` occurrences of each word; 0 for words that are never trained on.
        sample: threshold t; 0 keeps everything.

    Returns:
        ``(V,)`` float64 ``min(1, sqrt(t/f) + t/f)`` with ``f = count / sum(counts)``; 0 where
        the count is 0.
    """
    counts = counts.double()
    if sample <= 0:
        return (counts > 0).double()
    threshold = sample * counts.sum()
    keep = (torch.sqrt(counts / threshold) + 1) * threshold / counts.clamp(min=1)
    return torch.where(counts > 0, keep.clamp(max=1.0), 0.0)


def alias_table(weights: Tensor) -> tuple[Tensor, Tensor]:
    """Walker's alias table of a discrete distribution (Vose's construction).

    Drawing ``i`` uniformly from 0..K-1 and keeping it with probability ``prob[i]``, else taking
    ``alias[i]``, samples ``i`` with probability ``weights[i] / sum(weights)`` in O(1).

    Args:
        weights: ``(K,)`` non-negative weights, not all 0.

    Returns:
        ``(prob (K,) float32, alias (K,) int64)``; K = 0 gives empty tables.
    """
    k = len(weights)
    if k == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    scaled = (weights.double() * k / weights.double().sum()).tolist()
    prob, alias = [1.0] * k, list(range(k))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s, g = small.pop(), large[-1]
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small.append(large.pop())
    return torch.tensor(prob, dtype=torch.float32), torch.tensor(alias, dtype=torch.long)


def draw_noise(prob: Tensor, alias: Tensor, words: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Word ids of ``shape`` drawn with Walker's alias method from :func:`alias_table`'s
    ``(prob, alias)`` over ``words`` (the noise distribution's support)."""
    slot = torch.randint(len(prob), shape, device=prob.device)
    first = torch.rand(shape, device=prob.device) < prob[slot]
    return words[torch.where(first, slot, alias[slot])]


def huffman_tree(counts: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Huffman codes and paths of K words, as word2vec's hierarchical softmax walks them.

    Inner nodes are numbered 0..K-2 in the order they are created (the root is K-2); at each
    merge the smaller subtree gets bit 0, the other bit 1 (ties: the lower node id, leaves
    before inner nodes, which come in creation order).

    Args:
        counts: K >= 2 positive counts.

    Returns:
        ``(codes, points, lengths)``: ``codes (K, P)`` bool bits from the root down to the word,
        ``points (K, P)`` the inner nodes passed on the way (root first), ``lengths (K,)`` the
        number of valid entries per row (P = longest code; entries beyond a row's length are 0).
    """
    k = len(counts)
    if k < 2:
        raise ValueError(f"a Huffman tree needs at least 2 words, got {k}")
    heap = [(int(c), i) for i, c in enumerate(counts)]  # node ids: leaves 0..K-1, inner K..2K-2
    heapq.heapify(heap)
    parent = np.zeros(2 * k - 1, dtype=np.int64)
    bit = np.zeros(2 * k - 1, dtype=bool)
    for node in range(k, 2 * k - 1):
        (c1, n1), (c2, n2) = heapq.heappop(heap), heapq.heappop(heap)
        parent[n1], parent[n2], bit[n2] = node, node, True
        heapq.heappush(heap, (c1 + c2, node))
    root = 2 * k - 2
    depth = np.zeros(2 * k - 1, dtype=np.int64)
    for node in range(root - 1, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    lengths = depth[:k]
    width = int(lengths.max())
    codes = np.zeros((k, width), dtype=bool)
    points = np.zeros((k, width), dtype=np.int64)
    rows, node = np.arange(k), np.arange(k)
    for step in range(width):  # walk all leaves up at once; entry depth-1-step from the root
        alive = rows[lengths > step]
        col = lengths[alive] - 1 - step
        codes[alive, col] = bit[node[alive]]
        node[alive] = parent[node[alive]]
        points[alive, col] = node[alive] - k
    return torch.from_numpy(codes), torch.from_numpy(points), torch.from_numpy(lengths)


def sampling_tables(counts: Tensor, trained: Tensor, sample: float, hs: bool) -> dict[str, Tensor]:
    """Every table a word2vec step samples from, by buffer name, on the device of ``counts``.

    Args:
        counts: ``(V,)`` occurrences of each id over the training split.
        trained: ``(V,)`` bool, the ids trained on (the vocabulary).
        sample: subsampling threshold t.
        hs: also build the Huffman codes of hierarchical softmax.

    Returns:
        ``keep (V,)`` (:func:`keep_probability`); ``noise_words (K,)``, ``noise_prob (K,)`` and
        ``noise_alias (K,)``, the alias sampler of the vocabulary's counts raised to 0.75; with
        ``hs``, ``hs_codes (V, P)``, ``hs_points (V, P)`` and ``hs_lengths (V,)``, each word's
        Huffman code and inner nodes, rows by word id (zeros outside a vocabulary of >= 2 words).
    """
    device = counts.device
    kept = torch.where(trained, counts, 0)
    words = trained.nonzero()[:, 0]  # (K,) ids in the vocabulary
    prob, alias = alias_table(kept[words].double() ** 0.75)
    tables = {"keep": keep_probability(kept, sample).float(), "noise_words": words,
              "noise_prob": prob.to(device), "noise_alias": alias.to(device)}  # fmt: skip
    if hs:
        v = len(kept)
        codes, points = torch.zeros(v, 1, dtype=torch.bool), torch.zeros(v, 1, dtype=torch.long)
        lengths = torch.zeros(v, dtype=torch.long)
        if len(words) >= 2:
            c, p, n = huffman_tree(kept[words].tolist())
            codes, points = c.new_zeros(v, c.shape[1]), p.new_zeros(v, p.shape[1])
            rows = words.cpu()
            codes[rows], points[rows], lengths[rows] = c, p, n
        tables.update(hs_codes=codes.to(device), hs_points=points.to(device),
                      hs_lengths=lengths.to(device))  # fmt: skip
    return tables
