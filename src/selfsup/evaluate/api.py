"""``evaluate(run_dir, protocol)`` and ``embed(run_dir, data)``: frozen-encoder protocols.

Every result is appended to the run's ``results.jsonl`` with its protocol, data, parameters,
seed and time, so runs can be compared later.
"""

from __future__ import annotations

import difflib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfsup.checks import check_evaluable
from selfsup.config import ConfigError
from selfsup.data import DataSource, build_source
from selfsup.evaluate.features import (
    SUBSET_SEED,
    cached_extract,
    collate_for,
    data_fingerprint,
    extract,
)
from selfsup.evaluate.knn import knn_result
from selfsup.evaluate.linear import linear_probe
from selfsup.evaluate.protocols import EVAL_PROTOCOLS, EvalOptions
from selfsup.evaluate.zeroshot import (
    TEMPLATES,
    class_embeddings,
    retrieval_recall,
    zeroshot_accuracy,
)
from selfsup.methods.base import Method
from selfsup.runs import Run, load_run

log = logging.getLogger("selfsup")

BUILTIN_PROTOCOLS = ("knn", "linear", "zeroshot", "retrieval")


def protocol_names() -> list[str]:
    """Every protocol ``evaluate`` accepts: the built-in ones and the registered ones."""
    from selfsup.evaluate.protocols import EVAL_PROTOCOLS

    return [*BUILTIN_PROTOCOLS, *EVAL_PROTOCOLS.names()]


PROTOCOLS = BUILTIN_PROTOCOLS  # kept for compatibility; protocol_names() is complete

# Protocols that need only the frozen features ``embed`` gives: they apply to every method with
# the kNN protocol, without each method listing them.
FEATURE_PROTOCOLS = ("fewshot", "diagnostics")
# Protocols of a language model's predictions or word vectors: no pooled features, so their
# results record no pooling.
UNPOOLED_PROTOCOLS = ("mlm", "pseudo_perplexity", "perplexity", "wordsim", "analogy")


def method_protocols(method: Method) -> tuple[str, ...]:
    """The protocols that apply to ``method``: its own, and the feature protocols when it has
    the kNN protocol."""
    own = tuple(method.protocols)
    extra = tuple(p for p in FEATURE_PROTOCOLS if "knn" in own and p not in own)
    return own + extra


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is present, else ``"cpu"``; other names unchanged.

    Raises:
        ConfigError: ``cuda`` asked for where there is no GPU.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no GPU torch can use; use cpu")
    return device


def check_sizes(**sizes: float | None) -> None:
    """Raise ConfigError naming the first option that is set but not positive."""
    for name, value in sizes.items():
        if value is not None and not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _source(run: Run, data: str | None) -> DataSource:
    # shuffle_buffer=0: evaluation reads streams in file order, so "the first N" is well defined.
    return build_source(
        data or run.data_spec(), image_size=run.config.image_size, seed=0, shuffle_buffer=0
    )


def _record(run: Run, result: dict[str, Any]) -> dict[str, Any]:
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": run.step, **result}
    with open(run.path / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def labelled_features(
    run: Run, source: DataSource, protocol: str, options: EvalOptions
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Frozen features and labels of ``bank_size`` training and ``query_size`` test samples
    (a fixed draw from each split, :func:`~selfsup.evaluate.features.fixed_subset`), embedded
    once per checkpoint and cached under ``RUN_DIR/features/``.

    Raises:
        ConfigError: the data has no labels, no test split or an unlabelled sample.
    """
    if not source.classes or source.test is None:
        raise ConfigError(
            f"protocol {protocol} needs labelled data with a test split; {source.name!r} has "
            f"{'no test split' if source.classes else 'no labels'}"
        )
    method = run.method
    collate = collate_for(method, run.tokenizer, run.config.seq_len)
    base = {"step": run.step, "checkpoint": run.checkpoint,
            "random_init": options.random_init, "data": source.name,
            "pooling": method.pooling, "image_size": run.config.image_size,
            "seq_len": run.config.seq_len}  # fmt: skip
    out = []
    for split, dataset, limit in (("train", source.train, options.bank_size),
                                  ("test", source.test, options.query_size)):  # fmt: skip
        key = {**base, "split": split, "limit": limit, "subset": f"seed{SUBSET_SEED}",
               **data_fingerprint(dataset)}  # fmt: skip
        out += cached_extract(options.cache_dir, key, method.embed, dataset, options.batch_size,
                              limit, collate, options.device)  # fmt: skip
    bank, bank_y, query, query_y = out
    if (bank_y < 0).any() or (query_y < 0).any():
        raise ConfigError(f"protocol {protocol} needs every sample of {source.name!r} labelled")
    return bank, bank_y, query, query_y


def _set_pooling(method: Method, pooling: str | None) -> None:
    if pooling is None:
        return
    try:
        method.set_pooling(pooling)
    except ValueError as err:
        raise ConfigError(f"--pooling: {err}") from None


def evaluate(
    run_dir: str | Path,
    protocol: str = "knn",
    data: str | None = None,
    k: int = 200,
    temperature: float = 0.1,
    bank_size: int | None = None,
    query_size: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
    random_init: bool = False,
    extra: dict[str, str] | None = None,
    pooling: str | None = None,
    cache: bool = True,
) -> dict[str, Any]:
    """Evaluate the run's encoder and append the result to ``results.jsonl``.

    Args:
        run_dir: a run directory.
        protocol: "knn" and "linear" (labelled data; the linear probe fits an L2-regularised
            logistic regression on frozen features, see :mod:`selfsup.evaluate.linear`), "zeroshot" and "retrieval" (CLIP runs), "mlm" (masked-token
            accuracy of MLM runs on the held-out split, fixed masking seed).
        data: evaluation data spec (default: the run's data); needs train and test splits.
        k: kNN neighbours.
        temperature: kNN vote temperature.
        bank_size: use only N training samples as the kNN memory bank: a fixed random subset
            (:func:`~selfsup.evaluate.features.fixed_subset`), the first N of a stream.
        query_size: use only N test samples as queries, drawn alike.
        batch_size: feature extraction batch size.
        device: where to run the encoder.
        seed: masking seed of the "mlm" protocol.
        random_init: evaluate the run's encoder at its random initialisation (the baseline).
        extra: protocol-specific options (``--arg KEY=VALUE``) of registered protocols.
        pooling: text encoders: how token states are pooled ("mean", "cls" or "last", as the
            method allows); default the method's. Recorded with the result.
        cache: keep the frozen features of knn, linear and fewshot in ``RUN_DIR/features/``
            (one embedding pass per checkpoint, data, split and size).

    Returns:
        The result record (also appended to ``run_dir/results.jsonl``).
    """
    valid = protocol_names()
    if protocol not in valid:
        close = difflib.get_close_matches(protocol, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown protocol {protocol!r}.{hint} Valid: {', '.join(valid)}")
    check_sizes(k=k, temperature=temperature, bank_size=bank_size, query_size=query_size,
                batch_size=batch_size)  # fmt: skip
    device = resolve_device(device)
    run = load_run(run_dir, device, random_init)
    source = _source(run, data)
    method = run.method
    if protocol not in method_protocols(method):
        raise ConfigError(
            f"protocol {protocol} does not apply to a {run.config.method} run ({run.path}); "
            f"its protocols: {', '.join(method_protocols(method))}"
        )
    check_evaluable(run.config.method, method.kind, source, protocol)
    _set_pooling(method, pooling)
    base = {"protocol": protocol, "data": source.name, "seed": seed, "random_init": random_init}
    if method.pooling is not None and protocol not in UNPOOLED_PROTOCOLS:
        base["pooling"] = method.pooling
    options = EvalOptions(
        k, temperature, bank_size, query_size, batch_size, device, seed, dict(extra or {}),
        random_init, run.path / "features" if cache else None,
    )  # fmt: skip
    if protocol in EVAL_PROTOCOLS:
        figures = EVAL_PROTOCOLS.get(protocol)(run, source, options)
        return _record(run, {**base, **figures})
    if extra:
        flags = [f"--{k.replace('_', '-')}" for k in extra]
        raise ConfigError(
            f"protocol {protocol} takes no --arg options, got {', '.join(extra)}; its settings "
            f"are selfsup evaluate's flags ({', '.join(flags)}?, see selfsup evaluate --help)"
        )
    if source.test is None:
        raise ConfigError(f"data {source.name!r} has no test split to evaluate on")

    collate = collate_for(method, run.tokenizer, run.config.seq_len)
    if protocol in ("knn", "linear"):
        bank, bank_y, query, query_y = labelled_features(run, source, protocol, options)
        sizes = {"bank": len(bank), "queries": len(query), "classes": list(source.classes)}
        if protocol == "linear":
            probe = linear_probe(bank, bank_y, query, query_y, len(source.classes), seed=seed)
            return _record(run, {**base, **sizes, **probe})
        k = min(k, len(bank))  # every sample of a smaller bank votes: the k the result used
        acc = knn_result(bank, bank_y, query, query_y, len(source.classes), k, temperature)
        params = {"k": k, "temperature": temperature, **sizes}
        return _record(run, {**base, **params, **acc})

    def encode_text(texts: list[str]) -> torch.Tensor:
        return method.encode_text(**method.tokenize(texts, device))

    if protocol == "zeroshot":
        if not source.classes:
            raise ConfigError(f"protocol zeroshot needs class names; {source.name!r} has none")
        images, labels, _ = extract(
            method.encode_image_batch, source.test, batch_size, query_size, collate, device
        )
        classes = class_embeddings(encode_text, source.classes).cpu()  # images come on the CPU
        result = zeroshot_accuracy(images, classes, labels)
        held_out = getattr(source.test, "heldout_classes", None)
        if held_out:
            idx = [source.classes.index(c) for c in held_out]
            mask = torch.isin(labels, torch.tensor(idx))
            if mask.any():
                result["heldout_top1"] = zeroshot_accuracy(images[mask], classes, labels[mask])[
                    "top1"
                ]
        return _record(run, {**base, "templates": len(TEMPLATES), "images": len(images), **result})

    images, _, captions = extract(
        method.encode_image_batch, source.test, batch_size, query_size, collate, device
    )
    texts, _, _ = extract(
        method.encode_text_batch, source.test, batch_size, query_size, collate, device
    )
    if len(images) <= 10:  # R@10 of 10 pairs is 100 % whatever the encoder
        log.warning("retrieval over %d pairs only (the test split of %s): R@K with K >= %d "
                    "pairs is 100 %% by construction", len(images), source.name, len(images))  # fmt: skip
    return _record(run, {**base, "pairs": len(images), **retrieval_recall(images, texts, captions)})


def embed(
    run_dir: str | Path,
    out: str | Path,
    data: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    limit: int | None = None,
    device: str = "auto",
    pooling: str | None = None,
) -> Path:
    """Write the encoder's (N, D) features of ``data``'s ``split`` to ``out`` (.npy).

    Labels, when the data has them, go to ``out`` with ``.labels.npy`` in place of ``.npy``.
    ``pooling`` chooses how a text encoder pools token states (see :func:`evaluate`).
    """
    check_sizes(batch_size=batch_size, limit=limit)
    device = resolve_device(device)
    run = load_run(run_dir, device)
    _set_pooling(run.method, pooling)
    source = _source(run, data)
    check_evaluable(run.config.method, run.method.kind, source, "embed")
    dataset = source.train if split == "train" else source.test
    if dataset is None:
        raise ConfigError(f"data {source.name!r} has no {split} split")
    collate = collate_for(run.method, run.tokenizer, run.config.seq_len)
    feats, labels, _ = extract(run.method.embed, dataset, batch_size, limit, collate, device)
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")  # the name np.save writes
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    labels_path(out).unlink(missing_ok=True)  # an earlier embedding's labels are not these
    if (labels >= 0).any():
        np.save(labels_path(out), labels.numpy())
    return out


def labels_path(out: Path) -> Path:
    """Where :func:`embed` writes the labels of the embeddings in ``out`` (``X.npy``):
    ``X.labels.npy``."""
    return out.with_name(out.with_suffix("").name + ".labels.npy")
