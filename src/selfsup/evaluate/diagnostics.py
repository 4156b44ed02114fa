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
(``diagnostics_every`` steps; ``stop_on_collapse`` stops the run on a collapse), and
:class:`OnlineKnn` measures kNN accuracy on a labelled validation split (``knn_every`` steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
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


# How a verdict is logged with the figures (``collapse`` in metrics.jsonl).
COLLAPSE_CODES = {"none": 0, "dimensional": 1, "complete": 2}


def worst(*verdicts: Collapse) -> Collapse:
    """The most severe of several verdicts (complete, then dimensional, then none)."""
    order = {"complete": 0, "dimensional": 1, "none": 2}
    return min(verdicts, key=lambda v: order.get(v.kind, 2))


class Probe:
    """A fixed set of training samples whose embeddings are diagnosed during training.

    Args:
        batches: collated batches, read once before training.
        device: where they are embedded, one batch at a time (None: where they are). They stay
            in host memory: the online kNN's bank and queries, 6,000 images at 224 px, would
            hold 0.9 GB of every GPU for the whole run.
    """

    def __init__(
        self, batches: list[dict[str, Any]], device: str | torch.device | None = None
    ) -> None:
        if not batches:
            raise ValueError("a probe needs at least one batch")
        self.batches = batches
        self.device = device

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        size: int,
        collate_fn: Callable[[list[Any]], Any] | None,
        device: str | torch.device,
        batch_size: int = 256,
    ) -> Probe:
        """``size`` samples of ``dataset`` (a fixed draw from a map-style dataset, see
        :func:`~selfsup.evaluate.features.fixed_subset`; a stream's first), read without drawing
        from the global random generators (a resumed run stays bitwise equal)."""
        from selfsup.evaluate.features import fixed_subset

        batches, seen = [], 0
        pin = torch.device(device).type == "cuda"
        with torch.random.fork_rng(devices=[]):  # the DataLoader draws its base seed
            loader = DataLoader(fixed_subset(dataset, size), batch_size=min(batch_size, size),
                                collate_fn=collate_fn)  # fmt: skip
            for batch in loader:
                take = min(len(next(iter(batch.values()))), size - seen)
                batches.append(
                    {
                        k: (v[:take].pin_memory() if pin else v[:take])
                        if isinstance(v, Tensor)
                        else v[:take]
                        for k, v in batch.items()
                    }
                )
                seen += take
                if seen >= size:
                    break
        if not batches:
            raise ValueError("the dataset yielded no samples to probe")
        return cls(batches, device)

    def _on_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.device is None:
            return batch
        return {
            k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()
        }

    @property
    def labels(self) -> Tensor | None:
        """``(N,)`` int64 labels of the probe's samples (on CPU), or None when unlabelled."""
        if any("label" not in b for b in self.batches):
            return None
        return torch.cat([torch.as_tensor(b["label"]).long().cpu() for b in self.batches])

    @torch.no_grad()
    def embed(self, method: nn.Module, head: bool = False) -> tuple[Tensor, Tensor | None]:
        """``method.embed`` of the probe and, with ``head``, ``method.embed_head`` of those
        features (None when the method has no head), in eval mode; every module's mode is
        restored after."""
        modes = [(m, m.training) for m in method.modules()]
        method.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                feats = [method.embed(self._on_device(b)) for b in self.batches]
                project = getattr(method, "embed_head", None) if head else None
                heads = [project(f) for f in feats] if project is not None else [None]
        finally:
            for module, training in modes:
                module.training = training
        z = torch.cat([f.float() for f in feats])
        if any(h is None for h in heads):
            return z, None
        return z, torch.cat([h.float() for h in heads])

    def figures(self, method: nn.Module) -> tuple[dict[str, float], dict[str, Collapse]]:
        """Effective rank, normalised std and uniformity of the probe's embeddings (and, prefixed
        ``head_``, of the method's head output, where the loss acts), and the verdict of each
        space (``"encoder"``, ``"head"``).

        A collapse shows first in the head's output: a SimSiam without stop-gradient collapses
        its projector's output while the backbone's features still look spread out.
        """
        figures: dict[str, float] = {}
        verdicts: dict[str, Collapse] = {}
        features, head_output = self.embed(method, head=True)
        for head, z in ((False, features), (True, head_output)):
            if z is None:
                continue
            prefix, space = ("head_", "head") if head else ("", "encoder")
            if not bool(torch.isfinite(z).all()):  # the loss check reports the cause
                nan = float("nan")
                figures[f"{prefix}effective_rank"] = nan
                verdicts[space] = Collapse("none", nan, nan, "non-finite embeddings")
                continue
            verdict = collapse(z)
            if head and verdict.kind != "none":
                verdict = replace(verdict, message=f"head output: {verdict.message}")
            figures[f"{prefix}effective_rank"] = verdict.effective_rank
            figures[f"{prefix}normalized_std"] = verdict.normalized_std
            figures[f"{prefix}uniformity"] = uniformity(z) if len(z) >= 2 else float("nan")
            verdicts[space] = verdict
        return figures, verdicts


class CollapseAlarm:
    """Announces a collapse that happens during training.

    A space (encoder features, head output) raises the alarm when its verdict is a collapse and
    its effective rank or normalised std has fallen below ``fall`` times the best value seen in
    the run, the first being the baseline taken before training. Features that start collapsed
    are not a training failure (a randomly initialised ViT's class token gives nearly the same
    vector for every image: effective rank about 2 of 192) and are reported once, as a note.

    Args:
        fall: the fraction of the best value under which a collapsed verdict is announced.
    """

    def __init__(self, fall: float = 0.5) -> None:
        self.fall = fall
        self.best: dict[str, tuple[float, float]] = {}
        self.noted: set[str] = set()

    def baseline(self, verdicts: dict[str, Collapse]) -> list[str]:
        """Record the figures before training; returns notes on spaces that start collapsed."""
        notes = []
        for space, v in verdicts.items():
            self.best[space] = (v.effective_rank, v.normalized_std)
            if v.kind != "none" and space not in self.noted:
                self.noted.add(space)
                notes.append(
                    f"the {space} output starts collapsed at initialisation ({v.message}); "
                    f"the collapse alarm fires only if it falls below {self.fall:.0%} of its best"
                )
        return notes

    def check(self, verdicts: dict[str, Collapse]) -> Collapse:
        """The most severe collapse that fell from its best, else a "none" verdict."""
        announced = []
        for space, v in verdicts.items():
            if not math.isfinite(v.effective_rank):
                continue
            rank, std = self.best.get(space, (v.effective_rank, v.normalized_std))
            rank, std = max(rank, v.effective_rank), max(std, v.normalized_std)
            self.best[space] = (rank, std)
            fell = v.effective_rank < self.fall * rank or v.normalized_std < self.fall * std
            if v.kind != "none" and fell:
                announced.append(v)
        if not announced:
            nan = float("nan")
            return Collapse("none", nan, nan, "no collapse")
        return worst(*announced)


class OnlineKnn:
    """kNN accuracy during training: a labelled bank of training samples and labelled queries
    from the validation split, embedded every ``knn_every`` steps (weighted vote, cosine,
    k = 200 and T = 0.1 by default, as :func:`selfsup.evaluate.knn.knn_accuracy`).

    Args:
        bank: probe of labelled training samples.
        queries: probe of labelled validation samples.
        num_classes: C.
        k: neighbours; temperature: vote temperature.
    """

    def __init__(
        self, bank: Probe, queries: Probe, num_classes: int, k: int = 200, temperature: float = 0.1
    ) -> None:
        bank_labels, query_labels = bank.labels, queries.labels
        if bank_labels is None or query_labels is None:
            raise ValueError("online kNN needs labelled bank and query samples")
        if (bank_labels < 0).any() or (query_labels < 0).any():
            raise ValueError("online kNN needs every bank and query sample labelled")
        self.bank, self.queries = bank, queries
        self.bank_labels, self.query_labels = bank_labels, query_labels
        self.num_classes, self.k, self.temperature = num_classes, k, temperature

    def accuracy(self, method: nn.Module) -> dict[str, float]:
        """``{"knn_top1": ..., "knn_top5": ...}`` (percent) of the method's current encoder."""
        from selfsup.evaluate.knn import knn_accuracy

        (bank, _), (queries, _) = self.bank.embed(method), self.queries.embed(method)
        acc = knn_accuracy(
            bank.cpu(), self.bank_labels, queries.cpu(), self.query_labels,
            self.num_classes, self.k, self.temperature,
        )  # fmt: skip
        return {f"knn_{name}": value for name, value in acc.items()}
