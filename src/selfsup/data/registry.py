"""Name -> builder registry for data sources, and :func:`build_source` which parses a spec.

A spec is ``NAME`` or ``NAME:ARG``; everything after the first colon is the argument, so paths
may contain colons. ``folder:/data/pets`` calls the builder registered as ``"folder"`` with
``arg="/data/pets"``; ``digits`` calls the ``"digits"`` builder with ``arg=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from selfsup.data.source import DataError, DataSource
from selfsup.registry import Registry, UnknownNameError

__all__ = ["build_source", "list_datasets", "register_dataset", "reject_arg", "require_arg"]

DEFAULT_SHUFFLE_BUFFER = 1000


class SourceBuilder(Protocol):
    """Signature of a registered builder."""

    def __call__(
        self, arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int
    ) -> DataSource: ...


DATASETS: Registry = Registry("dataset")
_USAGE: dict[str, str] = {}  # name -> how the spec is written, e.g. "folder:PATH"


def register_dataset(
    name: str, *, description: str, usage: str | None = None
) -> Callable[[SourceBuilder], SourceBuilder]:
    """Register a source builder under ``name``.

    The builder receives the text after the first colon of the spec as ``arg`` (``None`` when the
    spec has no colon) and checks it with :func:`require_arg` or :func:`reject_arg`.

    Args:
        name: Spec prefix, e.g. ``"folder"``.
        description: One line for ``selfsup list``.
        usage: How the spec is written, e.g. ``"folder:PATH"`` or ``"shapes[:N]"``; defaults to
            ``name``.

    Returns:
        A decorator that registers the builder and returns it unchanged.
    """

    def decorator(builder: SourceBuilder) -> SourceBuilder:
        DATASETS.register(name, description)(builder)
        _USAGE[name] = usage or name
        return builder

    return decorator


def _ensure_builtins_registered() -> None:
    # Builders register themselves when their module is imported; importing the package
    # imports them all. Done lazily because the package imports this module.
    import selfsup.data  # noqa: F401


def list_datasets() -> dict[str, str]:
    """Registered data sources.

    Returns:
        ``{usage: description}`` sorted by name, where usage shows the argument, e.g.
        ``"folder:PATH"``.
    """
    _ensure_builtins_registered()
    return {_USAGE[name]: description for name, description in DATASETS.describe().items()}


def require_arg(name: str, arg: str | None, what: str = "PATH") -> str:
    """Return the spec argument of source ``name``, raising if it is missing or empty.

    Args:
        name: Source name, for the message.
        arg: Text after the colon, or ``None``.
        what: What the argument is, for the message.

    Returns:
        ``arg`` stripped of surrounding whitespace.
    """
    if arg is None or not arg.strip():
        raise DataError(f"dataset {name!r} needs an argument: write it as '{name}:{what}'")
    return arg.strip()


def reject_arg(name: str, arg: str | None) -> None:
    """Raise if source ``name``, which takes no argument, was given one."""
    if arg is not None:
        raise DataError(f"dataset {name!r} takes no argument, got {name}:{arg!r}")


def build_source(
    spec: str,
    *,
    image_size: int = 32,
    seed: int = 0,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> DataSource:
    """Build a data source from a spec string.

    Args:
        spec: ``NAME`` or ``NAME:ARG``, e.g. ``"digits"``, ``"folder:/data/pets"``,
            ``"shards:/data/cifar10"``, ``"text:corpus/*.txt"``, ``"captions:caps.csv"``.
        image_size: Side S of the square uint8 images, shape (3, S, S).
        seed: Seeds the streamed sources' shuffling and the generated sources' content.
        shuffle_buffer: Size of the shuffle buffer of streamed train splits (shards, text);
            ``0`` streams in file order. Ignored by map-style sources.

    Returns:
        The built :class:`DataSource`; its ``name`` is ``spec``.

    Raises:
        DataError: Unknown source name (the message lists the valid ones), bad argument, or
            missing/invalid input files.
    """
    _ensure_builtins_registered()
    if image_size < 1:
        raise DataError(f"image_size must be >= 1, got {image_size}")
    if shuffle_buffer < 0:
        raise DataError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
    name, sep, arg = spec.strip().partition(":")
    try:
        builder = DATASETS.get(name)
    except UnknownNameError as err:
        raise DataError(f"{err} (in data spec {spec!r})") from None
    return builder(
        arg if sep else None, image_size=image_size, seed=seed, shuffle_buffer=shuffle_buffer
    )
