import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.data import DataError, build_source
from selfsup.data.shapes import (
    CLASSES,
    COLOURS,
    HELDOUT_CLASSES,
    SHAPES,
    ShapesDataset,
)

PHRASE = r"a (small|large) (\w+) (\w+)"
CAPTION = re.compile(rf"^{PHRASE}(?: (above|below|to the left of|to the right of) {PHRASE})?$")
PALETTE = np.array(list(COLOURS.values()), dtype=float)  # (C, 3)
NAMES = list(COLOURS)


def parse(caption):
    match = CAPTION.match(caption)
    assert match, caption
    size, colour, shape, relation, size2, colour2, shape2 = match.groups()
    objects = [(size, colour, shape)] + ([(size2, colour2, shape2)] if relation else [])
    return objects, relation


def colour_masks(image):
    """Per palette colour, a boolean (S, S) mask of the pixels nearest to it (object pixels only)."""
    pixels = image.permute(1, 2, 0).numpy().astype(float)  # (S, S, 3)
    background = np.median(pixels.reshape(-1, 3), axis=0)
    is_object = np.abs(pixels - background).sum(-1) > 120
    nearest = np.argmin(((pixels[:, :, None, :] - PALETTE) ** 2).sum(-1), axis=-1)  # (S, S)
    return {name: is_object & (nearest == c) for c, name in enumerate(NAMES)}


def guess_shape(mask):
    """Shape from two mask statistics: fill ratio of the bounding box, and bottom/top mass."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()  # ~1 square, .79 circle, .57 cross, .5 triangle, .38 star
    half = box.shape[0] // 2
    bottom_heavy = box[-half:].sum() / max(1, box[:half].sum())  # ~3 for a triangle, else ~1
    if fill < 0.48:
        return "star"
    if bottom_heavy > 1.8:
        return "triangle"
    return min(
        {"square": 1.0, "circle": 0.785, "cross": 0.565}.items(), key=lambda kv: abs(kv[1] - fill)
    )[0]


def test_classes_are_all_colour_shape_pairs():
    source = build_source("shapes:10")
    assert source.kind == "pair" and source.classes == CLASSES
    assert len(CLASSES) == len(COLOURS) * len(SHAPES)
    assert source.test.heldout_classes == HELDOUT_CLASSES
    assert [CLASSES[i] for i in source.test.heldout_labels] == HELDOUT_CLASSES
    assert len(source.train) == source.num_samples == 10


def test_samples_batch_with_default_collate():
    source = build_source("shapes:8", image_size=32)
    batch = next(iter(DataLoader(source.train, batch_size=8)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert len(batch["text"]) == 8 and batch["label"].dtype == torch.int64


def test_rendering_is_deterministic():
    a, b = ShapesDataset(50, 32), ShapesDataset(50, 32)
    for i in (0, 7, 49):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["text"] == b[i]["text"]
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_heldout_combinations_never_appear_in_train():
    train = ShapesDataset(3000, 32)
    objects = 0
    for i in range(len(train)):
        caption = train.scene(i).caption
        for _, colour, shape in parse(caption)[0]:
            assert f"{colour} {shape}" not in HELDOUT_CLASSES, (i, caption)
            objects += 1
    seen = {f"{c} {s}" for i in range(300) for _, c, s in parse(train.scene(i).caption)[0]}
    assert seen == set(CLASSES) - set(HELDOUT_CLASSES)  # every other class does occur
    assert objects > 3000 * 1.3  # about half the images have two objects


def test_test_split_cycles_all_classes_with_single_objects():
    test = ShapesDataset(90, 32, split="test")
    for i in range(90):
        sample = test[i]
        objects, relation = parse(sample["text"])
        assert relation is None and len(objects) == 1
        assert CLASSES[sample["label"]] == f"{objects[0][1]} {objects[0][2]}" == CLASSES[i % 30]
    assert set(HELDOUT_CLASSES) <= {CLASSES[test[i]["label"]] for i in range(30)}


def test_train_label_is_first_objects_class():
    train = ShapesDataset(40, 16)
    for i in range(40):
        (_, colour, shape), *_ = parse(train[i]["text"])[0]
        assert CLASSES[train[i]["label"]] == f"{colour} {shape}"
        assert train.captions[i] == train[i]["text"]


def test_captions_match_the_rendered_pixels():
    # Colour: the object's pixels are mostly nearest the caption's colour. Shape: read back
    # from the mask's geometry. Relation: centroids. Size: large objects cover more pixels.
    dataset = ShapesDataset(240, 96)
    areas = {"small": [], "large": []}
    checked_relations = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        objects, relation = parse(sample["text"])
        masks = colour_masks(sample["image"])
        if relation is None:
            size, colour, shape = objects[0]
            counts = {name: m.sum() for name, m in masks.items()}
            assert max(counts, key=counts.get) == colour, (i, sample["text"], counts)
            assert guess_shape(masks[colour]) == shape, (i, sample["text"])
            areas[size].append(masks[colour].sum())
        elif objects[0][1] != objects[1][1]:
            first, second = masks[objects[0][1]], masks[objects[1][1]]
            assert first.sum() > 5 and second.sum() > 5, (i, sample["text"])
            y1, x1 = np.argwhere(first).mean(0)
            y2, x2 = np.argwhere(second).mean(0)
            holds = {
                "above": y1 < y2,
                "below": y1 > y2,
                "to the left of": x1 < x2,
                "to the right of": x1 > x2,
            }[relation]
            assert holds, (i, sample["text"])
            checked_relations += 1
    assert checked_relations > 60
    assert np.median(areas["large"]) > 1.8 * np.median(areas["small"])


def test_render_speed_budget():
    import time

    dataset = ShapesDataset(200, 32)
    start = time.perf_counter()
    for i in range(200):
        dataset[i]
    assert (time.perf_counter() - start) / 200 < 2e-3  # < 1 ms typical; slack for a busy CPU


@pytest.mark.parametrize("arg", ["0", "-3", "many"])
def test_bad_size_named(arg):
    with pytest.raises(DataError, match=f"shapes:N.*'{arg}'"):
        build_source(f"shapes:{arg}")
