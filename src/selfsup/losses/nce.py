"""Losses that contrast one positive with K negatives: binary NCE and the softmax (InfoNCE) form.

* :func:`binary_nce`: noise-contrastive estimation (Gutmann & Hyvärinen 2010, "Noise-contrastive
  estimation: A new estimation principle for unnormalized statistical models") as Wu et al. 2018
  ("Unsupervised Feature Learning via Non-Parametric Instance Discrimination", section
  3.2) use it:
  a logistic classifier tells data from noise with ``P(D=1 | x) = p(x) / (p(x) + K * Pn(x))``.
* :func:`softmax_contrastive`: cross entropy of one positive among K negatives (InfoNCE, van den
  Oord, Li, Vinyals 2018, "Representation Learning with Contrastive Predictive Coding";
  with cosine similarities and a temperature as in MoCo, He et al. 2020, eq. 1).
* :func:`logistic_loss`: word2vec's negative sampling (Mikolov et al. 2013, "Distributed
  Representations of Words and Phrases and their Compositionality", eq. 4), NCE simplified to a
  logistic classifier of raw scores, and the per-node terms of its hierarchical softmax.

Index legend: B queries, K negatives per query, D embedding dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def binary_nce(
    positive_logprob: Tensor,
    negative_logprob: Tensor,
    noise_prob: float,
    num_noise: int | None = None,
) -> Tensor:
    """NCE loss: ``-log h(x+) - sum_k log(1 - h(x_k))`` with ``h(x) = p(x) / (p(x) + K Pn(x))``.

    The model's probabilities come in log space, so that ``h`` is the logistic function of
    ``log p(x) - log(K Pn(x))`` and stays finite for any score.

    Args:
        positive_logprob: (B,) log p(x) under the model for each data sample (Wu et al.: the
            positive's ``v_i . f / tau - log Z``).
        negative_logprob: (B, K) log p(x) of the K noise samples drawn for each data sample.
        noise_prob: Pn(x), the noise distribution's probability of a sample (uniform over N
            instances: 1 / N).
        num_noise: K in the posterior, the noise-to-data ratio; defaults to the number of
            columns of ``negative_logprob``.

    Returns:
        Scalar: the loss averaged over the B data samples (summed over their K noise samples,
        i.e. K times the expectation over the noise, as in Wu et al. section 3.2).
    """
    k = negative_logprob.shape[1] if num_noise is None else num_noise
    if k < 1 or noise_prob <= 0:
        raise ValueError(f"need num_noise >= 1 and noise_prob > 0, got {k} and {noise_prob}")
    with torch.autocast(positive_logprob.device.type, enabled=False):
        log_k_noise = math.log(k * noise_prob)
        data = F.logsigmoid(positive_logprob.float() - log_k_noise)  # (B,) log h(x+)
        noise = F.logsigmoid(log_k_noise - negative_logprob.float())  # (B, K) log(1 - h(x_k))
        return -(data + noise.sum(1)).mean()


def softmax_contrastive(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor,
    temperature: float,
    normalize: bool = True,
) -> Tensor:
    """InfoNCE with one positive and K negatives per query.

    ``-log exp(q.p / t) / (exp(q.p / t) + sum_k exp(q.n_k / t))``, averaged over the queries.

    Args:
        query: (B, D).
        positive: (B, D), row i the positive of ``query[i]``.
        negatives: (B, K, D) negatives per query, or (K, D) shared by every query (a queue or a
            memory bank sample).
        temperature: softmax temperature.
        normalize: L2-normalise every embedding first (cosine similarities).

    Returns:
        Scalar loss.
    """
    if negatives.ndim not in (2, 3):
        raise ValueError(f"negatives must be (K, D) or (B, K, D), got {tuple(negatives.shape)}")
    with torch.autocast(query.device.type, enabled=False):  # logits / t in fp32, even under bf16
        q, p, n = query.float(), positive.float(), negatives.float()
        if normalize:
            q, p, n = F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
        pos = (q * p).sum(1, keepdim=True)  # (B, 1)
        # b query, k negative, d feature
        neg = q @ n.T if n.ndim == 2 else torch.einsum("bd,bkd->bk", q, n)  # (B, K)
        logits = torch.cat([pos, neg], dim=1) / temperature  # (B, 1 + K), positive first
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)


def logistic_loss(hidden: Tensor, outputs: Tensor, sign: Tensor, weight: Tensor) -> Tensor:
    """``-sum log s(sign * h.v)`` over the (input, output) vector couples of a batch of examples.

    Negative sampling scores an example against its target (sign +1) and K noise words (sign -1);
    hierarchical softmax against the inner nodes on the target's Huffman path (sign
    ``1 - 2 code``). A skip-gram centre's context words share its outputs (S > 1).

    Args:
        hidden: ``(M, S, D)`` input vectors of M examples (S = 1: one per example).
        outputs: ``(M, T, D)`` output vectors each example is scored against.
        sign: ``(M, T)`` +1 where the label is 1, -1 where it is 0.
        weight: ``(M, S, T)`` 1 where the couple counts; 0 for padding and for the noise draws
            equal to the target, which word2vec.c skips.

    Returns:
        The summed loss (a scalar).
    """
    hidden = hidden.to(outputs.dtype).transpose(1, 2)  # (M, D, S)
    scores = torch.bmm(outputs, hidden).transpose(1, 2).float()  # (M, S, T)
    return -(F.logsigmoid(sign[:, None, :] * scores) * weight).sum()
