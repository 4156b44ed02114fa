"""word2vec: selfsup beside gensim's ``Word2Vec``, same corpus, same settings, one process.

Corpus: the English Wikipedia sample gensim ships for its tests
(``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``), article text with the
wiki markup removed (selfsup's built-in ``wiki`` source when present, else gensim's
``wikicorpus.extract_pages`` + ``filter_wiki``). The text is cut into words once, by selfsup's
word-level tokenizer (lower-cased runs of letters, as gensim's ``simple_preprocess``); gensim gets
those word lists, one sentence per article, and selfsup the same words joined by spaces, so both
train on identical word streams.

Settings for both: 100-d, window 5, 5 negatives, 5 epochs, min_count 5, sample 1e-3, lr 0.025
(skip-gram) / 0.05 (CBOW; gensim's own default is 0.025 for both, the C tool's 0.05) decaying
linearly to 1e-4 x lr; gensim with 2 worker threads (jobs of 10,000 words), selfsup with 2 torch
threads, steps of 4 blocks of 1000 words (the C tool's sentence cap) through its fused SGD update
(numba kernel, one thread) and the engine's schedule. Speed is effective words per second of
training (words left after min_count and subsampling, as gensim counts them), vocabulary building
and the numba kernel's compilation (a warm-up run) excluded.
Quality: the ``wordsim`` and ``analogy`` protocols' functions on each side's vectors. Each
implementation runs ``--repeats`` times with seeds seed, seed + 1, ..., interleaved with the
others; the table gives the median speed and the mean quality.

    python benchmarks/bench_word2vec.py                      # full corpus, writes word2vec.md
    python benchmarks/bench_word2vec.py --max-words 20000 --out /tmp/w2v.md   # a quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SETTINGS = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3}
LR = {"skipgram": 0.025, "cbow": 0.05}


def articles() -> list[str]:
    """Article texts of the Wikipedia sample, markup removed."""
    try:
        from selfsup.data.wiki import wiki_articles  # the built-in source, when present
    except ImportError:
        wiki_articles = None
    if wiki_articles is not None:
        return [a if isinstance(a, str) else a["text"] for a in wiki_articles()]
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    from selfsup.data.builtin import gensim_data_file

    with bz2.open(gensim_data_file(WIKI), "rb") as f:
        pages = extract_pages(f, filter_namespaces=("0",))
        return [
            filter_wiki(text) for _, text, _ in pages if not text.lower().startswith("#redirect")
        ]


def word_lists(texts: list[str], tokenizer, max_words: int | None) -> list[list[str]]:  # noqa: ANN001
    """The words of each article as the word-level tokenizer cuts them, up to ``max_words``."""
    backend = tokenizer.backend_tokenizer
    docs, total = [], 0
    for text in texts:
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
        words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
        if max_words is not None:
            words = words[: max_words - total]
        if words:
            docs.append(words)
            total += len(words)
        if max_words is not None and total >= max_words:
            break
    return docs


def scores(words: list[str], vectors: np.ndarray) -> dict[str, float]:
    from selfsup.data.builtin import gensim_data_file
    from selfsup.evaluate.protocols.words import (
        ANALOGY_FILE,
        SIMILARITY_FILES,
        analogy_accuracy,
        read_analogies,
        read_word_pairs,
        word_similarity,
    )

    out = {}
    for name, file in SIMILARITY_FILES.items():
        sim = word_similarity(words, vectors, read_word_pairs(gensim_data_file(file)))
        out[f"{name}"], out[f"{name}_coverage"] = sim["spearman"], sim["coverage"]
    questions = read_analogies(gensim_data_file(ANALOGY_FILE))
    out.update(analogy_accuracy(words, vectors, questions))
    return out


def run_gensim(
    docs: list[list[str]], architecture: str, epochs: int, workers: int, seed: int
) -> dict:
    from gensim.models import Word2Vec as GensimWord2Vec

    model = GensimWord2Vec(
        vector_size=SETTINGS["dim"], window=SETTINGS["window"], negative=SETTINGS["negative"],
        min_count=SETTINGS["min_count"], sample=SETTINGS["sample"], sg=architecture == "skipgram",
        hs=0, cbow_mean=1, alpha=LR[architecture], min_alpha=LR[architecture] * 1e-4,
        workers=workers, seed=seed,
    )  # fmt: skip
    model.build_vocab(docs)
    start = time.perf_counter()
    effective, _ = model.train(docs, total_examples=len(docs), epochs=epochs)
    seconds = time.perf_counter() - start
    kv = model.wv
    return {"seconds": seconds, "words": effective, "vocabulary": len(kv.index_to_key),
            **scores(kv.index_to_key, kv.vectors)}  # fmt: skip


def run_selfsup(
    docs: list[list[str]],
    tokenizer,  # noqa: ANN001
    architecture: str,
    epochs: int,
    batch_size: int,
    seed: int,
    extra: dict,
    device: str = "cpu",
) -> dict:
    from selfsup.engine.optim import build_optimizer, lr_factor, set_lr
    from selfsup.methods import BuildContext
    from selfsup.methods.word2vec import Word2Vec

    torch.manual_seed(seed)
    method = Word2Vec.build(
        BuildContext(tokenizer=tokenizer), architecture=architecture, **SETTINGS, **extra
    )
    defaults = Word2Vec.defaults
    texts = [{"text": " ".join(words)} for words in docs]
    dataset, collate = method.training_data(texts, tokenizer, seq_len=1000, seed=seed)
    method.to(device)  # after the counts: training_data sets them on the method's device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    steps_per_epoch = sum(1 for _ in loader)  # counted before the clock starts, as the engine does
    total = epochs * steps_per_epoch
    optimizer = build_optimizer(method.param_groups(), defaults.optimizer, LR[architecture],
                                defaults.weight_decay, momentum=defaults.momentum)  # fmt: skip
    step, words = 0, torch.zeros((), device=device)  # summed on the device: no sync per step
    start = time.perf_counter()
    for epoch in range(epochs):
        dataset.set_epoch(epoch)  # the block order, as the engine's loader sets it
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            lr = set_lr(optimizer, lr_factor((step + 1) / total, 0.0, defaults.final_lr, "linear"))
            if method.updates_itself:  # fused SGD, as the engine runs it
                out = method.update(batch, lr)
            else:
                out = method(batch)
                out["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            words += out["words"]
            step += 1
    words = float(words)  # waits for the device
    seconds = time.perf_counter() - start
    vocab, vectors, _ = method.word_vectors()
    return {"seconds": seconds, "words": words, "vocabulary": len(vocab), "steps": step,
            "final_loss": float(out["loss"].detach()), **scores(vocab, vectors.numpy())}  # fmt: skip


NOTES = """
selfsup trains with its fused SGD path (the default `fused=True`: updates applied inside the step,
no autograd). On a CPU the default `kernel="auto"` runs it compiled by numba, one thread, one
example after another as word2vec.c does (a pair's rows stay in the cache); the noise words and
windows are still drawn in torch. The `kernel=torch` rows run the vectorised update a GPU uses,
`chunk_size=1024` examples at a time: its speed is limited by memory traffic, each chunk
gathering, scoring and scattering about 6,000 rows of 100 floats. One noise set per skip-gram
centre (`shared_negatives=True`, not the paper's default) halves that work. The speed of both
sides drifts by up to 2x within minutes on these machines (the per-seed log the script prints).

Order: selfsup shuffles its 1,000-word blocks every epoch (the default `shuffle=True`); the
`shuffle=False` rows read the corpus in order, as one thread of the C tool does. Reading in order
cost about 0.03 of WordSim-353 and of SimLex-999 on both architectures. gensim's 2 workers interleave
consecutive 10,000-word jobs, and its 1-worker rows show what that is worth: about 0.015 on
WordSim-353. Before the blocks were shuffled, CBOW stayed 0.04 below gensim on WordSim-353.
None of these closed that gap: skipping updates with |score| >= 6 as gensim does, chunks of
1 to 256 centres instead of 1,024, or strided chunks.

Chunk size: each chunk sums the updates of every occurrence of a word in it. Chunks of 65,536
examples (with steps of 16 blocks, `--batch-size 16 --arg chunk_size=65536`, 2 seeds) gave NaN
vectors for both architectures at these learning rates, so a GPU cannot simply take larger
chunks to spend fewer kernel launches.

Quality, paired by seed: gensim 4 starts the input vectors in [-1/dim, 1/dim], twice the C
tool's range (selfsup's default); `init_scale=1` uses gensim's range. Run to run, one seed's
WordSim-353 moves by up to 0.04 for either side on this 0.4 M-word corpus.
"""


def machine() -> str:
    import gensim
    from bench_simclr import machine as base

    return f"{base()}, gensim {gensim.__version__}"


def table(results: dict[tuple[str, str], list[dict]]) -> str:
    """Median speed of the repeats; quality as their mean (WordSim-353: mean, min-max)."""
    head = (
        "| implementation | architecture | effective words/s | vs gensim | train s | vocabulary "
        "| WordSim-353 ρ [min, max] | SimLex-999 ρ | analogy % (sem / syn / all) "
        "| analogy coverage % |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |\n"
    )

    def rate(runs: list[dict]) -> float:
        return float(np.median([r["words"] / max(r["seconds"], 1e-9) for r in runs]))

    rows = []
    for (impl, arch), runs in results.items():
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k != "steps"}
        ws = [r["wordsim353"] for r in runs]
        analogy = " / ".join(f"{mean[f'{g}_accuracy']:.1f}"
                             for g in ("semantic", "syntactic", "total"))  # fmt: skip
        base = results.get(("gensim", arch))
        ratio = f"{rate(runs) / rate(base):.2f}x" if base else "-"
        rows.append(
            f"| {impl} | {arch} | {rate(runs):,.0f} | {ratio} "
            f"| {float(np.median([r['seconds'] for r in runs])):.1f} "
            f"| {runs[0]['vocabulary']:,} | {mean['wordsim353']:.3f} "
            f"[{min(ws):.3f}, {max(ws):.3f}] | {mean['simlex999']:.3f} | {analogy} "
            f"| {mean['total_coverage']:.1f} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-words", type=int, default=None, help="cut the corpus (a check)")
    parser.add_argument("--architectures", nargs="+", default=["skipgram", "cbow"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: --workers")
    parser.add_argument("--batch-size", type=int, default=4, help="selfsup: 1000-word blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="selfsup's device (gensim: the CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="seeds seed, seed + 1, ...")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further selfsup word2vec argument, e.g. shared_negatives=true")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "word2vec.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.torch_threads or args.workers)

    from selfsup.data.tokenizer import train_tokenizer

    extra = {}
    for item in args.arg:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except json.JSONDecodeError:
            extra[key] = value
    texts = articles()
    # one tokenizer for both sides: a vocabulary large enough that min_count decides it
    tokenizer = train_tokenizer(texts, kind="wordlevel", vocab_size=2_000_000)
    docs = word_lists(texts, tokenizer, args.max_words)
    n_words = sum(len(d) for d in docs)
    print(f"{len(docs)} articles, {n_words:,} words", file=sys.stderr)

    # warm-up: numba compiles the kernel (about 1 s) or loads it from its cache
    run_selfsup(docs[:20], tokenizer, args.architectures[0], 1, args.batch_size, args.seed, extra,
                args.device)  # fmt: skip

    # Interleaved repeats (seed, seed + 1, ...): this machine's speed drifts by 2x over minutes,
    # so each implementation's rate is the median of its repeats, run next to the others'.
    results: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        for arch in args.architectures:
            # skip-gram also with one noise set per centre (shared_negatives): same gradient
            variants = [("selfsup", extra)]
            if "init_scale" not in extra:  # gensim 4's initial vectors: twice the C tool's range
                variants.append(("selfsup, init_scale=1 (gensim's)", {**extra, "init_scale": 1.0}))
            if "threads" not in extra and args.device == "cpu":  # as gensim's 2 workers
                variants.append(("selfsup, threads=2", {**extra, "threads": 2}))
            if "kernel" not in extra:  # the vectorised torch update (a GPU's), chunks of 1,024
                torch_kernel = {**extra, "kernel": "torch"}
                variants.append(("selfsup, kernel=torch", torch_kernel))
                if arch == "skipgram" and "shared_negatives" not in extra:
                    variants.append(("selfsup, kernel=torch, shared_negatives",
                                     {**torch_kernel, "shared_negatives": True}))  # fmt: skip
            if "shuffle" not in extra:  # the corpus in order, as one word2vec.c thread reads it
                variants.append(("selfsup, shuffle=False (in order)", {**extra, "shuffle": False}))
            gensims = [("gensim", args.workers)]
            if args.workers > 1:  # gensim's threads interleave jobs; one thread reads in order
                gensims.append(("gensim, 1 worker", 1))
            for impl, method_args in [*gensims, *variants]:
                if isinstance(method_args, int):
                    r = run_gensim(docs, arch, args.epochs, method_args, seed)
                else:
                    r = run_selfsup(docs, tokenizer, arch, args.epochs, args.batch_size, seed,
                                    method_args, args.device)  # fmt: skip
                results.setdefault((impl, arch), []).append(r)
                rate = r["words"] / max(r["seconds"], 1e-9)
                print(f"{impl:8s} {arch:9s} seed {seed} {rate:12,.0f} effective words/s  {r}",
                      file=sys.stderr)  # fmt: skip

    command = "python benchmarks/bench_word2vec.py " + " ".join(sys.argv[1:])
    text = (
        f"# word2vec: selfsup ({args.device}) beside gensim (CPU)\n\n"
        f"- machine: {machine()}\n"
        f"- command: `{command.strip()}`\n"
        f"- corpus: gensim's Wikipedia sample `{WIKI}`, {len(docs):,} articles, "
        f"{n_words:,} words (lower-cased runs of letters), the same word lists for both\n"
        f"- settings: 100-d, window 5, 5 negatives, {args.epochs} epochs, min_count 5, "
        f"sample 1e-3, lr 0.025 (skip-gram) / 0.05 (CBOW) linear to 1e-4 x lr; gensim "
        f"{args.workers} workers, selfsup {args.torch_threads or args.workers} torch threads, "
        f"batches of {args.batch_size} blocks of 1000 words; {args.repeats} interleaved repeats "
        f"(seeds {args.seed}..{args.seed + args.repeats - 1}): median speed, mean quality"
        + (f", selfsup arguments {extra}" if extra else "")
        + "\n\n"
        + table(results)
        + "\nEffective words: words left after min_count and subsampling, per second of "
        "training. Analogy: 3CosAdd over the 300,000 most frequent words, case-insensitive, "
        "accuracy over the questions whose words are all known (coverage).\n" + NOTES
    )
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
