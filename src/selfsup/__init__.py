"""selfsup: self-supervised representation learning for images, text and image-text pairs."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def pretrain(config: Any, **kwargs: Any) -> Any:  # noqa: ANN401
    """Pretrain from a :class:`selfsup.config.RunConfig`; see :func:`selfsup.pipeline.pretrain`."""
    from selfsup.pipeline import pretrain as _pretrain

    return _pretrain(config, **kwargs)


def evaluate(run_dir: Any, **kwargs: Any) -> Any:  # noqa: ANN401
    """Evaluate a run; see :func:`selfsup.evaluate.evaluate`."""
    from selfsup.evaluate import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


def embed(run_dir: Any, out: Any, **kwargs: Any) -> Any:  # noqa: ANN401
    """Embed a dataset with a run's encoder; see :func:`selfsup.evaluate.embed`."""
    from selfsup.evaluate import embed as _embed

    return _embed(run_dir, out, **kwargs)
