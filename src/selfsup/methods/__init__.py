"""Self-supervised methods; importing this package registers every method."""

from selfsup.methods import clip, mlm, simclr  # noqa: F401  (registration side effect)
from selfsup.methods.base import (
    METHODS,
    BuildContext,
    Method,
    OptimDefaults,
    create_method,
    register_method,
)

__all__ = ["METHODS", "BuildContext", "Method", "OptimDefaults", "create_method", "register_method"]
