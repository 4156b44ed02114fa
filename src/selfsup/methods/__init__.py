"""Self-supervised methods; importing this package registers every method.

Each method lives in its own module here and registers itself with ``@register_method``; every
module of the package is imported below, so adding a file is enough to add a method.
"""

import importlib
import pkgutil

from selfsup.methods.base import (
    METHODS,
    BuildContext,
    Method,
    OptimDefaults,
    create_method,
    register_method,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "BuildContext", "Method", "OptimDefaults", "create_method", "register_method"]
