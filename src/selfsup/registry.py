"""Name -> builder registries for methods and backbones.

A registry maps a short name to a builder and a one-line description. Looking up an unknown name
raises a ``KeyError`` subclass whose message lists every valid name, so a typo on the command line
is answered with the choices rather than a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(KeyError):
    """Raised when a name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of builders.

    Args:
        kind: what the registry holds ("method", "backbone"), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator that registers ``builder`` under ``name``."""

        def wrap(builder: T) -> T:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            doc = (builder.__doc__ or "").strip().splitlines()
            self._descriptions[name] = description or (doc[0] if doc else "")
            return builder

        return wrap

    def get(self, name: str) -> T:
        """Return the builder registered under ``name``."""
        if name not in self._builders:
            valid = ", ".join(sorted(self._builders)) or "(none)"
            close = difflib.get_close_matches(name, list(self._builders), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Valid: {valid}")
        return self._builders[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the object registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name."""
        return {name: self._descriptions[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._builders
