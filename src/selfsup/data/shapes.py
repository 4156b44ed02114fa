"""``shapes[:N]`` — a generated image-caption set for compositional and zero-shot tests.

Each image is rendered on access, deterministically from its index (no files): one or two
objects on a dark grey background, each with a shape, a colour and a size; two objects stand in a
spatial relation and the caption says so, e.g. ``"a small red circle above a large blue square"``.

- ``classes`` are all colour x shape combinations, ``"red circle"`` ... (30 classes).
- Zero-shot hold-out: the combinations in :data:`HELDOUT_COMBINATIONS` never appear in the train
  split, in either object; every colour and every shape still appears in train.
- Train (``N`` samples, default 20,000): half one object, half two; ``label`` is the first
  object's class.
- Test (1,500 samples): one object each, classes cycling through all 30 (index ``i`` has label
  ``i % 30``), so held-out and seen classes are equally represented.

The content depends only on the index and split, not on the run's seed, so ``shapes`` is the same
benchmark for every run.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from selfsup.data.registry import register_dataset
from selfsup.data.source import DataError, DataSource

__all__ = [
    "CLASSES",
    "COLOURS",
    "HELDOUT_CLASSES",
    "HELDOUT_COMBINATIONS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "render_scene",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "purple": (150, 60, 210),
}
SIZES: dict[str, float] = {"small": 0.14, "large": 0.22}  # object radius, fraction of S
RELATIONS = ("above", "below", "to the left of", "to the right of")
CLASSES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
# One held-out colour per shape, so every colour and shape is still seen in training.
HELDOUT_COMBINATIONS = (
    ("red", "triangle"),
    ("orange", "cross"),
    ("yellow", "circle"),
    ("green", "star"),
    ("blue", "square"),
)
HELDOUT_CLASSES = [f"{colour} {shape}" for colour, shape in HELDOUT_COMBINATIONS]
SEEN_CLASSES = [name for name in CLASSES if name not in HELDOUT_CLASSES]

DEFAULT_TRAIN_SIZE = 20_000
DEFAULT_TEST_SIZE = 1_500
_SPLIT_CODE = {"train": 0, "test": 1}
_COLOUR_JITTER = 15  # per channel, so "red" is a range of reds
_BACKGROUND_RANGE = (15, 60)  # dark greys: every palette colour contrasts with them


@dataclass(frozen=True)
class ShapeObject:
    """One object; ``x``, ``y`` are its centre as fractions of the image side (y down)."""

    colour: str
    shape: str
    size: str
    x: float
    y: float
    rgb: tuple[int, int, int]

    @property
    def class_name(self) -> str:
        """``"colour shape"``, an entry of :data:`CLASSES`."""
        return f"{self.colour} {self.shape}"

    @property
    def phrase(self) -> str:
        """``"a small red circle"``."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects, the relation of the first to the second (``None`` for one object), background."""

    objects: tuple[ShapeObject, ...]
    relation: str | None
    background: int

    @property
    def caption(self) -> str:
        """E.g. ``"a small red circle above a large blue square"``."""
        if self.relation is None:
            return self.objects[0].phrase
        return f"{self.objects[0].phrase} {self.relation} {self.objects[1].phrase}"


def _jittered(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(COLOURS[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    r, g, b = np.clip(base, 0, 255).tolist()
    return int(r), int(g), int(b)


def _place(rng: np.random.Generator, radius: float, lo: float, hi: float) -> float:
    # Centre in [lo + radius, hi - radius]: the object stays inside [lo, hi].
    return float(rng.uniform(lo + radius, max(lo + radius, hi - radius)))


def _object(
    rng: np.random.Generator, combo: tuple[str, str], box: tuple[float, float, float, float]
) -> ShapeObject:
    colour, shape = combo
    size = ("small", "large")[int(rng.integers(2))]
    radius = SIZES[size]
    x0, y0, x1, y1 = box
    x, y = _place(rng, radius, x0, x1), _place(rng, radius, y0, y1)
    return ShapeObject(colour, shape, size, x, y, _jittered(colour, rng))


def _two_object_boxes(relation: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Each object gets its own half of the image, so they never overlap and the relation holds.
    top, bottom = (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)
    left, right = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)
    return {
        "above": (top, bottom),
        "below": (bottom, top),
        "to the left of": (left, right),
        "to the right of": (right, left),
    }[relation]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        # Upright equilateral triangle, shifted so its bounding box is centred.
        angles = (-90.0, 30.0, 150.0)
        return [
            (cx + r * math.cos(math.radians(a)), cy + r / 4 + r * math.sin(math.radians(a)))
            for a in angles
        ]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = math.radians(-90.0 + 36.0 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "cross":
        w = 0.34 * r  # half width of an arm
        outline = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
                   (-w, w), (-r, w), (-r, -w), (-w, -w)]  # fmt: skip
        return [(cx + dx, cy + dy) for dx, dy in outline]
    raise ValueError(f"no polygon for shape {shape!r}")


def render_scene(scene: Scene, size: int) -> np.ndarray:
    """Draw a scene.

    Args:
        scene: What to draw.
        size: Image side S.

    Returns:
        uint8 array (S, S, 3).
    """
    # Draw at a higher resolution and box-filter down: antialiased edges at small S.
    factor = max(1, math.ceil(96 / size))
    side = size * factor
    grey = scene.background
    canvas = Image.new("RGB", (side, side), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        cx, cy, r = obj.x * side, obj.y * side, SIZES[obj.size] * side
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=obj.rgb)
        elif obj.shape == "square":
            h = 0.85 * r  # about the area of the circle
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=obj.rgb)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=obj.rgb)
    if factor > 1:
        canvas = canvas.resize((size, size), Image.Resampling.BOX)
    return np.array(canvas, dtype=np.uint8)  # writable copy, (S, S, 3)


class ShapesDataset(Dataset):
    """Generated shapes with compositional captions (see the module docstring).

    Args:
        length: Number of samples.
        image_size: Side S.
        split: ``"train"`` (1-2 objects, held-out combinations excluded) or ``"test"`` (one
            object, all classes in turn).
        seed: Base seed of the generator; index ``i`` is rendered from ``(seed, split, i)``.

    Attributes:
        classes: All ``"colour shape"`` class names (index = label).
        heldout_classes: The classes that never occur in the train split.
        heldout_labels: Their indices in ``classes``.

    Returns samples ``{"image": uint8 (3, S, S), "text": str, "label": int}``.
    """

    classes = CLASSES
    heldout_classes = HELDOUT_CLASSES
    heldout_labels = [CLASSES.index(name) for name in HELDOUT_CLASSES]

    def __init__(self, length: int, image_size: int, split: str = "train", seed: int = 0) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.length = length
        self.image_size = image_size
        self.split = split
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        """The scene behind sample ``index`` (what the caption describes)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], index])
        background = int(rng.integers(_BACKGROUND_RANGE[0], _BACKGROUND_RANGE[1] + 1))
        whole = (0.0, 0.0, 1.0, 1.0)
        if self.split == "test":
            combo = tuple(CLASSES[index % len(CLASSES)].split(" "))
            return Scene((_object(rng, combo, whole),), None, background)
        picks = rng.choice(len(SEEN_CLASSES), size=2, replace=False)
        first, second = (tuple(SEEN_CLASSES[int(p)].split(" ")) for p in picks)
        if rng.random() < 0.5:
            return Scene((_object(rng, first, whole),), None, background)
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        box_a, box_b = _two_object_boxes(relation)
        objects = (_object(rng, first, box_a), _object(rng, second, box_b))
        return Scene(objects, relation, background)

    @functools.cached_property
    def captions(self) -> list[str]:
        """Every sample's caption, without rendering (e.g. to train a tokenizer)."""
        return [self.scene(i).caption for i in range(self.length)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        image = torch.from_numpy(render_scene(scene, self.image_size)).permute(2, 0, 1)
        return {
            "image": image.contiguous(),  # (3, S, S)
            "text": scene.caption,
            "label": CLASSES.index(scene.objects[0].class_name),
            "index": index,
        }


@register_dataset(
    "shapes",
    usage="shapes[:N]",
    description="generated shapes with compositional captions; 5 colour-shape pairs held out (zero-shot)",
)
def build_shapes(arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int) -> DataSource:
    """Build ``shapes`` or ``shapes:N`` (N train samples; see the module docstring)."""
    length = DEFAULT_TRAIN_SIZE
    if arg is not None:
        try:
            length = int(arg)
        except ValueError:
            length = 0
        if length < 1:
            raise DataError(f"shapes:N needs a positive integer number of samples, got {arg!r}")
    return DataSource(
        name="shapes" if arg is None else f"shapes:{arg}",
        kind="pair",
        train=ShapesDataset(length, image_size, "train"),
        test=ShapesDataset(DEFAULT_TEST_SIZE, image_size, "test"),
        classes=list(CLASSES),
        num_samples=length,
        description=f"generated shapes and captions ({length} train, {DEFAULT_TEST_SIZE} test)",
    )
