"""Property-based tests (hypothesis): invariants of masking, the budget and the config parser
that must hold for every input, not only the examples the other tests pick."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfsup.config import ConfigError, RunConfig, load_config, parse_budget
from selfsup.config_parse import parse_overrides
from selfsup.views.masking import random_patch_mask
from selfsup.views.tokens import IGNORE_INDEX, mask_tokens

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    batch=st.integers(1, 5),
    length=st.integers(1, 80),
    ratio=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**31 - 1),
)
def test_patch_mask_counts_and_inverse_permutation(batch, length, ratio, seed):
    keep = length - round(ratio * length)
    if keep < 1:
        with pytest.raises(ValueError, match="no visible patch"):
            random_patch_mask(batch, length, ratio)
        return
    m = random_patch_mask(batch, length, ratio, generator=torch.Generator().manual_seed(seed))
    assert m.keep.shape == (batch, keep) and m.mask.shape == (batch, length)
    assert (m.mask.sum(1) == length - keep).all()  # exactly round(ratio * L) masked per sample
    assert not m.mask.gather(1, m.keep).any()  # kept patches are the visible ones
    order = torch.cat([m.keep, (~m.mask).logical_not().nonzero()[:, 1].view(batch, -1)], 1)
    assert (order.sort(1).values == torch.arange(length)).all()  # a partition of the patches
    shuffled = m.restore.argsort(1)  # the shuffle
    assert (shuffled.gather(1, m.restore) == torch.arange(length)).all()


@FAST
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 40)),
    probability=st.floats(0.0, 1.0),
    split=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    seed=st.integers(0, 2**31 - 1),
)
def test_token_masking_never_touches_special_or_padding(shape, probability, split, seed):
    mask_replace, random_replace = split[0], split[1] * (1 - split[0])
    g = torch.Generator().manual_seed(seed)
    vocab, mask_id = 50, 4
    ids = torch.randint(5, vocab, shape, generator=g)
    special = torch.rand(shape, generator=g) < 0.2
    attention = (torch.rand(shape, generator=g) < 0.9).long()
    masked, labels = mask_tokens(
        ids, special, mask_token_id=mask_id, vocab_size=vocab, mlm_probability=probability,
        mask_replace=mask_replace, random_replace=random_replace, attention_mask=attention,
        special_token_ids=[0, 1, 2, 3, 4], generator=g,
    )  # fmt: skip
    selected = labels != IGNORE_INDEX
    protected = special | (attention == 0)
    assert not (selected & protected).any()
    assert (masked[~selected] == ids[~selected]).all()  # only selected positions change
    assert (labels[selected] == ids[selected]).all()
    changed = selected & (masked != ids)
    assert ((masked[changed] == mask_id) | (masked[changed] >= 5)).all()  # [MASK] or regular
    if probability == 0.0:
        assert not selected.any()


@FAST
@given(amount=st.integers(1, 10**6), unit=st.sampled_from(["", "steps", "epochs", "s", "m", "h"]))
def test_budget_reads_every_well_formed_amount(amount, unit):
    budget = parse_budget(f"{amount}{unit}")
    scale = {"": 1, "steps": 1, "epochs": 1, "s": 1, "m": 60, "h": 3600}[unit]
    assert budget.amount == amount * scale


@FAST
@given(text=st.text(max_size=12))
def test_budget_rejects_or_reads_any_text_with_a_clear_error(text):
    try:
        assert parse_budget(text).amount > 0
    except ConfigError as err:
        assert "budget" in str(err)


@FAST
@given(
    lr=st.floats(1e-6, 10.0),
    batch=st.integers(1, 4096),
    seed=st.integers(0, 2**31 - 1),
    temperature=st.floats(0.01, 1.0),
)
def test_overrides_reach_the_config_with_their_types(lr, batch, seed, temperature):
    config = load_config(None, [f"optim.lr={lr!r}", f"batch_size={batch}", f"seed={seed}",
                                f"method_args.temperature={temperature!r}"])  # fmt: skip
    assert config.optim.lr == lr and config.batch_size == batch and config.seed == seed
    assert config.method_args["temperature"] == temperature


KEYS = sorted(RunConfig.__dataclass_fields__)


@FAST
@given(key=st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True))
def test_an_unknown_top_level_key_is_named_in_the_error(key):
    if key in KEYS:
        return
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"{key}=1"])


@FAST
@given(items=st.lists(st.text(alphabet="abc=.", max_size=8), max_size=4))
def test_override_parsing_fails_only_with_a_config_error(items):
    try:
        parse_overrides(items)
    except ConfigError:
        pass


def _encoded(mode, width, height, fmt, seed):
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    image = rgb.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


MODES_PNG = ["RGB", "L", "RGBA", "P", "LA", "I;16", "1"]


@FAST
@given(
    mode=st.sampled_from(MODES_PNG + ["CMYK-jpeg", "RGB-jpeg", "L-jpeg"]),
    width=st.integers(1, 70),
    height=st.integers(1, 70),
    size=st.integers(1, 48),
    seed=st.integers(0, 1000),
)
def test_every_valid_image_decodes_to_a_square_rgb_tensor(mode, width, height, size, seed):
    from selfsup.data.decode import decode_image

    if mode.endswith("-jpeg"):
        data = _encoded(mode.removesuffix("-jpeg"), width, height, "JPEG", seed)
    else:
        data = _encoded(mode, width, height, "PNG", seed)
    out = decode_image(data, size)
    assert out.shape == (3, size, size) and out.dtype == torch.uint8


@FAST
@given(
    fmt=st.sampled_from(["PNG", "JPEG"]),
    cut=st.floats(0.0, 0.99),
    flips=st.lists(st.integers(0, 10_000), max_size=5),
    seed=st.integers(0, 1000),
)
def test_truncated_or_corrupted_bytes_give_a_data_error_naming_the_image(fmt, cut, flips, seed):
    """Damaged files either still decode (JPEG tolerates some damage) or raise DataError, never
    another exception type."""
    from selfsup.data import DataError
    from selfsup.data.decode import decode_image

    data = bytearray(_encoded("RGB", 24, 24, fmt, seed))
    data = data[: int(len(data) * cut)]
    for i in flips:
        if data:
            data[i % len(data)] ^= 0xFF
    try:
        out = decode_image(bytes(data), 16, name="shard-3/cat_0042.jpg")
        assert out.shape == (3, 16, 16)
    except DataError as err:
        assert "shard-3/cat_0042.jpg" in str(err)


@FAST
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_data_error(data):
    from selfsup.data import DataError
    from selfsup.data.decode import decode_image

    try:
        decode_image(data, 8, name="x.png")
    except DataError as err:
        assert "x.png" in str(err)


@FAST
@given(
    texts=st.lists(st.text(max_size=60), min_size=1, max_size=6),
    max_len=st.integers(2, 24),
)
def test_text_collate_pads_truncates_and_keeps_order(tiny_tokenizer, texts, max_len):
    from selfsup.evaluate.features import TextCollate

    samples = [{"text": t, "label": i} for i, t in enumerate(texts)]
    batch = TextCollate(tiny_tokenizer, max_len)(samples)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == len(texts) and ids.shape[1] <= max_len
    assert batch["label"].tolist() == list(range(len(texts))) and batch["text"] == texts
    pad = tiny_tokenizer.pad_token_id
    assert (ids[mask == 0] == pad).all()  # padding is masked out, real tokens are not
    assert (mask.sum(1) >= 1).all()  # [CLS]/[SEP] at least


@FAST
@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=5),
    side=st.integers(1, 12),
    max_len=st.integers(2, 16),
)
def test_caption_collate_pairs_every_image_with_its_caption(tiny_tokenizer, texts, side, max_len):
    from selfsup.data.packing import CaptionCollate

    images = [torch.full((3, side, side), i, dtype=torch.uint8) for i in range(len(texts))]
    samples = [{"image": im, "text": t} for im, t in zip(images, texts, strict=True)]
    batch = CaptionCollate(tiny_tokenizer, max_len)(samples)
    assert batch["image"].shape == (len(texts), 3, side, side)
    assert [int(batch["image"][i, 0, 0, 0]) for i in range(len(texts))] == list(range(len(texts)))
    assert batch["input_ids"].shape[1] <= max_len and batch["text"] == texts


_CSV_PIECES = st.sampled_from(
    ["a.png", "missing.png", ",", '"', "\n", "\r\n", "text", " ", "\t", "7"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.lists(_CSV_PIECES, max_size=40))
def test_any_caption_csv_gives_rows_with_reasons_or_one_data_error(tmp_path_factory, body):
    from PIL import Image

    from selfsup.data import DataError
    from selfsup.data.captions import read_caption_file

    folder = tmp_path_factory.mktemp("csv")
    Image.new("RGB", (4, 4)).save(folder / "a.png")
    path = folder / "c.csv"
    path.write_text("image,caption\n" + "".join(body), newline="")
    try:
        rows = read_caption_file(str(path))
    except DataError as err:
        assert "c.csv" in str(err)
        return
    assert len(rows.images) == len(rows.captions) == len(rows.labels) == len(rows.positions)
    assert all(p.endswith("a.png") for p in rows.images)  # only rows naming a real image
    assert rows.positions == sorted(set(rows.positions))
    assert all("c.csv, line" in fault for fault in rows.faults)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300))
def test_any_bytes_as_text_give_documents_or_a_binary_file_error(tmp_path_factory, data):
    from selfsup.data import DataError
    from selfsup.data.text import iter_documents

    path = tmp_path_factory.mktemp("txt") / "t.txt"
    path.write_bytes(data)
    try:
        documents = list(iter_documents(str(path)))
    except DataError as err:
        assert b"\0" in data and "t.txt is binary" in str(err)
        return
    assert all(d and d == d.strip() for d in documents)
