"""Evaluation protocols for frozen encoders.

``selfsup.evaluate`` is both this package and the function :func:`selfsup.evaluate.evaluate`:
``selfsup/__init__.py`` defines the function, and importing the package (anything that evaluates
does) makes ``selfsup.evaluate`` the package. So the package is callable too, and
``selfsup.evaluate(run_dir, protocol="knn")`` works either way.
"""

import sys
import types
from typing import Any

from selfsup.evaluate.api import PROTOCOLS, embed, evaluate
from selfsup.evaluate.knn import knn_accuracy, knn_scores, topk_accuracy
from selfsup.evaluate.zeroshot import class_embeddings, retrieval_recall, zeroshot_accuracy

__all__ = [
    "PROTOCOLS",
    "class_embeddings",
    "embed",
    "evaluate",
    "knn_accuracy",
    "knn_scores",
    "retrieval_recall",
    "topk_accuracy",
    "zeroshot_accuracy",
]


class _CallablePackage(types.ModuleType):
    """This package, which called is :func:`evaluate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
