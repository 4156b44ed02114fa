"""Label-free diagnostics of an embedding: is the representation spread out or collapsing?

Every function takes embeddings ``(N, D)`` (any float dtype; computed in fp32, or fp64 for the
spectrum) and needs no labels:

* :func:`alignment` and :func:`uniformity` (Wang & Isola, "Understanding Contrastive
  Representation Learning through Alignment and Uniformity on the Hypersphere", ICML 2020):
  ``E ||f(x) - f(y)||^alpha`` over positive pairs, and ``log E exp(-t ||f(x) - f(y)||^2)`` over
  all pairs of distinct samples, on L2-normalised embeddings (alpha = 2, t = 2 as in the paper).
* :func:`effective_rank`: RankMe (Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the
  Downstream Performance of Pretrained Self-Supervised Representations by Their Rank", ICML
  2023): ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / ||s||_1 + eps`` over the singular values
  ``s`` of the embedding matrix (not centred, as in the paper), eps = 1e-7.
* :func:`normalized_std`: the mean over dimensions of the standard deviation of the
  L2-normalised embeddings, times sqrt(D) (SimSiam, Chen & He 2021, figure 2: 0 when every
  sample maps to one point, about 1 for isotropic embeddings).
* :func:`singular_values`: the spectrum of the centred embeddings, largest first.

:func:`collapse` turns the figures into a verdict for the progress line and the log;
:class:`Probe` computes them during training on a fixed set of training samples
(``diagnostics_every`` steps; ``stop_on_collapse`` stops the run on a collapse).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

RANKME_EPS = 1e-7


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """``E ||f(x) - f(y)||_2^alpha`` over the positive pairs ``(z1[i], z2[i])``, normalised."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"need two (N, D) tensors of one shape, got {z1.shape} and {z2.shape}")
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """``log E exp(-t ||f(x) - f(y)||_2^2)`` over the pairs of distinct samples, normalised.

    From -4 (t = 2, uniform on a high-dimensional sphere) to 0 (every sample at one point).
    """
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"need (N, D) embeddings with N >= 2, got {tuple(z.shape)}")
    x = F.normalize(z.float(), dim=1)
    squared = torch.pdist(x).pow(2)  # (N (N - 1) / 2,) each unordered pair once
    return float(torch.logsumexp(-t * squared, dim=0) - math.log(len(squared)))


def singular_values(z: Tensor) -> Tensor:
    """Singular values ``(min(N, D),)`` of the centred embeddings, largest first (fp64)."""
    x = z.double()
    return torch.linalg.svdvals(x - x.mean(dim=0))


def effective_rank(z: Tensor) -> float:
    """RankMe: the exponential of the entropy of the normalised singular values of ``z``."""
    if z.ndim != 2:
        raise ValueError(f"need (N, D) embeddings, got {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum().clamp_min(1e-300) + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_std(z: Tensor) -> float:
    """Mean per-dimension std of the L2-normalised embeddings, times sqrt(D) (0: collapsed)."""
    x = F.normalize(z.float(), dim=1)
    return float(x.std(dim=0).mean() * math.sqrt(x.shape[1]))


@dataclass(frozen=True)
class Collapse:
    """A verdict on an embedding: ``kind`` is "none", "dimensional" or "complete"."""

    kind: str
    effective_rank: float
    normalized_std: float
    message: str


def collapse(z: Tensor, complete_below: float = 0.02, dimensional_below: float = 0.02) -> Collapse:
    """Say whether the embeddings ``z (N, D)`` have collapsed, with the figures behind it.

    Args:
        z: embeddings of at least two samples.
        complete_below: complete collapse when :func:`normalized_std` is under this (every
            sample near one point; isotropic embeddings give about 1, a randomly initialised
            ResNet's non-negative pooled features about 0.15, a collapsed SimSiam about 0).
        dimensional_below: dimensional collapse when :func:`effective_rank` is under this
            fraction of ``min(N, D)`` (the embeddings span a few directions only; a randomly
            initialised ResNet-18 spans about 10 % of 100 samples).
    """
    rank, std = effective_rank(z), normalized_std(z)
    span = min(z.shape)
    if std < complete_below:
        kind = "complete"
        message = (
            f"complete collapse: every embedding is nearly the same (normalised std {std:.3f}"
            f" < {complete_below}; effective rank {rank:.1f} of {span})"
        )
    elif rank < dimensional_below * span:
        kind = "dimensional"
        message = (
            f"dimensional collapse: the embeddings span {rank:.1f} effective dimensions of "
            f"{span} (< {dimensional_below:.0%}; normalised std {std:.3f})"
        )
    else:
        kind = "none"
        message = f"no collapse: effective rank {rank:.1f} of {span}, normalised std {std:.3f}"
    return Collapse(kind, rank, std, message)


class Probe:
    """A fixed set of training samples whose embeddings are diagnosed during training.

    Args:
        batches: collated batches (on the training device), read once before training.
    """

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        if not batches:
            raise ValueError("a probe needs at least one batch")
        self.batches = batches

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        size: int,
        collate_fn: Callable[[list[Any]], Any] | None,
        device: str | torch.device,
        batch_size: int = 256,
    ) -> Probe:
        """The first ``size`` samples of ``dataset`` (a map-style dataset or a stream), read
        without drawing from the global random generators (a resumed run stays bitwise equal)."""
        from selfsup.evaluate.features import first

        batches, seen = [], 0
        with torch.random.fork_rng(devices=[]):  # the DataLoader draws its base seed
            loader = DataLoader(first(dataset, size), batch_size=min(batch_size, size),
                                collate_fn=collate_fn)  # fmt: skip
            for batch in loader:
                batches.append(
                    {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                )
                seen += len(next(iter(batch.values())))
                if seen >= size:
                    break
        return cls(batches)

    @torch.no_grad()
    def embed(self, method: nn.Module) -> Tensor:
        """``method.embed`` of the probe in eval mode; every module's mode is restored after."""
        modes = [(m, m.training) for m in method.modules()]
        method.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                return torch.cat([method.embed(b).float() for b in self.batches])
        finally:
            for module, training in modes:
                module.training = training

    def figures(self, method: nn.Module) -> tuple[dict[str, float], Collapse]:
        """Effective rank, normalised std and uniformity of the probe's embeddings, and the
        collapse verdict."""
        z = self.embed(method)
        if not bool(torch.isfinite(z).all()):  # the loss check reports the cause
            nan = float("nan")
            return {"effective_rank": nan}, Collapse("none", nan, nan, "non-finite embeddings")
        verdict = collapse(z)
        figures = {
            "effective_rank": verdict.effective_rank,
            "normalized_std": verdict.normalized_std,
            "uniformity": uniformity(z) if len(z) >= 2 else float("nan"),
        }
        return figures, verdict
