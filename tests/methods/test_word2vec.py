"""word2vec: Huffman tree, subsampling, windows, noise distribution, losses against the C tool's
per-example updates written out as loops, export through gensim, training, and the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from selfsup.data.word_blocks import WordBlocks, one_example_per_pair
from selfsup.methods import METHODS, BuildContext
from selfsup.methods.word2vec import Word2Vec
from selfsup.methods.word2vec_kernel import draw_examples as compiled_draws
from selfsup.methods.word2vec_tables import huffman_tree, keep_probability

SPECIALS = [
    0,
    1,
    2,
    3,
    4,
]  # [PAD] [UNK] [CLS] [SEP] [MASK], as the word-level tokenizer numbers them
SEP = 3


def bare(counts, **kwargs):
    """A method over ids 0..len(counts)-1 without a tokenizer, its counts set."""
    torch.manual_seed(0)
    method = Word2Vec(len(counts), SPECIALS, SEP, **kwargs)
    method.set_counts(torch.tensor(counts))
    return method


def drawn(method, ids, kernel):
    """``(bags, valid, targets, words kept)`` of a step, from the torch kernel's draws or the
    compiled ones (one example per centre, ``(M, 2W)`` slots, no noise)."""
    if kernel == "torch":
        bags, valid, targets, words = method.examples(ids)
        return bags, valid, targets, len(words)
    sampler = (method.noise_prob, method.noise_alias, method.noise_words)
    bags, valid, targets, _, kept = compiled_draws(
        ids, method.keep, SEP, method.window, cbow=method.architecture == "cbow", per_pair=False,
        negative=0, noise=sampler,
    )  # fmt: skip
    return bags, valid, targets, kept


KERNELS = ["torch", "numba"]
# architectures and losses the updates are checked on
VARIANTS = [("skipgram", {}), ("skipgram", {"shared_negatives": True}), ("cbow", {}),
            ("cbow", {"cbow_mean": False}), ("skipgram", {"hierarchical_softmax": True}),
            ("cbow", {"hierarchical_softmax": True, "negative": 0})]  # fmt: skip


@pytest.fixture(scope="module")
def lee():
    from selfsup.data import build_source
    from selfsup.data.tokenizer import train_tokenizer

    source = build_source("lee", image_size=32, seed=0, shuffle_buffer=0)
    texts = [s["text"] for s in source.train]
    return source, train_tokenizer(texts, kind="wordlevel", vocab_size=20000)


# ---- the word-level tokenizer -------------------------------------------------------------------


def test_wordlevel_tokenizer_cuts_lowercase_letter_runs_with_berts_special_ids(tmp_path):
    from selfsup.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    texts = ["The cat sat; the dog's 3 cats sat, THE END.", "Ça va? Über-café a_b cat"] * 2
    tok = train_tokenizer(texts, kind="wordlevel", vocab_size=100)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == specials
    words = tok.convert_ids_to_tokens(tok("The CATS, 42 dogs!")["input_ids"])
    assert words == ["[CLS]", "the", "cats", "[UNK]", "[SEP]"]  # digits and punctuation dropped
    pieces = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("don't a_b über-café 3rd")
    assert [w for w, _ in pieces] == ["don", "t", "a_b", "über", "café", "rd"]  # as gensim
    # most frequent first, ties by the word: the same ids on every training
    assert tok.convert_ids_to_tokens([5, 6, 7]) == ["the", "cat", "sat"]
    assert train_tokenizer(texts, kind="wordlevel", vocab_size=100).get_vocab() == tok.get_vocab()
    small = train_tokenizer(texts, kind="wordlevel", vocab_size=8)  # 5 specials + 3 words
    assert len(small) == 8 and small("dog")["input_ids"][1] == small.unk_token_id
    save_tokenizer(tok, tmp_path)
    assert load_tokenizer(tmp_path)("über cat")["input_ids"] == tok("über cat")["input_ids"]


# ---- tables -------------------------------------------------------------------------------------


def test_huffman_tree_matches_a_hand_built_tree():
    # counts a=10 b=6 c=3 d=2: merge d+c -> n0 (5), n0+b -> n1 (11), a+n1 -> root n2 (21);
    # the smaller side of each merge gets bit 0.
    codes, points, lengths = huffman_tree([10, 6, 3, 2])
    assert lengths.tolist() == [1, 2, 3, 3]
    rows = [(codes[i, :n].int().tolist(), points[i, :n].tolist()) for i, n in enumerate(lengths)]
    assert rows == [([0], [2]), ([1, 1], [2, 1]), ([1, 0, 1], [2, 1, 0]), ([1, 0, 0], [2, 1, 0])]


def test_huffman_tree_is_a_prefix_code_of_optimal_length():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 1000, 57).tolist()
    codes, points, lengths = huffman_tree(counts)
    words = ["".join(map(str, codes[i, :n].int().tolist())) for i, n in enumerate(lengths)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)  # prefix-free
    assert sum(2.0 ** -len(w) for w in words) == pytest.approx(1.0)  # a full binary tree
    assert (points[:, 0] == len(counts) - 2).all()  # every path starts at the root
    # optimal: the expected code length equals the sum of all merged weights (Huffman's bound)
    heap, merged = sorted(counts), 0
    while len(heap) > 1:
        a, b = heap.pop(0), heap.pop(0)
        merged += a + b
        heap = sorted([*heap, a + b])
    assert sum(c * len(w) for c, w in zip(counts, words, strict=True)) == merged


def test_keep_probability_is_the_c_tools_formula():
    counts = [0, 0, 0, 0, 0, 50_000, 3_000, 700, 40, 6]
    total, t = sum(counts), 1e-3
    keep = keep_probability(torch.tensor(counts), t)
    for c, p in zip(counts, keep.tolist(), strict=True):
        expected = 0.0 if c == 0 else min(1.0, (math.sqrt(c / (t * total)) + 1) * t * total / c)
        assert p == pytest.approx(expected, rel=1e-12)
    assert keep[5] < 0.2 and keep[-1] == 1.0
    assert keep_probability(torch.tensor(counts), 0.0).tolist() == [c > 0 for c in counts]


def test_min_count_and_specials_leave_the_vocabulary_and_frequencies_use_the_rest():
    counts = [9, 9, 9, 9, 9, 100, 4, 20]  # specials and the word seen 4 times are not trained
    method = bare(counts, sample=1e-2)
    assert method.vocabulary.tolist() == [False] * 5 + [True, False, True]
    expected = keep_probability(torch.tensor([0, 0, 0, 0, 0, 100, 0, 20]), 1e-2)
    assert torch.allclose(method.keep.double(), expected, atol=1e-7)


@pytest.mark.parametrize("kernel", KERNELS)
def test_subsampling_keeps_words_at_the_formula_rate(kernel):
    counts = [0] * 5 + [10_000, 10, 10, 10]
    method = bare(counts, sample=1e-2)
    ids = torch.full((50, 400), 5)
    torch.manual_seed(1)
    kept = drawn(method, ids, kernel)[3]
    rate, p = kept / ids.numel(), float(method.keep[5])
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / ids.numel())


# ---- windows and noise ----------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_dynamic_window_is_uniform_and_stays_inside_documents(kernel):
    window, length = 5, 40
    counts = [0] * 5 + [10] * (4 * length)
    method = bare(counts, sample=0.0, window=window)
    doc = [torch.arange(5 + k * length, 5 + (k + 1) * length) for k in range(4)]
    sep = torch.tensor([SEP])
    ids = torch.stack([torch.cat([doc[0], sep, doc[1]]), torch.cat([doc[2], sep, doc[3]])])
    position = {w: (w - 5) % length for w in range(5, 5 + 4 * length)}  # rows: separate blocks
    document = {w: (w - 5) // length for w in position}
    radii = []
    torch.manual_seed(0)
    for _ in range(300):
        bags, valid, targets, _ = drawn(method, ids, kernel)
        centre, slot = valid.nonzero(as_tuple=True)
        pairs = list(zip(bags[centre, slot].tolist(), targets[centre].tolist(), strict=True))
        assert all(document[i] == document[t] for i, t in pairs)  # never across [SEP] or rows
        assert all(0 < abs(position[i] - position[t]) <= window for i, t in pairs)
        # centres at least `window` words from either edge: 2 * radius pairs each
        middle = [position[w] for w in targets.tolist()]
        middle = torch.tensor([window <= p < length - window for p in middle])
        radii += (valid[middle].sum(1) // 2).tolist()
    observed = np.bincount(radii, minlength=window + 1)[1:]
    assert stats.chisquare(observed).pvalue > 1e-3  # uniform over 1..window


@pytest.mark.parametrize("kernel", KERNELS)
def test_cbow_examples_group_each_centres_window(kernel):
    counts = [0] * 5 + [10] * 30
    method = bare(counts, sample=0.0, architecture="cbow", window=3)
    ids = torch.arange(5, 35)[None]
    torch.manual_seed(0)
    bags, valid, targets, _ = drawn(method, ids, kernel)
    assert torch.equal(targets, ids[0])  # every word is a centre (all have a neighbour)
    for centre, bag, inside in zip(targets.tolist(), bags, valid, strict=True):
        bag = bag[inside]
        radius = max(abs(w - centre) for w in bag.tolist())
        expected = [
            w for w in range(centre - radius, centre + radius + 1) if w != centre and 5 <= w < 35
        ]
        assert sorted(bag.tolist()) == expected


def test_noise_follows_the_unigram_distribution_to_the_three_quarters():
    counts = [50] * 5 + [1000, 500, 200, 100, 50, 20, 10, 5, 3]  # last word below min_count
    method = bare(counts)
    torch.manual_seed(0)
    draws = method._noise((400_000,))
    observed = np.bincount(draws.numpy(), minlength=len(counts))
    assert observed[:5].sum() == 0 and observed[-1] == 0
    p = np.array(counts[5:-1], dtype=float) ** 0.75
    expected = p / p.sum() * len(draws)
    assert stats.chisquare(observed[5:-1], expected).pvalue > 1e-3


def test_compiled_draws_noise_and_pairs():
    counts = [50] * 5 + [1000, 500, 200, 100, 50, 20, 10, 5, 3]  # last word below min_count
    method = bare(counts, sample=0.0)
    sampler = (method.noise_prob, method.noise_alias, method.noise_words)
    ids = torch.multinomial(torch.tensor(counts[5:-1], dtype=torch.float), 40_000, True)[None] + 5
    torch.manual_seed(0)
    _, _, targets, noise, _ = compiled_draws(ids, method.keep, SEP, 5, cbow=False,
                                             per_pair=False, negative=10, noise=sampler)  # fmt: skip
    assert noise.shape == (len(targets), 10) == (40_000, 10)
    observed = np.bincount(noise.flatten().numpy(), minlength=len(counts))
    assert observed[:5].sum() == 0 and observed[-1] == 0
    p = np.array(counts[5:-1], dtype=float) ** 0.75
    assert stats.chisquare(observed[5:-1], p / p.sum() * noise.numel()).pvalue > 1e-3
    # one example per pair: the same windows as one example per centre, drawn from the same seed
    ids = ids[:, :300]
    torch.manual_seed(1)
    bags, valid, targets, _, kept = compiled_draws(ids, method.keep, SEP, 5, cbow=False,
                                                   per_pair=False, negative=0, noise=sampler)  # fmt: skip
    torch.manual_seed(1)
    pairs = compiled_draws(ids, method.keep, SEP, 5, cbow=False, per_pair=True, negative=0,
                           noise=sampler)  # fmt: skip
    expected = one_example_per_pair(bags, valid, targets)
    assert all(torch.equal(a, b) for a, b in zip(pairs[:3], expected, strict=True))
    assert pairs[3] is None and pairs[4] == kept == 300


# ---- losses against word2vec.c's updates ------------------------------------------------------


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def c_tool_updates(method, bags, targets, noise=None, paths=None):
    """word2vec.c's per-example updates at alpha = 1, all taken from the same weights, and the
    loss: NS (label 1 for the target, 0 for noise; a noise word equal to the target skipped) and
    HS (label 1 - code at each node on the path); CBOW averages the bag and gives every bag
    word the whole error ``neu1e``."""
    syn0 = method.input.weight.detach().double()
    d_in, loss = torch.zeros_like(syn0), 0.0
    d_out = torch.zeros_like(syn0)
    d_inner = torch.zeros_like(syn0)
    for n, (bag, target) in enumerate(zip(bags, targets, strict=True)):
        h = sum(syn0[w] for w in bag) / len(bag)
        neu1e = torch.zeros_like(h)
        if noise is not None:
            syn1 = method.output.weight.detach().double()
            for k, word in enumerate([target, *noise[n]]):
                if k > 0 and word == target:
                    continue
                label = 1.0 if k == 0 else 0.0
                f = float(h @ syn1[word])
                g = label - sigmoid(f)
                loss -= math.log(sigmoid(f) if label else 1 - sigmoid(f))
                neu1e += g * syn1[word]
                d_out[word] += g * h
        if paths is not None:
            syn1 = method.inner.weight.detach().double()
            for code, node in zip(*paths[target], strict=True):
                f = float(h @ syn1[node])
                g = 1 - code - sigmoid(f)
                loss -= math.log(sigmoid(f) if code == 0 else 1 - sigmoid(f))
                neu1e += g * syn1[node]
                d_inner[node] += g * h
        for w in bag:
            d_in[w] += neu1e
    return loss, d_in, d_out, d_inner


def grad(table):
    g = table.weight.grad
    return (g.to_dense() if g.is_sparse else g).double()


def padded(bags):
    """``(M, S)`` ids and validity of ragged bags (padding id 0, never valid)."""
    width = max(len(b) for b in bags)
    ids = torch.tensor([b + [0] * (width - len(b)) for b in bags])
    return ids, torch.tensor([[True] * len(b) + [False] * (width - len(b)) for b in bags])


BAGS = [[5, 6, 7], [6], [9, 10, 5, 5], [8, 7]]  # a word may repeat in a window
TARGETS = [7, 8, 6, 10]


@pytest.mark.parametrize("architecture,noise_per", [("skipgram", "pair"), ("skipgram", "centre"),
                                                    ("cbow", "centre")])  # fmt: skip
def test_negative_sampling_loss_and_gradients_are_the_c_tools_updates(architecture, noise_per):
    counts = [0] * 5 + [40, 30, 20, 10, 8, 6]
    method = bare(counts, architecture=architecture, negative=3, dim=6)
    torch.nn.init.normal_(method.output.weight, std=0.5)
    torch.nn.init.normal_(method.input.weight, std=0.5)
    g = torch.Generator().manual_seed(0)
    ids, valid = padded(BAGS)
    shape = (*ids.shape, 3) if noise_per == "pair" else (len(BAGS), 3)
    noise = torch.randint(5, 11, shape, generator=g)  # some draws equal the target
    total = method.objective(ids, valid, torch.tensor(TARGETS), noise)
    total.backward()
    if architecture == "cbow":  # one example per centre: the bag predicts the target
        examples = [(bag, t, n) for bag, t, n in zip(BAGS, TARGETS, noise.tolist(), strict=True)]
    else:  # one example per pair: each context word predicts the centre
        examples = [([w], t, noise[m, s].tolist() if noise_per == "pair" else noise[m].tolist())
                    for m, (bag, t) in enumerate(zip(BAGS, TARGETS, strict=True))
                    for s, w in enumerate(bag)]  # fmt: skip
    bags, targets, draws = zip(*examples, strict=True)
    loss, d_in, d_out, _ = c_tool_updates(method, bags, targets, draws)
    assert float(total.detach()) == pytest.approx(loss, rel=1e-5)
    assert torch.allclose(-grad(method.input), d_in, atol=1e-5)  # SGD at lr 1 = the C update
    assert torch.allclose(-grad(method.output), d_out, atol=1e-5)


@pytest.mark.parametrize("architecture", ["skipgram", "cbow"])
def test_hierarchical_softmax_loss_and_gradients_are_the_c_tools_updates(architecture):
    # words 5..8 with counts a=10 b=6 c=3 d=2: the hand-built tree of the first test
    counts = [0] * 5 + [10, 6, 3, 2]
    method = bare(counts, architecture=architecture, negative=0, hierarchical_softmax=True,
                  min_count=1, dim=5)  # fmt: skip
    assert method.output is None
    torch.nn.init.normal_(method.inner.weight, std=0.5)
    torch.nn.init.normal_(method.input.weight, std=0.5)
    paths = {
        5: ([0], [2]),
        6: ([1, 1], [2, 1]),
        7: ([1, 0, 1], [2, 1, 0]),
        8: ([1, 0, 0], [2, 1, 0]),
    }
    bags, targets = [[5, 6], [6], [8, 7, 5], [7]], [8, 5, 7, 6]
    ids, valid = padded(bags)
    total = method.objective(ids, valid, torch.tensor(targets), None)
    total.backward()
    if architecture == "skipgram":  # one example per pair
        bags, targets = zip(
            *[([w], t) for b, t in zip(bags, targets, strict=True) for w in b], strict=True
        )
    loss, d_in, _, d_inner = c_tool_updates(method, bags, targets, paths=paths)
    assert float(total.detach()) == pytest.approx(loss, rel=1e-5)
    assert torch.allclose(-grad(method.input), d_in, atol=1e-5)
    assert torch.allclose(-grad(method.inner), d_inner, atol=1e-5)


def test_loss_value_is_per_example_and_gradient_the_sum():
    counts = [0] * 5 + [10] * 20
    method = bare(counts, sample=0.0)
    ids = torch.arange(5, 25)[None]
    torch.manual_seed(3)
    out = method({"input_ids": ids})
    torch.manual_seed(3)
    bags, valid, targets, _ = method.examples(ids)
    centre, slot = valid.nonzero(as_tuple=True)  # one example and one noise set per pair
    pairs = len(centre)
    targets = targets[centre]
    noise = method._noise((pairs, method.negative))
    total = method.objective(bags[centre, slot][:, None], valid.new_ones(pairs, 1), targets, noise)
    assert float(out["loss"].detach()) == pytest.approx(float(total.detach()) / pairs, rel=1e-6)
    assert float(out["examples"]) == pairs and float(out["words"]) == 20
    out["loss"].backward()
    g_mean = grad(method.input).clone()
    method.zero_grad()
    total.backward()
    assert torch.allclose(g_mean, grad(method.input))
    # output vectors start at 0: log 2 per term, noise draws equal to the target skipped
    skipped = (noise == targets[:, None]).sum()
    terms = pairs * 6 - int(skipped)
    assert float(out["loss"].detach()) == pytest.approx(terms * math.log(2) / pairs, rel=1e-6)


# ---- data, export, training -------------------------------------------------------------------


def test_blocks_drop_rare_words_separate_documents_and_pad_the_tail(lee):
    _, tok = lee
    docs = [{"text": "The police said"}, {"text": "zzzunknown the fire"}, {"text": "a police"}]
    ids = {w: tok.convert_tokens_to_ids(w) for w in ("the", "police", "said", "fire", "a")}
    assert tok.unk_token_id not in ids.values()
    vocabulary = torch.ones(len(tok), dtype=torch.bool)
    vocabulary[SPECIALS] = False
    vocabulary[ids["said"]] = False  # as if below min_count
    blocks = [b["input_ids"].tolist() for b in WordBlocks(docs, tok, 4, vocabulary)]
    the, police, fire, a = ids["the"], ids["police"], ids["fire"], ids["a"]
    assert blocks == [[the, police, SEP, the], [fire, SEP, a, police]]
    blocks = [b["input_ids"].tolist() for b in WordBlocks(docs, tok, 3, vocabulary)]
    assert blocks == [[the, police, SEP], [the, fire, SEP], [a, police, 0]]  # [PAD] = 0 at the end


def test_export_loads_in_gensim_text_and_binary(lee, tmp_path):
    from gensim.models import KeyedVectors

    source, tok = lee
    method = Word2Vec.build(BuildContext(tokenizer=tok), dim=8)
    method.training_data(source.train, tok, 64)
    torch.nn.init.normal_(method.input.weight)
    method.export(tmp_path)
    words, vectors, counts = method.word_vectors()
    assert counts.tolist() == sorted(counts.tolist(), reverse=True) and min(counts) >= 5
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        kv = KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=binary)
        assert kv.index_to_key == words
        assert np.array_equal(kv.vectors, vectors.numpy())  # %.9g round-trips float32 exactly
    vocab = (tmp_path / "vocab.txt").read_text().split("\n")
    assert vocab[0] == f"{words[0]} {counts[0]}" and len(vocab) == len(words) + 1
    assert json.loads((tmp_path / "config.json").read_text())["words"] == len(words)


def test_load_state_dict_restores_counts_and_tables(lee):
    source, tok = lee
    method = Word2Vec.build(BuildContext(tokenizer=tok), dim=8, hierarchical_softmax=True)
    method.training_data(source.train, tok, 64)
    fresh = Word2Vec.build(BuildContext(tokenizer=tok), dim=8, hierarchical_softmax=True)
    fresh.load_state_dict(method.state_dict(), strict=True)
    for name in (
        "counts",
        "keep",
        "noise_prob",
        "noise_alias",
        "hs_codes",
        "hs_points",
        "hs_lengths",
    ):
        assert torch.equal(getattr(fresh, name), getattr(method, name)), name


@pytest.mark.parametrize("architecture,lr", [("skipgram", 0.025), ("cbow", 0.05)])
def test_a_few_sgd_steps_on_lee_reduce_the_loss(lee, architecture, lr):
    source, tok = lee
    torch.manual_seed(0)
    method = Word2Vec.build(BuildContext(tokenizer=tok), dim=32, architecture=architecture)
    dataset, collate = method.training_data(source.train, tok, 128)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate)
    batches = [b for _, b in zip(range(8), loader, strict=False)]
    opt = torch.optim.SGD(method.parameters(), lr=lr)  # sparse gradients, as the engine's SGD

    def fixed_loss():
        with torch.random.fork_rng():
            torch.manual_seed(123)
            return float(method(batches[0])["loss"].detach())

    before = fixed_loss()
    for _ in range(2):
        for batch in batches:
            opt.zero_grad()
            method(batch)["loss"].backward()
            opt.step()
    assert fixed_loss() < 0.95 * before  # from 6 log 2 with the output vectors at 0


def test_cli_pretrain_then_wordsim_and_analogy(tmp_path, capsys):
    from gensim.models import KeyedVectors

    from selfsup.cli import main

    run = tmp_path / "run"
    args = ["pretrain", "--method", "word2vec", "--data", "lee", "--budget", "3steps",
            "--batch-size", "8", "--out", str(run), "--seed", "0", "num_workers=0",
            "progress=false", "log_every=1", "tokenizer.vocab_size=20000", "method_args.dim=16"]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(r["examples"] > 0 and r["words"] > 0 for r in lines)
    assert lines[0]["lr"] == pytest.approx(0.025 * (1 - (1 - 1e-4) / 3))  # linear, no warm-up
    kv = KeyedVectors.load_word2vec_format(str(run / "export" / "vectors.bin"), binary=True)
    assert kv.vector_size == 16 and "the" in kv.key_to_index

    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "wordsim"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 < result["wordsim353_coverage"] < 100 and -1 <= result["wordsim353_spearman"] <= 1
    assert result["simlex999_pairs"] > 0
    result_pairs = result["wordsim353_pairs"]
    assert (
        main(["evaluate", str(run), "--protocol", "analogy", "--arg", "restrict_vocab=5000"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["restrict_vocab"] == 5000 and 0 < result["total_coverage"] < 100
    assert main(["evaluate", str(run), "--protocol", "analogy", "--arg", "topn=3"]) == 2
    assert "restrict_vocab" in capsys.readouterr().err
    # the untrained baseline: the run's vocabulary, with the vectors it started from
    assert main(["evaluate", str(run), "--protocol", "wordsim", "--random-init"]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["random_init"] and floor["step"] == 0
    assert floor["wordsim353_pairs"] == result_pairs


def test_fused_sgd_refuses_optimizer_settings_it_would_ignore(tmp_path, capsys):
    from selfsup.cli import main

    args = ["pretrain", "--method", "word2vec", "--data", "lee", "--budget", "1steps",
            "--out", str(tmp_path / "run"), "num_workers=0", "progress=false",
            "tokenizer.vocab_size=2000", "method_args.dim=8"]  # fmt: skip
    assert main([*args, "optim.momentum=0.9"]) == 2
    assert "method_args.fused=false" in capsys.readouterr().err
    again = [args[0], "--overwrite", *args[1:], "optim.momentum=0.9", "method_args.fused=false"]
    assert main(again) == 0


def test_registered_with_the_reference_defaults():
    cls = METHODS.get("word2vec")
    assert cls.kind == "text" and cls.tokenizer_kind == "wordlevel"
    assert cls.protocols == ("wordsim", "analogy", "knn", "linear")
    d = cls.defaults
    assert (d.optimizer, d.lr, d.momentum, d.weight_decay) == ("sgd", 0.025, 0.0, 0.0)
    assert (d.warmup, d.final_lr, d.schedule) == (0.0, 1e-4, "linear")
    with pytest.raises(ValueError, match="architecture"):
        Word2Vec(10, SPECIALS, SEP, architecture="glove")
    with pytest.raises(ValueError, match="hierarchical_softmax"):
        Word2Vec(10, SPECIALS, SEP, negative=0)


def test_cached_documents_give_the_blocks_of_the_text_and_split_across_workers(lee):
    source, tok = lee
    docs = [{"text": s["text"]} for s in source.train][:60]
    method = Word2Vec.build(BuildContext(tokenizer=tok), dim=8, shuffle=False)
    cached, _ = method.training_data(docs, tok, 50)
    assert cached.documents is not None
    streamed = WordBlocks(docs, tok, 50, method.vocabulary)
    blocks = [b["input_ids"] for b in cached]
    assert all(torch.equal(a, b["input_ids"]) for a, b in zip(blocks, streamed, strict=True))
    loader = torch.utils.data.DataLoader(cached, batch_size=None, num_workers=2)
    words = sorted(int(w) for b in loader for w in b["input_ids"] if w > 4)
    assert words == sorted(int(w) for b in blocks for w in b if w > 4)  # each word once
    assert int(method.counts[method.vocabulary].sum()) == len(words)


def test_shuffled_blocks_are_the_texts_blocks_in_an_order_of_seed_and_epoch(lee):
    source, tok = lee
    docs = [{"text": s["text"]} for s in source.train][:60]
    method = Word2Vec.build(BuildContext(tokenizer=tok), dim=8)
    assert method.shuffle  # the default
    shuffled, _ = method.training_data(docs, tok, 50, seed=3)
    in_order = [b["input_ids"].tolist() for b in WordBlocks(docs, tok, 50, method.vocabulary)]

    def epoch(dataset, n, num_workers=0):
        dataset.set_epoch(n)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
        return [b["input_ids"].tolist() for b in loader]

    first = epoch(shuffled, 0)
    assert sorted(first) == sorted(in_order) and first != in_order  # each block once, moved
    assert epoch(shuffled, 1) != first and epoch(shuffled, 0) == first
    assert sorted(epoch(shuffled, 0, num_workers=2)) == sorted(first)  # workers share it
    again, _ = method.training_data(docs, tok, 50, seed=3)
    other, _ = method.training_data(docs, tok, 50, seed=4)
    assert epoch(again, 0) == first and epoch(other, 0) != first
    ranks = [method.training_data(docs, tok, 50, rank=r, world_size=2, seed=3)[0] for r in (0, 1)]
    assert epoch(ranks[0], 0) + epoch(ranks[1], 0) == first  # contiguous parts of one order


@pytest.mark.parametrize("architecture,kwargs", VARIANTS)
def test_fused_update_in_one_chunk_is_an_sgd_step_on_the_objective(architecture, kwargs):
    counts = [0] * 5 + [40, 30, 20, 10, 8, 6, 5, 5]
    ids = torch.tensor([[5, 6, 7, 8, 3, 9, 10, 11, 12, 5, 6, 7, 5]])
    fused = bare(counts, architecture=architecture, sample=0.0, min_count=1, dim=6,
                 kernel="torch", **kwargs)  # fmt: skip
    plain = bare(counts, architecture=architecture, sample=0.0, min_count=1, dim=6,
                 fused=False, **kwargs)  # fmt: skip
    for table in ("input", "output", "inner"):
        if getattr(plain, table) is not None:
            torch.nn.init.normal_(getattr(plain, table).weight, std=0.5)
            getattr(fused, table).weight.data.copy_(getattr(plain, table).weight)
    torch.manual_seed(7)
    draws = plain.examples(ids)
    noise = plain._noise((len(draws[2]), plain.negative)) if plain.negative else None
    total = plain.objective(*draws[:3], noise)
    total.backward()
    fused_total = fused.sgd_update(*draws[:3], noise, lr=0.1)
    assert float(fused_total) == pytest.approx(float(total.detach()), rel=1e-5)
    for table in ("input", "output", "inner"):
        if getattr(plain, table) is not None:
            expected = getattr(plain, table).weight.detach() - 0.1 * grad(getattr(plain, table))
            assert torch.allclose(getattr(fused, table).weight.double(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shared_negatives": True},
        {"architecture": "cbow"},
        {"architecture": "cbow", "hierarchical_softmax": True},
    ],
)
def test_fused_chunks_apply_one_after_another(kwargs):
    counts = [0] * 5 + [40, 30, 20, 10, 8]
    ids = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])
    kwargs = {**kwargs, "kernel": "torch"}  # the vectorised kernel's chunks
    one = bare(counts, sample=0.0, min_count=1, dim=4, **kwargs)
    torch.nn.init.normal_(one.output.weight, std=0.5)
    two = bare(counts, sample=0.0, min_count=1, dim=4, chunk_size=6, **kwargs)
    steps = bare(counts, sample=0.0, min_count=1, dim=4, **kwargs)
    for other in (two, steps):
        other.load_state_dict(one.state_dict())
    torch.manual_seed(1)
    bags, valid, targets, _ = one.examples(ids)
    noise = one._noise((len(targets), one.negative))
    one.sgd_update(bags, valid, targets, noise, lr=0.5)
    two.sgd_update(bags, valid, targets, noise, lr=0.5)
    assert len(targets) == 12  # chunks of 6 examples == two updates in a row
    steps.sgd_update(bags[:6], valid[:6], targets[:6], noise[:6], lr=0.5)
    steps.sgd_update(bags[6:], valid[6:], targets[6:], noise[6:], lr=0.5)
    for table in ("input", "output", "inner"):
        if getattr(one, table) is not None:
            assert torch.equal(getattr(two, table).weight, getattr(steps, table).weight)
    assert not torch.allclose(two.input.weight, one.input.weight)


def test_fused_buffers_are_reused_across_steps_without_changing_the_result():
    counts = [0] * 5 + [40, 30, 20, 10, 8]
    ids = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])
    a = bare(counts, sample=0.0, min_count=1, dim=4, chunk_size=5, kernel="torch")
    torch.nn.init.normal_(a.output.weight, std=0.5)
    b = bare(counts, sample=0.0, min_count=1, dim=4, chunk_size=5, kernel="torch")
    b.load_state_dict(a.state_dict())
    torch.manual_seed(2)
    a.update({"input_ids": ids}, lr=0.3)
    kept = {name: buffer.data_ptr() for name, buffer in a._scratch.buffers.items()}
    torch.manual_seed(3)
    a.update({"input_ids": ids[:, :7]}, lr=0.3)  # smaller: the same buffers, sliced
    assert {name: buffer.data_ptr() for name, buffer in a._scratch.buffers.items()} == kept
    torch.manual_seed(2)
    b.update({"input_ids": ids}, lr=0.3)
    b._scratch.buffers.clear()
    torch.manual_seed(3)
    b.update({"input_ids": ids[:, :7]}, lr=0.3)
    for table in ("input", "output"):
        assert torch.equal(getattr(a, table).weight, getattr(b, table).weight)


def test_init_scale_sets_the_range_of_the_input_vectors():
    counts = [0] * 5 + [40, 30, 20, 10, 8]
    c_tool = bare(counts, dim=50).input.weight.detach()  # the C tool's [-0.5/dim, 0.5/dim]
    gensim = bare(
        counts, dim=50, init_scale=1.0
    ).input.weight.detach()  # gensim 4's [-1/dim, 1/dim]
    assert float(c_tool.abs().max()) <= 0.5 / 50 < float(gensim.abs().max()) <= 1 / 50
    with pytest.raises(ValueError, match="init_scale"):
        bare(counts, init_scale=0.0)


# ---- the compiled kernel: the C tool's updates one example after another -----------------------


def c_tool_in_order(method, examples, lr):
    """word2vec.c's training loop over ``(bag, target, noise, path)`` examples, in float64: each
    example's output rows move as they are scored, its bag's input rows once at the end by the
    summed error; every example sees the updates of those before it. Returns the loss (each
    score taken just before its row moved) and the tables."""
    syn0 = method.input.weight.detach().double().clone()
    out = method.output.weight.detach().double().clone() if method.output is not None else None
    inner = method.inner.weight.detach().double().clone() if method.inner is not None else None
    loss = 0.0
    for bag, target, noise, path in examples:
        h = sum(syn0[w] for w in bag)
        if method.cbow_mean:
            h = h / len(bag)
        neu1e = torch.zeros_like(h)
        scored = [(out, target, 1.0)] + [(out, w, 0.0) for w in noise if w != target]
        scored = scored if out is not None else []
        scored += [(inner, node, 1.0 - code) for code, node in zip(*path, strict=True)]
        for table, row, label in scored:
            f = float(h @ table[row])
            loss -= math.log(sigmoid(f) if label else 1 - sigmoid(f))
            g = lr * (label - sigmoid(f))
            neu1e += g * table[row]
            table[row] += g * h
        for w in bag:
            syn0[w] += neu1e
    return loss, {"input": syn0, "output": out, "inner": inner}


@pytest.mark.parametrize("architecture,kwargs", VARIANTS)
def test_numba_kernel_applies_the_c_tools_updates_one_example_after_another(architecture, kwargs):
    counts = [0] * 5 + [40, 30, 20, 10, 8, 6, 5, 5]
    ids = torch.tensor([[5, 6, 7, 8, 3, 9, 10, 11, 12, 5, 6, 7, 5, 6, 5]])  # words repeat
    method = bare(counts, architecture=architecture, sample=0.0, min_count=1, dim=6,
                  kernel="numba", **kwargs)  # fmt: skip
    for table in (method.input, method.output, method.inner):
        if table is not None:
            torch.nn.init.normal_(table.weight, std=0.5)
    torch.manual_seed(7)
    bags, valid, targets, _ = method.examples(ids)
    k = method.negative
    per_pair = architecture == "skipgram" and not method.shared_negatives
    noise = None
    if k:
        noise = method._noise((*bags.shape, k) if per_pair else (len(targets), k))
    hs = method.inner is not None
    examples = []
    for m in range(len(targets)):
        bag = bags[m][valid[m]].tolist()
        t = int(targets[m])
        path = (method.hs_codes[t][: method.hs_lengths[t]].tolist(),
                method.hs_points[t][: method.hs_lengths[t]].tolist()) if hs else ([], [])  # fmt: skip
        if architecture == "cbow":
            examples.append((bag, t, noise[m].tolist() if k else [], path))
            continue
        slots = valid[m].nonzero().flatten().tolist()
        for s in slots:  # skip-gram: one example per pair, in the window's order
            draw = (noise[m, s] if per_pair else noise[m]).tolist() if k else []
            examples.append(([int(bags[m, s])], t, draw, path))
    loss, expected = c_tool_in_order(method, examples, lr=0.2)
    total = method.sgd_update(bags, valid, targets, noise, lr=0.2)
    assert float(total) == pytest.approx(loss, rel=1e-5)
    for name, table in expected.items():
        if table is not None:
            assert torch.allclose(getattr(method, name).weight.double(), table, atol=1e-5), name


def test_kernel_auto_is_numba_on_a_cpu_and_torch_elsewhere(monkeypatch):
    from selfsup.methods import word2vec

    counts = [0] * 5 + [40, 30, 20, 10, 8]
    method = bare(counts)
    assert method.resolved_kernel(method.input.weight) == "numba"
    assert method.resolved_kernel(method.input.weight.double()) == "torch"
    assert bare(counts, kernel="torch").resolved_kernel(method.input.weight) == "torch"
    pinned = bare(counts, sample=0.0, kernel="numba").double()  # as on a GPU: not its tables
    with pytest.raises(ValueError, match="kernel='numba' needs float32 tables on the CPU"):
        pinned.update({"input_ids": torch.tensor([[5, 6, 7, 8, 9, 5, 6]])}, lr=0.1)
    with pytest.raises(ValueError, match="kernel"):
        bare(counts, kernel="cython")
    monkeypatch.setattr(word2vec, "numba_available", lambda: False)
    assert method.resolved_kernel(method.input.weight) == "torch"
    with pytest.raises(ValueError, match="needs numba"):
        bare(counts, kernel="numba")


def test_numba_kernel_steps_are_the_same_every_run(lee):
    source, tok = lee
    docs = [{"text": s["text"]} for s in source.train][:20]
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        method = Word2Vec.build(BuildContext(tokenizer=tok), kernel="numba", min_count=2)
        blocks, _ = method.training_data(docs, tok, 200, seed=0)
        for _, ids in zip(range(3), blocks, strict=False):
            method.update({"input_ids": ids["input_ids"][None]}, lr=0.025)
        weights.append((method.input.weight.clone(), method.output.weight.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    assert not torch.equal(weights[0][1], torch.zeros_like(weights[0][1]))


def test_threads_share_a_steps_blocks(lee):
    source, tok = lee
    docs = [{"text": s["text"]} for s in source.train][:20]
    torch.manual_seed(0)
    method = Word2Vec.build(BuildContext(tokenizer=tok), min_count=2, threads=2)
    blocks, _ = method.training_data(docs, tok, 200, seed=0)
    ids = torch.stack([b["input_ids"] for _, b in zip(range(4), blocks, strict=False)])
    before = method.output.weight.clone()
    torch.manual_seed(1)
    out = method.update({"input_ids": ids}, lr=0.025)
    assert torch.isfinite(out["loss"]) and out["examples"] > 0
    torch.manual_seed(1)  # each half of the blocks drew from its own seed
    seeds = torch.randint(0, 2**62, (2,)).tolist()
    sampler = (method.noise_prob, method.noise_alias, method.noise_words)
    words = [compiled_draws(half, method.keep, method.sep_id, method.window, cbow=False,
                            per_pair=True, negative=5, noise=sampler, seed=seed)[4]
             for half, seed in zip(ids.tensor_split(2), seeds, strict=True)]  # fmt: skip
    assert out["words"] == sum(words) and min(words) > 0
    assert not torch.equal(method.output.weight, before)
    with pytest.raises(ValueError, match="threads"):
        Word2Vec.build(BuildContext(tokenizer=tok), threads=2, kernel="torch")
    with pytest.raises(ValueError, match="threads"):
        Word2Vec.build(BuildContext(tokenizer=tok), threads=0)


def test_several_gpu_processes_get_dense_gradients(lee):
    # NCCL cannot all-reduce sparse gradients (gloo can): a multi-GPU run's tables are dense
    # unless method_args.sparse says otherwise
    _, tok = lee
    cases = [(1, "cuda", {}), (2, "cpu", {}), (2, "cuda", {}), (2, "cuda", {"sparse": True})]
    sparse = [
        Word2Vec.build(
            BuildContext(tokenizer=tok, world_size=w, device_type=d), dim=8, **kw
        ).input.sparse
        for w, d, kw in cases
    ]
    assert sparse == [True, True, False, True]
