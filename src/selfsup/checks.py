"""Checks that run before any work: method arguments, backbone names, data compatibility, and
what a resumed run may change. Each failure is one ``ConfigError`` naming the key or name and the
valid choices."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

from selfsup.backbones import VISION_BACKBONES
from selfsup.config import ConfigError, RunConfig, load_config
from selfsup.data import DataError, DataSource
from selfsup.data.faults import MIN_DENOMINATOR, preflight
from selfsup.methods import Method

# Which data kinds each method kind can consume (an image method reads the images of pairs).
COMPATIBLE = {"image": ("image", "pair"), "text": ("text", "pair"), "pair": ("pair",)}


def check_method_args(cls: type[Method], args: dict[str, Any]) -> None:
    """Raise ConfigError for a method argument the method does not take, or whose value is not
    of the type its signature declares (for plain ``bool``, ``int``, ``float`` and ``str``)."""
    valid = cls.argument_names()
    for key in args:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown method_args key {key!r} for method {cls.__name__}.{hint} Valid: "
                + (", ".join(valid) or "(none)")
            )
    declared = _declared_types(cls)
    for key, value in args.items():
        kind = declared.get(key, "")
        if kind.endswith(" | None"):
            if value is None:
                continue
            kind = kind.removesuffix(" | None")
        accepted = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}.get(kind)
        wrong = not isinstance(value, accepted or object) or (
            kind != "bool" and isinstance(value, bool)  # True is an int to Python
        )
        if accepted and wrong:
            raise ConfigError(
                f"method_args.{key} of method {cls.__name__} must be {kind}, got {value!r}"
            )


def _declared_types(cls: type[Method]) -> dict[str, str]:
    """Each argument's annotation as written, from the signatures ``argument_defaults`` reads
    (most derived class first)."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:
        for name in ("build", "__init__", "model_config"):
            if name in vars(klass):
                for param in inspect.signature(getattr(klass, name)).parameters.values():
                    annotation = param.annotation
                    if isinstance(annotation, type):
                        annotation = annotation.__name__
                    if isinstance(annotation, str):
                        out.setdefault(param.name, annotation)
    return out


def check_compatible(method: str, cls: type[Method], source: DataSource) -> None:
    if source.kind not in COMPATIBLE[cls.kind]:
        need = " or ".join(COMPATIBLE[cls.kind])
        raise ConfigError(
            f"method {method!r} needs {need} data, but {source.name!r} is {source.kind} data"
            + (" (no captions)" if cls.kind == "pair" else "")
        )


# What evaluate and embed accept besides: a pair run's image tower embeds labelled images.
EVALUABLE = {"image": ("image", "pair"), "text": ("text", "pair"), "pair": ("pair", "image")}


def check_evaluable(method: str, kind: str, source: DataSource, what: str) -> None:
    """Raise ConfigError when ``source`` lacks what a ``kind`` run's encoder reads for ``what``
    (a protocol, or "embed"); retrieval needs image-caption pairs."""
    allowed = ("pair",) if what == "retrieval" else EVALUABLE[kind]
    if source.kind not in allowed:
        raise ConfigError(
            f"{what}: a {method} run reads {' or '.join(allowed)} data, but {source.name!r} is "
            f"{source.kind} data"
        )


# What a resumed run may change: how long it trains and how it reports and saves, not what it
# computes (changing those would make "resume" a different experiment). The strategy is how the
# processes share the work: DDP and FSDP write the same whole-tensor checkpoints. The processes
# may be laid out on other machines (4 x 4 GPUs for 8 x 2), as long as there are as many
# (check_resumable: each resumes its own data position).
RESUMABLE_CHANGES = frozenset(
    {
        "budget",
        "strategy",
        "devices",
        "num_nodes",
        "out",
        "num_workers",
        "log_every",
        "diagnostics_every",
        "stop_on_collapse",
        "knn_every",
        "knn_bank",
        "knn_queries",
        "max_bad_fraction",
        "nonfinite",
        "checkpoint_every",
        "keep_checkpoints",
        "wandb",
        "progress",
    }
)


def resume_config(
    run_dir: str | Path, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> RunConfig:
    """The saved config of ``run_dir`` with allowed changes (budget, logging, checkpointing)."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there, so it is not a run directory")
    before = load_config(saved).to_dict()
    config = load_config(saved, overrides, values)
    changed = [
        k for k, v in config.to_dict().items() if v != before[k] and k not in RESUMABLE_CHANGES
    ]
    if changed:
        raise ConfigError(
            f"--resume cannot change {', '.join(changed)}; only "
            + ", ".join(sorted(RESUMABLE_CHANGES))
            + ". Start a new run (another --out) to change them"
        )
    return config


def check_precision_and_norm(
    method: str, cls: type[Method], precision: str, sync_batchnorm: bool
) -> None:
    """Raise for a precision or batch-norm setting that would silently break the method."""
    if precision == "bf16-true" and cls.fp32_state:
        raise ConfigError(
            f"precision=bf16-true: {method} keeps state that bf16 storage would freeze (momentum "
            "encoders move by less than bf16's resolution each step); use precision=bf16-mixed"
        )
    if sync_batchnorm and not cls.allows_sync_batchnorm:
        raise ConfigError(
            f"sync_batchnorm=true would undo {method}'s shuffling batch norm (its key encoder "
            "needs per-process statistics); leave sync_batchnorm off"
        )


def check_backbone(cls: type[Method], name: str | None) -> None:
    """Raise (listing the valid names) for a backbone the method's kind cannot build."""
    if name is None:
        return
    choices = cls.backbone_choices()
    if choices is not None:
        if name not in choices:
            valid = ", ".join(choices) if choices else "none (it has no backbone to choose)"
            raise ConfigError(f"backbone {name!r} is not one this method builds. Valid: {valid}")
        return
    if cls.kind == "text":
        from selfsup.backbones.text_configs import TEXT_BACKBONES

        TEXT_BACKBONES.get(name)
    elif name.startswith("timm:"):
        import timm

        if not timm.is_model(name.removeprefix("timm:")):
            raise ConfigError(f"backbone {name!r}: timm has no model of that name")
    else:
        VISION_BACKBONES.get(name)


def check_source_faults(config: RunConfig, source: DataSource) -> None:
    """Before any training: the samples left out while building the source (see
    ``DataSource.faults``) are within ``max_bad_fraction``, and the training data yields a
    readable sample among its first ones."""
    bad = len(source.faults)
    total = bad + (source.num_samples or 0)
    if bad > config.max_bad_fraction * max(total, MIN_DENOMINATOR):
        raise DataError(
            f"{bad} of the {total} samples of {source.name!r} cannot be used, more than "
            f"max_bad_fraction={config.max_bad_fraction:g}; for example: "
            + "; ".join(source.faults[:3])
        )
    try:
        preflight(source.train)
    except DataError as err:
        raise DataError(f"{source.name!r}: {err}") from None


def check_resample(config: RunConfig, source: DataSource) -> None:
    """``resample=true`` needs a streamed training split (tar shards or text files)."""
    from selfsup.data.streaming import PartitionedStream

    if not isinstance(source.train, PartitionedStream):
        raise ConfigError(
            f"resample=true applies to streamed sources (shards:, text:), not {source.name!r}, "
            "which is read by index: every epoch of it already visits each sample once"
        )


def check_online_knn(config: RunConfig, source: DataSource) -> None:
    """``knn_every > 0`` needs labelled data with a test split."""
    if config.knn_every > 0 and (not source.classes or source.test is None):
        raise ConfigError(
            f"knn_every={config.knn_every} needs labelled data with a test split; "
            f"{source.name!r} has {'no test split' if source.classes else 'no labels'} "
            "(set knn_every=0)"
        )
