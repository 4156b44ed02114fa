"""word2vec: skip-gram and CBOW word vectors with negative sampling or hierarchical softmax.

Mikolov, Chen, Corrado, Dean. "Efficient Estimation of Word Representations in Vector Space".
ICLR workshop 2013. https://arxiv.org/abs/1301.3781
Mikolov, Sutskever, Chen, Corrado, Dean. "Distributed Representations of Words and Phrases and
their Compositionality". NeurIPS 2013. https://arxiv.org/abs/1310.4546

Algorithm, as the authors' C tool (word2vec.c) runs it: frequent words are discarded at random
(subsampling), then every remaining word is a centre whose window ``b`` is drawn uniformly from
1..window. Skip-gram scores each (context, centre) pair in the window: the context word's input
vector ``u`` against the centre's output vector ``v`` and ``negative`` noise words' output
vectors, ``-log s(u.v) - sum log s(-u.v_noise)``; CBOW scores the mean of the context words'
input vectors against the centre the same way. Hierarchical softmax replaces the noise words by
the ``log s(+-u.v_n)`` of the inner nodes on the centre's path in a Huffman tree of the counts.

Defaults (the C tool's and the papers'): skip-gram, 100-d, window 5, 5 negatives drawn from the
unigram distribution raised to 0.75, no hierarchical softmax, subsampling threshold 1e-3,
min_count 5, CBOW with the mean of the context vectors; input vectors uniform in
[-0.5/dim, 0.5/dim], output vectors zero; plain SGD, lr 0.025 (skip-gram) or 0.05 (CBOW) decaying
linearly to 1e-4 x lr over the run, no warm-up. CBOW starts at lr 0.05, as in the C tool
(``recipe``).

Run settings that matter: ``tokenizer.vocab_size`` unset keeps every word, so that min_count
alone decides, as in the C tool (a value caps the word-level vocabulary before min_count);
``seq_len`` is the block length in words (1000 = the C tool's sentence cap); ``batch_size`` is
blocks per step. The fused path (default) applies a step's updates in order (on a CPU one
example after another, elsewhere ``chunk_size`` examples at a time), so a step of a few blocks
trains like one block (``batch_size=4`` with ``seq_len=1000`` is the benchmark's setting:
1.15-1.3x faster than one block per step, the per-step work shared by more words). **Through
the optimizer** (``fused=False`` or several processes) **keep a step near 1,000 words**
(``batch_size=1``): one step then sums the updates of every occurrence of a frequent word, which
the C tool applies one after another; at lr 0.025 steps of 4,000 and 16,000 words diverged on
the Wikipedia sample (loss 1e27) while 1,000-word steps trained normally
(``benchmarks/bench_word2vec.py``).

Choices, and where we differ from the C tool:
    * Keep probability of a word of relative frequency f: ``sqrt(t/f) + t/f`` (capped at 1), the
      C tool's and gensim's formula, not the paper's ``sqrt(t/f)``: it is the one every released
      vector set and our gensim comparison use. f counts only words of at least min_count.
    * The loss is summed over training examples (pairs for skip-gram, centres for CBOW): one SGD
      step with lr a moves every row by a times the sum of its per-example gradients, which is
      what the C tool's per-example updates add up to (to first order; the C tool applies them
      one after another, several threads at once without locks). The value returned as ``loss``
      is that sum divided by the number of examples, so runs with different batch sizes read
      alike; its gradient stays the sum's. Under data parallelism the engine averages gradients
      over processes: multiply lr by the number of processes to keep the C tool's step.
    * CBOW: as in the C tool and gensim, every context word receives the whole error of the
      averaged hidden vector (not 1/count of it): the gradient of the sum, the value of the mean.
    * Exact sigmoids instead of the C tool's table over [-6, 6] (which skips hierarchical-softmax
      nodes and clips negative-sampling gradients beyond it); noise words drawn exactly (Walker's
      alias method) instead of from the C tool's quantised 1e8-entry table.
    * Sentences: blocks of ``seq_len`` words, documents separated inside a block by [SEP]; no
      window crosses either boundary. Words below min_count are removed before windows form.
    * ``shared_negatives=True`` (off by default) draws one noise set per skip-gram centre for
      all its context words instead of one per pair: each pair still sees K independent draws
      from the noise distribution, so the expected gradient is the C tool's, for about half
      the work of the torch kernel (on the Wikipedia sample, 5 seeds: WordSim-353 0.21 against
      0.22 with a set per pair, SimLex-999 0.14 against 0.13, at 2.3x the speed). The compiled
      kernel still scores every pair against K noise rows: only its noise drawing (at most
      13 % of its step) shrinks.
    * Input vectors start in [-0.5/dim, 0.5/dim] as in the C tool; gensim 4 starts them in
      [-1/dim, 1/dim] (``init_scale=1.0``). On the 0.4 M-word Wikipedia sample, paired over 5
      seeds, gensim's range raised skip-gram's WordSim-353 by 0.005-0.010 on every seed
      (``benchmarks/word2vec.md``).
    * Huffman ties are broken by node id (leaves first, then inner nodes in creation order), so
      codes can differ from the C tool's where counts tie (both trees are optimal).
    * Order: the ``seq_len``-word blocks come in a new random order every epoch (``shuffle``,
      default), where the C tool and gensim read the corpus in order (several threads' or
      workers' parts at once). Read in order, one article's updates follow one another for
      thousands of words; on the Wikipedia sample shuffling raised WordSim-353 from 0.19 to
      0.23 (skip-gram, 6 of 6 seeds) and from 0.19 to 0.22 (CBOW, 8 of 10), to gensim's level
      (``benchmarks/word2vec.md``).

Fused SGD (``fused=True``, default, one process): :meth:`Word2Vec.update` applies the C tool's
updates itself, without autograd (:mod:`.word2vec_sgd`, which says what that demands of the run).
On a CPU (``kernel="auto"`` with numba installed, as selfsup installs it) compiled loops draw a
step's examples and apply them one example after another, exactly as word2vec.c does
(:mod:`.word2vec_kernel`; on a 2-core CPU 0.64-0.69x (skip-gram) and 0.65-0.87x (CBOW) of
gensim with 2 workers, where the vectorised update reached 0.37x and 0.32x). Its draws
come from its own generator (seeded from torch's), so a seed gives other vectors than with
``kernel="torch"``, from the same distributions. On a GPU, or with ``kernel="torch"``, vectorised
chunks of ``chunk_size`` examples. With ``fused=False`` or several processes, gradients go through
autograd and the optimizer.

The word ids of a training split of at most ``max_cached_words`` words are kept in memory after
counting; larger splits are tokenised again every epoch and read in order (not shuffled).

The tables derived from the counts live in :mod:`.word2vec_tables`, the fused updates in
:mod:`.word2vec_kernel` (compiled) and :mod:`.word2vec_sgd` (torch), the export files in
:mod:`.word2vec_format`, the windows in :mod:`selfsup.data.word_blocks` and the loss in
:func:`selfsup.losses.nce.logistic_loss`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from selfsup.config import ConfigError
from selfsup.data.word_blocks import WordBlocks, count_words, draw_examples, one_example_per_pair
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method
from selfsup.methods.word2vec_format import ranked_vectors, write_export
from selfsup.methods.word2vec_kernel import draw_examples as compiled_draws
from selfsup.methods.word2vec_kernel import numba_available, sequential_sgd, thread_pool
from selfsup.methods.word2vec_sgd import Couples, Scratch, fused_sgd, summed_loss
from selfsup.methods.word2vec_tables import draw_noise, sampling_tables

ARCHITECTURES = ("skipgram", "cbow")
KERNELS = ("auto", "numba", "torch")


# ---- the loss's value --------------------------------------------------------------------------


def _mean_value_sum_gradient(total: Tensor, count: int) -> Tensor:
    """``total / count`` as a value, with the gradient of ``total`` (see the module docstring)."""
    return (total / max(count, 1)).detach() + (total - total.detach())  # x - x is exactly 0


# ---- the method ----------------------------------------------------------------------------------


@register_method("word2vec", "word2vec (Mikolov et al. 2013): skip-gram/CBOW, negative sampling")
class Word2Vec(Method):
    """word2vec skip-gram or CBOW over a word-level tokenizer's vocabulary.

    Args:
        vocab_size: number of token ids (``len(tokenizer)``).
        special_ids: ids of the special tokens (never trained on; [SEP] ends a document).
        sep_id: the document separator's id.
        architecture: "skipgram" or "cbow".
        dim: vector size.
        window: largest window; each centre draws its own from 1..window.
        negative: noise words per example (0: none, hierarchical softmax only).
        hierarchical_softmax: add the Huffman-tree hierarchical softmax loss.
        sample: subsampling threshold t (0: keep every word).
        min_count: words seen fewer times are dropped from training and export.
        cbow_mean: CBOW averages the context vectors (False: sums them).
        shared_negatives: skip-gram draws one set of noise words per centre, shared by its
            context words, instead of one per pair (the same expected gradient, less work).
        sparse: sparse gradients for the embedding tables (SGD then touches only the used rows);
            dense by default with several GPU processes (NCCL all-reduces dense tensors only).
        fused: apply the SGD updates inside ``forward`` without autograd (:meth:`sgd_update`,
            with the ``kernel`` below); one process only (with several, and with
            ``fused=False``, gradients go through the engine's optimizer).
        chunk_size: examples (pairs or CBOW centres) per update of the torch kernel. A chunk
            sums the updates of every occurrence of a word in it, so large chunks diverge at the
            C tool's lr: chunks of 65,536 gave NaN vectors on the Wikipedia sample (both
            architectures, steps of 16 blocks), where 1,024 train as the C tool does.
        kernel: the fused update's code, "numba" on a CPU and "torch" elsewhere when "auto"
            (default). "numba": compiled, the C tool's order (one example after another,
            :mod:`.word2vec_kernel`), float32 on the CPU, one thread, the same result every
            run; "torch": vectorised, ``chunk_size`` examples at a time, any device.
        threads: with the numba kernel, split each step's blocks over this many threads, which
            update the tables at once without locks, as the C tool's threads and gensim's
            workers do: faster (1.3-2x with 2 threads on a 2-core CPU, more with more blocks
            per step), but no longer the same result run to run. 1 (default) keeps runs
            reproducible and exactly resumable.
        init_scale: input vectors start uniform in ``[-init_scale / dim, init_scale / dim]``
            (0.5: the C tool's; 1.0: gensim 4's).
        max_cached_words: keep the word ids of a training split of at most this many words in
            memory (4 bytes a word) instead of tokenising it again every epoch.
        shuffle: train on the ``seq_len``-word blocks in a new random order every epoch (needs
            the cached word ids); False reads the corpus in order, as one word2vec.c thread does.
        tokenizer: exported beside the vectors (optional).
    """

    kind: ClassVar[str] = "text"
    tokenizer_kind: ClassVar[str] = "wordlevel"
    # ``embed`` averages a block's word vectors: early in training those means share one
    # direction and look collapsed (normalised std 0.003 after 30 steps on wiki, 0.21 after 4
    # epochs), though the word vectors are not
    collapse_alarm: ClassVar[bool] = False
    data_state: ClassVar[tuple[str, ...]] = ("counts",)  # the vocabulary of a random-init baseline
    provided_args: ClassVar[frozenset[str]] = frozenset({"vocab_size", "special_ids", "sep_id"})
    protocols: ClassVar[tuple[str, ...]] = ("wordsim", "analogy", "knn", "linear")
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="sgd", lr=0.025, momentum=0.0, weight_decay=0.0, warmup=0.0, final_lr=1e-4,
        schedule="linear",
    )  # fmt: skip

    def recipe(self) -> OptimDefaults:
        """Skip-gram's recipe above; CBOW starts at lr 0.05, as word2vec.c does."""
        if self.architecture == "cbow":
            return dataclasses.replace(self.defaults, lr=0.05)
        return self.defaults

    def __init__(
        self,
        vocab_size: int,
        special_ids: Sequence[int],
        sep_id: int,
        *,
        architecture: str = "skipgram",
        dim: int = 100,
        window: int = 5,
        negative: int = 5,
        hierarchical_softmax: bool = False,
        sample: float = 1e-3,
        min_count: int = 5,
        cbow_mean: bool = True,
        shared_negatives: bool = False,
        sparse: bool = True,
        fused: bool = True,
        chunk_size: int = 1024,
        kernel: str = "auto",
        threads: int = 1,
        init_scale: float = 0.5,
        max_cached_words: int = 100_000_000,
        shuffle: bool = True,
        tokenizer: Any = None,  # noqa: ANN401
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: unknown {architecture!r}. Valid: skipgram, cbow")
        if negative < 0 or (negative == 0 and not hierarchical_softmax):
            raise ValueError("negative must be >= 0, and > 0 unless hierarchical_softmax=True")
        if kernel not in KERNELS:
            raise ValueError(f"kernel: unknown {kernel!r}. Valid: {', '.join(KERNELS)}")
        if kernel == "numba" and not numba_available():
            raise ValueError("kernel='numba' needs numba installed (pip install numba)")
        if threads < 1 or (threads > 1 and kernel == "torch"):
            raise ValueError(f"threads must be >= 1, and 1 with kernel='torch', got {threads}")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        if dim < 1 or window < 1 or min_count < 1 or sample < 0 or chunk_size < 1:
            raise ValueError("dim, window, min_count and chunk_size must be >= 1, sample >= 0")
        self.architecture, self.dim, self.window = architecture, dim, window
        self.negative, self.sample, self.min_count = negative, sample, min_count
        self.cbow_mean, self.sparse, self.sep_id = cbow_mean, sparse, sep_id
        self.shared_negatives = shared_negatives
        self.fused, self.chunk_size, self.kernel = fused, chunk_size, kernel
        self.threads = threads
        self.updates_itself = fused  # single process; see training_data
        self.tokenizer, self.max_cached_words = tokenizer, max_cached_words
        self.shuffle = shuffle
        self._scratch = Scratch()  # the fused path's reused buffers
        self.special_ids = sorted(set(special_ids))
        self.input = nn.Embedding(vocab_size, dim, sparse=sparse)
        nn.init.uniform_(self.input.weight, -init_scale / dim, init_scale / dim)
        self.output = nn.Embedding(vocab_size, dim, sparse=sparse) if negative else None
        self.inner = nn.Embedding(vocab_size, dim, sparse=sparse) if hierarchical_softmax else None
        for table in (self.output, self.inner):
            if table is not None:
                nn.init.zeros_(table.weight)
        # Occurrences of every id over the training split: saved, so that evaluation and export
        # know the vocabulary. The sampling tables derive from it (not saved; rebuilt on load).
        self.register_buffer("counts", torch.zeros(vocab_size, dtype=torch.long))
        self.register_load_state_dict_post_hook(Word2Vec._rebuild_after_load)
        self._rebuild()

    @classmethod
    def build(cls, ctx: BuildContext, **kwargs: Any) -> Word2Vec:
        """Build over the run's word-level tokenizer (``ctx.tokenizer``); ``kwargs`` are the
        keyword arguments of the constructor."""
        tok = ctx.tokenizer
        if tok is None or tok.sep_token_id is None or tok.pad_token_id is None:
            raise ValueError("word2vec needs a tokenizer with [SEP] and [PAD] (tokenizer.kind)")
        kwargs.setdefault("sparse", ctx.world_size == 1 or ctx.device_type != "cuda")
        return cls(len(tok), tok.all_special_ids, tok.sep_token_id, tokenizer=tok, **kwargs)

    # -- vocabulary and sampling tables

    @property
    def vocabulary(self) -> Tensor:
        """``(V,)`` bool: True for the ids trained on (count >= min_count, not special)."""
        trained = self.counts >= self.min_count
        trained[self.special_ids] = False
        return trained

    def set_counts(self, counts: Tensor) -> None:
        """Store the training split's ``(V,)`` word counts and rebuild the sampling tables."""
        if counts.shape != self.counts.shape:
            raise ValueError(
                f"counts {tuple(counts.shape)} != vocabulary {tuple(self.counts.shape)}"
            )
        self.counts.copy_(counts)
        self._rebuild()

    @staticmethod
    def _rebuild_after_load(module: nn.Module, incompatible: Any) -> None:  # noqa: ANN401
        module._rebuild()

    def _rebuild(self) -> None:
        tables = sampling_tables(self.counts, self.vocabulary, self.sample, self.inner is not None)
        for name, table in tables.items():  # derived from the counts: not saved
            self.register_buffer(name, table, persistent=False)

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> tuple[Any, Any]:
        """Count the words of the whole split (every process, so the counts agree), then stream
        blocks of ``seq_len`` trained words (see :class:`WordBlocks`), shuffled every epoch
        (``seed``, ``shuffle``) when the split's word ids are cached."""
        self.updates_itself = self.fused and world_size == 1  # DDP averages gradients
        counts, documents = count_words(dataset, tokenizer, self.max_cached_words)
        self.set_counts(counts.to(self.counts.device))
        if not self.vocabulary.any():
            raise ConfigError(
                f"method_args.min_count={self.min_count}: no word of the training data occurs "
                "that often (lower min_count or raise tokenizer.vocab_size)"
            )
        vocabulary = self.vocabulary.cpu()
        blocks = WordBlocks(dataset, tokenizer, seq_len, vocabulary, rank, world_size, documents,
                            shuffle=self.shuffle, seed=seed)  # fmt: skip
        return blocks, None

    # -- training

    def _noise(self, shape: tuple[int, ...]) -> Tensor:
        """Word ids drawn from the unigram distribution raised to 0.75."""
        return draw_noise(self.noise_prob, self.noise_alias, self.noise_words, shape)

    def examples(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The random part of a step on ``ids (B, L)``: see :func:`draw_examples`."""
        return draw_examples(ids, self.keep, self.sep_id, self.window, self.architecture == "cbow")

    def couples(
        self, bags: Tensor, valid: Tensor, targets: Tensor, noise: Tensor | None
    ) -> tuple[Tensor, Tensor, list[Couples]]:
        """What the draws of :meth:`examples` score: input rows against output rows.

        Args:
            bags, valid, targets: as returned by :meth:`examples` (M examples, S slots).
            noise: noise word ids, ``(M, S, K)`` one set per skip-gram pair or ``(M, K)`` one
                per example (CBOW; skip-gram with ``shared_negatives``); None without negative
                sampling.

        Returns:
            ``(rows (E, S), slots (E, S), terms)``: example e's input vectors are the rows
            ``rows[e, s]`` where ``slots[e, s]`` (CBOW combines them into one hidden vector;
            skip-gram scores each against the example's outputs), and every term of ``terms``
            scores them against ``table`` rows ``outputs (E, T)`` with labels ``sign (E, T)``
            (+1 / -1) where ``counted (E, T)``.
        """
        if self.architecture == "skipgram" and noise is not None and noise.dim() == 3:
            centre, slot = valid.nonzero(as_tuple=True)
            bags, valid, targets = one_example_per_pair(bags, valid, targets)
            noise = noise[centre, slot]
        terms = []
        if self.output is not None and noise is not None:
            outputs = torch.cat([targets[:, None], noise], dim=1)  # (E, 1+K)
            sign = torch.ones(outputs.shape, device=outputs.device)
            sign[:, 1:] = -1
            counted = torch.cat([torch.ones_like(targets[:, None], dtype=torch.bool),
                                 noise != targets[:, None]], dim=1)  # fmt: skip
            terms.append(Couples(self.output, outputs, sign, counted))
        if self.inner is not None:
            width = torch.arange(self.hs_codes.shape[1], device=targets.device)
            on_path = width < self.hs_lengths[targets][:, None]  # (E, P)
            sign = 1.0 - 2.0 * self.hs_codes[targets].float()
            terms.append(Couples(self.inner, self.hs_points[targets], sign, on_path))
        return bags, valid, terms

    def objective(
        self, bags: Tensor, valid: Tensor, targets: Tensor, noise: Tensor | None
    ) -> Tensor:
        """Loss summed over the examples of :meth:`examples` (a pure function of the draws;
        arguments as for :meth:`couples`), differentiable: the sparse-gradient path.

        Returns:
            Scalar: the sum of the negative-sampling and hierarchical-softmax losses.
        """
        rows, slots, terms = self.couples(bags, valid, targets, noise)
        return summed_loss(self.input, rows, slots, terms, cbow=self.architecture == "cbow",
                           cbow_mean=self.cbow_mean, sparse=self.sparse)  # fmt: skip

    def resolved_kernel(self, weight: Tensor) -> str:
        """The fused update's kernel for tables like ``weight``: ``kernel``, with "auto" made
        "numba" on a CPU with float32 tables when numba is installed, else "torch"."""
        if self.kernel != "auto":
            return self.kernel
        cpu = weight.device.type == "cpu" and weight.dtype == torch.float32
        return "numba" if cpu and numba_available() else "torch"

    @torch.no_grad()
    def sgd_update(
        self, bags: Tensor, valid: Tensor, targets: Tensor, noise: Tensor | None, lr: float
    ) -> Tensor:
        """Apply the C tool's SGD updates of the draws directly, ``chunk_size`` examples at a
        time (the fused path; arguments as for :meth:`couples`; see :func:`fused_sgd`).

        Returns:
            The summed loss before the updates (a detached scalar).
        """
        rows, slots, terms = self.couples(bags, valid, targets, noise)
        if self.resolved_kernel(self.input.weight) == "numba":
            cbow = self.architecture == "cbow"
            return sequential_sgd(
                self.input.weight, rows, slots, terms, lr, cbow=cbow, cbow_mean=self.cbow_mean
            )
        return fused_sgd(
            self.input.weight,
            rows,
            slots,
            terms,
            lr,
            chunk_size=self.chunk_size,
            cbow=self.architecture == "cbow",
            cbow_mean=self.cbow_mean,
            scratch=self._scratch,
        )

    def _compiled_step(self, ids: Tensor, lr: float, per_pair: bool) -> tuple[Tensor, int, int]:
        """The numba kernel's step: draws and updates, the blocks split over ``threads``.

        Returns:
            ``(summed loss, examples, words kept by subsampling)``.
        """
        sampler = (self.noise_prob, self.noise_alias, self.noise_words)
        parts = ids.tensor_split(min(self.threads, len(ids)))
        seeds = torch.randint(0, 2**62, (len(parts),)).tolist()  # torch's generator: resumable

        def run(part: Tensor, seed: int) -> tuple[Tensor, int, int]:
            bags, valid, targets, noise, words = compiled_draws(
                part, self.keep, self.sep_id, self.window, cbow=self.architecture == "cbow",
                per_pair=per_pair, negative=self.negative, noise=sampler, seed=seed,
            )  # fmt: skip
            n = int(valid.sum()) if self.architecture == "skipgram" else len(targets)
            return self.sgd_update(bags, valid, targets, noise, lr), n, words

        if len(parts) == 1:
            return run(parts[0], seeds[0])
        totals, counts, words = zip(*thread_pool(len(parts)).map(run, parts, seeds), strict=True)
        return sum(totals[1:], totals[0]), sum(counts), sum(words)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The loss of a batch of word blocks, differentiable (the optimizer's path)."""
        return self._step(batch, None)

    @torch.no_grad()
    def update(self, batch: dict[str, Tensor], lr: float) -> dict[str, Tensor]:
        """One fused SGD step of learning rate ``lr`` on a batch (see :meth:`sgd_update`)."""
        return self._step(batch, lr)

    def _step(self, batch: dict[str, Tensor], lr: float | None) -> dict[str, Tensor]:
        ids = batch["input_ids"]  # (B, L)
        if len(self.noise_words) == 0:
            raise RuntimeError("word2vec has no vocabulary yet: call training_data first")
        # skip-gram with a noise set per pair: one example per pair, noise drawn for those only
        per_pair = self.architecture == "skipgram" and not self.shared_negatives and self.negative
        if lr is not None and self.resolved_kernel(self.input.weight) == "numba":
            total, n, words = self._compiled_step(ids, lr, bool(per_pair))
        else:
            bags, valid, targets, kept = self.examples(ids)
            words, noise = len(kept), None
            if per_pair:
                bags, valid, targets = one_example_per_pair(bags, valid, targets)
            if self.negative:
                noise = self._noise((len(targets), self.negative))
            n = int(valid.sum()) if self.architecture == "skipgram" else len(targets)
            if lr is None:
                total = self.objective(bags, valid, targets, noise)
            else:
                total = self.sgd_update(bags, valid, targets, noise, lr)
        return {
            "loss": _mean_value_sum_gradient(total, n),
            "examples": torch.tensor(float(n)),  # pairs (skip-gram) or centres (CBOW) per step
            "words": torch.tensor(float(words)),  # after subsampling ("effective words")
            "words_in_vocab": (self.keep[ids] > 0).sum().float(),  # before subsampling
        }

    # -- evaluation and export

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """``(B, D)`` mean input vector of each row's non-special tokens (zeros for none)."""
        ids = batch["input_ids"]  # (B, L)
        regular = ~torch.isin(ids, torch.tensor(self.special_ids, device=ids.device))  # (B, L)
        vectors = self.input.weight[ids] * regular[..., None]  # (B, L, D)
        return vectors.sum(1) / regular.sum(1, keepdim=True).clamp(min=1)

    def word_vectors(self) -> tuple[list[str], Tensor, Tensor]:
        """The trained vocabulary by descending count (ties: id), as the C tool sorts it.

        Returns:
            ``(words, vectors (K, D) float32 on the CPU, counts (K,))``.
        """
        if self.tokenizer is None:
            raise ValueError("word_vectors needs the tokenizer the method was built with")
        return ranked_vectors(self.tokenizer, self.vocabulary, self.counts, self.input.weight)

    def export(self, path: Path) -> None:
        """Write ``vectors.txt`` and ``vectors.bin`` (word2vec text and binary formats, which
        ``gensim.models.KeyedVectors.load_word2vec_format`` reads), ``vocab.txt`` ("word count"
        lines, the C tool's -save-vocab format), ``config.json`` and the tokenizer."""
        words, vectors, counts = self.word_vectors()
        config = {
            "architecture": self.architecture, "dim": self.dim, "window": self.window,
            "negative": self.negative, "hierarchical_softmax": self.inner is not None,
            "sample": self.sample, "min_count": self.min_count, "cbow_mean": self.cbow_mean,
            "words": len(words),
        }  # fmt: skip
        write_export(Path(path), words, vectors, counts.tolist(), config, self.tokenizer)
