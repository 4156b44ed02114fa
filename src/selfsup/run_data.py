"""What a run reads: its tokenizer, its images decoded once, its training loader and the online
kNN monitor's samples (:func:`selfsup.pipeline.pretrain` calls these in order)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric

from selfsup.config import ConfigError, RunConfig, TokenizerConfig, parse_budget
from selfsup.data import DataSource
from selfsup.data.cache import AUTO_LIMIT_BYTES, DecodedImages, cacheable, decoded_cache
from selfsup.data.device_decode import DeferredCollate, DeviceDecoder, jpeg_decode_device
from selfsup.data.faults import FaultLog, read_faults, set_fault_log
from selfsup.engine.loader import EpochLoader
from selfsup.evaluate.diagnostics import OnlineKnn, Probe
from selfsup.methods import Method

log = logging.getLogger("selfsup")

# Vocabulary size trained when the config sets none: subword kinds 8,000; a word-level vocabulary
# keeps every word (word2vec's min_count prunes it, as the reference tool does).
DEFAULT_VOCAB = {"wordlevel": 10_000_000}


def texts_of(source: DataSource, limit: int = 200_000) -> list[str]:
    """Up to ``limit`` training texts (documents or captions) for tokenizer training: the first
    of the whole training set, whatever this process's share of a stream (so that a run's
    vocabulary does not depend on its number of processes)."""
    from selfsup.data.word_blocks import all_documents

    captions = getattr(source.train, "captions", None)
    if captions is not None:
        return list(captions[:limit])
    return list(itertools.islice(all_documents(source.train), limit))


def prepare_tokenizer(
    config: RunConfig,
    source: DataSource,
    run_dir: Path,
    fabric: Fabric,
    method_cls: type[Method] | None = None,
    resumed: bool = False,
) -> Any:  # noqa: ANN401
    """The run's tokenizer: saved with the run (``resumed``), given by ``tokenizer.path``, or
    trained on the training texts by rank 0 and broadcast to the other processes. The kind is the
    config's, else the method's ``tokenizer_kind``; the method may add special tokens."""
    from selfsup.data.tokenizer import load_tokenizer, train_tokenizer
    from selfsup.launch import on_rank_zero

    if resumed and (run_dir / "tokenizer").exists():
        return load_tokenizer(run_dir / "tokenizer")
    if config.tokenizer.path is not None:
        return load_tokenizer(config.tokenizer.path)
    pretrained = method_cls.tokenizer_path(config.method_args) if method_cls else None
    if pretrained is not None:  # the tokenizer of the encoder the method starts from
        try:
            return load_tokenizer(pretrained)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"method_args.init: no tokenizer could be read from {pretrained} "
                f"({type(err).__name__}); give a folder written by save_pretrained with its "
                "tokenizer, such as a masked-LM run's export/"
            ) from None
    kind, vocab_size = _tokenizer_choice(config, method_cls)
    extras = method_cls.tokenizer_specials(config.method_args) if method_cls else []
    tokenizer = on_rank_zero(fabric, "training the tokenizer", lambda: train_tokenizer(
        texts_of(source), kind=kind, vocab_size=vocab_size, extra_special_tokens=extras))  # fmt: skip
    return fabric.broadcast(tokenizer, src=0) if fabric.world_size > 1 else tokenizer


def trained_tokenizer(config: RunConfig, method_cls: type[Method] | None = None) -> TokenizerConfig:
    """The tokenizer settings a run that trains its tokenizer uses: the config's, with the
    method's ``tokenizer_kind`` and the default vocabulary size filled in (config.yaml records
    them)."""
    kind, vocab_size = _tokenizer_choice(config, method_cls)
    return dataclasses.replace(config.tokenizer, kind=kind, vocab_size=vocab_size)


def _tokenizer_choice(config: RunConfig, method_cls: type[Method] | None) -> tuple[str, int]:
    """(kind, vocabulary size) of the tokenizer a run trains: the config's, else the method's
    kind and the kind's default size."""
    kind = config.tokenizer.kind or (method_cls.tokenizer_kind if method_cls else "wordpiece")
    return kind, config.tokenizer.vocab_size or DEFAULT_VOCAB.get(kind, 8000)


def build_dataset(
    kind: str,
    source: DataSource,
    split: str,
    tokenizer: Any,  # noqa: ANN401
    seq_len: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Any, Any]:
    """(dataset, collate_fn) for a method of ``kind`` reading ``source``'s ``split``."""
    from selfsup.data.packing import CaptionCollate, PackedBlocks

    dataset = source.train if split == "train" else source.test
    if dataset is None:
        raise ConfigError(f"data {source.name!r} has no {split} split")
    if kind == "text":
        return PackedBlocks(dataset, tokenizer, seq_len, rank=rank, world_size=world_size), None
    if kind == "pair":
        return dataset, CaptionCollate(tokenizer, seq_len)
    return dataset, None


def use_decode_cache(config: RunConfig, cls: type[Method], source: DataSource) -> bool:
    """Whether to decode the training images once into memory (``decode_cache``)."""
    if config.decode_cache == "off" or cls.kind == "text" or not cacheable(source.train):
        return False
    if config.resample:  # a resampled stream is read from its files
        return False
    if config.decode_cache == "on":
        return True
    if source.num_samples is None:  # a stream of unknown length (compressed shards)
        return False
    return source.num_samples * 3 * config.image_size**2 <= AUTO_LIMIT_BYTES


def decode_once(config: RunConfig, source: DataSource) -> None:
    """Replace ``source.train`` by its images decoded into memory (``decode_cache``), JPEGs on
    the GPU where training runs on one; unreadable files are added to ``source.faults``."""
    with tempfile.TemporaryDirectory() as tmp:  # the decoding workers' faults land here
        set_fault_log(source.train, FaultLog(Path(tmp) / "faults.jsonl"))
        source.train = decoded_cache(
            source.train,
            source.num_samples,
            config.image_size,
            max(config.num_workers, 1),
            device=_jpeg_device(config),
        )
        source.faults = source.faults + read_faults(Path(tmp) / "faults.jsonl")
    source.num_samples = len(source.train)


def _jpeg_device(config: RunConfig) -> torch.device | None:
    """Where JPEGs decode (``decode_device``): the training GPU, or None for the workers."""
    if config.decode_device != "auto":
        return None
    return jpeg_decode_device(config.accelerator, config.strategy)


def make_loader(
    kind: str,
    source: DataSource,
    tokenizer: Any,  # noqa: ANN401
    config: RunConfig,
    fabric: Fabric,
    method: Method | None = None,
) -> EpochLoader:
    """The training loader; under an epoch budget, its epoch length is known to every process.
    The method's own ``training_data`` is used when it defines one."""
    rank, world = fabric.global_rank, fabric.world_size
    custom = None
    if method is not None:
        if source.train is None:
            raise ConfigError(f"data {source.name!r} has no train split")
        custom = method.training_data(
            source.train, tokenizer, config.seq_len, rank, world, seed=config.seed
        )
    if custom is not None:
        dataset, collate = custom
    else:
        dataset, collate = build_dataset(
            kind, source, "train", tokenizer, config.seq_len, rank, world
        )
    finish = None
    device = _jpeg_device(config)
    if device is not None and device.type == "cuda":
        device = fabric.device  # this process's GPU, once Fabric has launched the processes
    if device is not None and dataset is source.train:
        if getattr(dataset, "defer_jpeg", None) is False:  # decodes its files in every epoch
            # a copy: the evaluations read source.train decoded as before
            dataset = copy.copy(dataset)
            dataset.defer_jpeg = True
            collate = DeferredCollate(collate)
            finish = DeviceDecoder(config.image_size, device, faults=lambda: dataset.faults)
    try:
        loader = EpochLoader(
            dataset,
            config.batch_size,
            seed=config.seed,
            rank=rank,
            world_size=world,
            # decoded images in memory need no decoding worker
            num_workers=0 if isinstance(dataset, DecodedImages) else config.num_workers,
            collate_fn=collate,
            # text and method-built examples: blocks or pairs, not the source's samples
            num_samples=source.num_samples if kind != "text" and custom is None else None,
            finish=finish,
            pin_memory=fabric.device.type == "cuda",
        )
    except ValueError as err:
        raise ConfigError(f"batch_size: {err}") from None
    if parse_budget(config.budget).unit == "epochs" and loader.steps_per_epoch is None:
        log.info("counting the batches of one epoch of %s", source.name)
        steps = loader.count_steps()
        if world > 1:  # all processes take the same number of steps: the shortest share
            steps = int(
                fabric.all_reduce(torch.tensor(steps, device=fabric.device), reduce_op="min")
            )
        loader.set_steps_per_epoch(steps)
    text = kind == "text" and custom is None  # packed blocks of tokens
    what = f"blocks of seq_len={config.seq_len} tokens" if text else "samples"
    if custom is not None:
        what = "training examples"  # the method's own (word2vec's blocks, BERT's pairs)
    share = " per process" if world > 1 else ""
    short = f"fewer {what}{share} than one batch" if loader.steps_per_epoch == 0 else None
    if loader.steps_per_epoch is None and not loader.endless:  # packed text, a method's examples
        count = loader.first_examples()
        if world > 1:  # every process stops alike
            count = int(
                fabric.all_reduce(torch.tensor(count, device=fabric.device), reduce_op="min")
            )
        if count < config.batch_size:
            short = f"only {count} {what}{share}, fewer than one batch"
    if short is not None:
        lower = "batch_size or seq_len" if text else "batch_size"
        raise ConfigError(
            f"batch_size {config.batch_size}: {source.name!r} has {short}; lower {lower}"
        )
    return loader


def online_knn(
    config: RunConfig,
    source: DataSource,
    collate: Any,  # noqa: ANN401
    device: torch.device,
) -> OnlineKnn:
    """The online kNN monitor of ``knn_every``: the first ``knn_bank`` training samples as the
    bank, the first ``knn_queries`` test samples as queries (both must be labelled; see
    :func:`check_online_knn`, run before the run directory is written)."""
    try:
        return OnlineKnn(
            Probe.from_dataset(source.train, config.knn_bank, collate, device),
            Probe.from_dataset(source.test, config.knn_queries, collate, device),
            len(source.classes),
        )
    except ValueError as err:
        raise ConfigError(f"knn_every={config.knn_every}: {source.name!r}: {err}") from None
