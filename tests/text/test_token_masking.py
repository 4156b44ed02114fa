import pytest
import torch

from selfsup.views.tokens import IGNORE_INDEX, _random_regular_tokens, mask_tokens

VOCAB, MASK_ID, SPECIALS = 1000, 4, [0, 1, 2, 3, 4]


def make_batch(b=64, length=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    lengths = torch.randint(length // 2, length + 1, (b,), generator=g)
    attention = (torch.arange(length) < lengths[:, None]).long()
    ids[attention == 0] = 0  # [PAD]
    special = torch.isin(ids, torch.tensor(SPECIALS))
    # some special tokens in the middle, e.g. document separators
    sep_pos = torch.rand(b, length, generator=g) < 0.05
    ids[sep_pos & (attention == 1)] = 3
    special |= sep_pos & (attention == 1)
    return ids, special, attention


def run(ids, special, attention, **kw):
    g = torch.Generator().manual_seed(1)
    return mask_tokens(
        ids,
        special,
        mask_token_id=MASK_ID,
        vocab_size=VOCAB,
        attention_mask=attention,
        special_token_ids=SPECIALS,
        generator=g,
        **kw,
    )


def test_rate_polarity_and_80_10_10():
    ids, special, attention = make_batch()
    before = ids.clone()
    masked, labels = run(ids, special, attention)
    assert torch.equal(ids, before)  # input untouched
    assert masked.dtype == labels.dtype == torch.int64 and masked.shape == labels.shape == ids.shape
    maskable = ~special & attention.bool()
    selected = labels != IGNORE_INDEX
    assert not bool((selected & ~maskable).any())  # never special or padding
    assert torch.equal(masked[~selected], ids[~selected])  # unselected positions unchanged
    assert torch.equal(labels[selected], ids[selected])  # labels are the original ids
    rate = selected.sum() / maskable.sum()
    assert abs(rate.item() - 0.15) < 0.01, rate
    n = selected.sum().item()
    to_mask = (masked == MASK_ID) & selected
    changed = (masked != ids) & selected & ~to_mask
    unchanged = (masked == ids) & selected
    assert abs(to_mask.sum().item() / n - 0.8) < 0.02
    # a random draw equal to the original token (p = 1/995) counts as unchanged
    assert abs(changed.sum().item() / n - 0.1) < 0.015
    assert abs(unchanged.sum().item() / n - 0.1) < 0.015
    assert not bool(torch.isin(masked[changed], torch.tensor(SPECIALS)).any())


def test_generator_makes_it_reproducible_and_global_rng_varies():
    ids, special, attention = make_batch(b=4, length=64)
    a, b = run(ids, special, attention), run(ids, special, attention)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(0)
    c = mask_tokens(ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB)
    d = mask_tokens(ids, special, mask_token_id=MASK_ID, vocab_size=VOCAB)
    assert not torch.equal(c[1], d[1])  # dynamic masking: a new mask each call


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_extreme_probabilities(p):
    ids, special, attention = make_batch(b=4, length=64)
    masked, labels = run(ids, special, attention, mlm_probability=p)
    selected = labels != IGNORE_INDEX
    assert torch.equal(selected, (~special & attention.bool()) if p else torch.zeros_like(selected))


def test_only_mask_replacement():
    ids, special, attention = make_batch(b=4, length=128)
    masked, labels = run(ids, special, attention, mask_replace=1.0, random_replace=0.0)
    selected = labels != IGNORE_INDEX
    assert bool((masked[selected] == MASK_ID).all()) and selected.any()


def test_random_tokens_cover_exactly_the_regular_vocabulary():
    g = torch.Generator().manual_seed(0)
    draws = _random_regular_tokens(torch.Size([20000]), 10, [5, 2, 2, 99], torch.device("cpu"), g)
    assert set(draws.tolist()) == {0, 1, 3, 4, 6, 7, 8, 9}
    counts = torch.bincount(draws, minlength=10)[[0, 1, 3, 4, 6, 7, 8, 9]].float()
    assert (counts / counts.sum() - 1 / 8).abs().max() < 0.015  # uniform


def test_invalid_fractions_raise():
    ids, special, attention = make_batch(b=2, length=8)
    with pytest.raises(ValueError):
        run(ids, special, attention, mask_replace=0.9, random_replace=0.2)
