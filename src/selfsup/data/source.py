"""The two types every data source shares: :class:`DataSource` and :class:`DataError`."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

__all__ = ["DataError", "DataSource"]

KINDS = ("image", "text", "pair")


class DataError(ValueError):
    """A data source cannot be built or read.

    The message names the offending file, path, column or key and says what was expected, so a
    user can fix the input without reading a traceback.
    """


@dataclass
class DataSource:
    """A decoded data source: train split, optional test split and what is known about them.

    Samples are dicts that the default ``torch.utils.data`` collate batches:

    - ``kind == "image"``: ``{"image": uint8 (3, S, S), "label": int}``
    - ``kind == "text"``: ``{"text": str}``
    - ``kind == "pair"``: ``{"image": uint8 (3, S, S), "text": str, "label": int}``

    ``label`` is ``-1`` for unlabelled samples.

    Attributes:
        name: The spec string the source was built from, e.g. ``"folder:/data/pets"``.
        kind: ``"image"``, ``"text"`` or ``"pair"``.
        train: Map-style or iterable dataset of training samples. Iterable (streamed) datasets
            have a ``set_epoch(epoch)`` method that reseeds their shuffling.
        test: Held-out split when the source has one, else ``None``.
        classes: Class names when labelled (index = label), else ``None``.
        num_samples: Number of training samples when known cheaply, else ``None``.
        description: One line saying what the data is.
        faults: Samples left out while the source was built (an empty image file, a caption
            row naming a missing image), one message each naming the file or line.
    """

    name: str
    kind: str
    train: Dataset
    test: Dataset | None
    classes: list[str] | None
    num_samples: int | None
    description: str = ""
    faults: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"source {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
