"""Method-specific report figures as plain data (no plotting library needed to make them).

A method returns :class:`Panel` objects from ``Method.report_panels(batch)``; the report draws
them. Two kinds:

* ``"images"``: rows of images, e.g. MAE's masked input, reconstruction and original;
  ``rows`` maps a row label to a ``(N, 3, H, W)`` float tensor in [0, 1].
* ``"bars"``: one value per item, e.g. how many samples each SwAV prototype takes; ``values``
  is a ``(K,)`` tensor, drawn sorted, largest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Panel:
    """One method-specific figure for the report.

    Args:
        title: heading above the figure.
        kind: "images" or "bars".
        rows: for "images": row label -> (N, 3, H, W) float images in [0, 1].
        values: for "bars": (K,) values.
        caption: one or two sentences saying what the figure shows.
    """

    title: str
    kind: str
    rows: dict[str, Tensor] = field(default_factory=dict)
    values: Tensor | None = None
    caption: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("images", "bars"):
            raise ValueError(f"panel kind must be images or bars, got {self.kind!r}")
        if self.kind == "images" and not self.rows:
            raise ValueError("an images panel needs at least one row")
        if self.kind == "bars" and self.values is None:
            raise ValueError("a bars panel needs values")
