"""selfsup: self-supervised representation learning for images, text and image-text pairs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfsup.config import RunConfig

__version__ = "0.1.0"


def pretrain(config: RunConfig, resume: str | Path | None = None, overwrite: bool = False) -> Path:
    """Pretrain from a :class:`selfsup.config.RunConfig`; see :func:`selfsup.pipeline.pretrain`."""
    from selfsup.pipeline import pretrain as _pretrain

    return _pretrain(config, resume=resume, overwrite=overwrite)


def evaluate(run_dir: str | Path, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401
    """Evaluate a run and append the result to its results.jsonl; see
    :func:`selfsup.evaluate.evaluate` for the protocols and their arguments."""
    from selfsup.evaluate import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


def embed(run_dir: str | Path, out: str | Path, **kwargs: Any) -> Path:  # noqa: ANN401
    """Write a run's (N, D) embeddings of a dataset to ``out`` (.npy); see
    :func:`selfsup.evaluate.embed`."""
    from selfsup.evaluate import embed as _embed

    return _embed(run_dir, out, **kwargs)
