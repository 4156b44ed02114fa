"""Evaluation protocols beyond the built-in kNN, linear probe, zero-shot and retrieval.

A protocol is a function ``(run, source, options) -> dict`` registered with
:func:`register_protocol`; ``selfsup evaluate --protocol NAME`` calls it for runs whose method
lists ``NAME`` in its ``protocols``, and appends the returned figures to the run's
``results.jsonl`` with the protocol, data, seed and time. Every module of this package is
imported below, so adding a file is enough to add a protocol.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.registry import Registry


@dataclass
class EvalOptions:
    """The options of ``selfsup evaluate`` that a protocol may read.

    Attributes:
        k: kNN neighbours.
        temperature: kNN vote temperature.
        bank_size: use only the first N training samples (kNN bank, probe training set).
        query_size: use only the first N test samples.
        batch_size: encoder batch size.
        device: where the encoder runs.
        seed: seed of any randomness in the protocol (masking, sampling, splits).
        extra: protocol-specific values from ``--arg KEY=VALUE`` (strings; the protocol parses
            and validates them and names the valid keys in its error).
        random_init: the run's encoder is evaluated at its random initialisation.
        cache_dir: where frozen features are cached (None: not cached).
    """

    k: int = 200
    temperature: float = 0.1
    bank_size: int | None = None
    query_size: int | None = None
    batch_size: int = 256
    device: str = "cpu"
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    random_init: bool = False
    cache_dir: Path | None = None


Protocol = Callable[[Any, Any, EvalOptions], dict[str, Any]]
EVAL_PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol")


def register_protocol(name: str, description: str) -> Callable[[Protocol], Protocol]:
    """Decorator: register ``fn(run, source, options) -> dict of figures`` as protocol ``name``."""
    return EVAL_PROTOCOLS.register(name, description)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EVAL_PROTOCOLS", "EvalOptions", "register_protocol"]
