"""The contract between a method and the engine.

A method is a ``torch.nn.Module`` that owns its whole objective: encoders, heads, views (random
augmentation or masking applied to the device batch), loss, and any state such as momentum
encoders, queues or prototypes (kept as parameters or buffers so that they are checkpointed).

The engine calls only what is defined here:

* ``forward(batch) -> {"loss": scalar, **named scalars to log}``
* ``after_step(step, total_steps)`` once per optimizer step (EMA, clamping, normalisation)
* ``param_groups()`` to build the optimizer
* ``embed(batch) -> (B, D)`` features for evaluation and ``export(path)`` for downstream use.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from selfsup.registry import Registry

METHODS: Registry = Registry("method")
register_method = METHODS.register


@dataclass(frozen=True)
class OptimDefaults:
    """A method's recommended optimisation recipe, used where the run config leaves a value unset.

    ``lr`` is the base learning rate for a batch of 256 samples; the engine scales it linearly with
    the global batch size when ``scale_lr`` is set (Goyal et al. 2017), as SimCLR, MoCo and BYOL do.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    scale_lr: bool = False
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup: float = 0.1  # fraction of the budget
    final_lr: float = 0.0  # fraction of the peak
    schedule: str = "cosine"  # or "linear"


@dataclass
class BuildContext:
    """What the pipeline knows when it builds a method, besides the method's own arguments.

    Args:
        backbone: backbone name from the run config (None lets the method pick its default).
        image_size: side of the square uint8 images the data source yields.
        tokenizer: a ``transformers.PreTrainedTokenizerFast`` for text and pair methods.
        seq_len: token block / caption length.
        batch_size: samples per micro-batch on each process.
        world_size: number of processes (global batch = ``batch_size * world_size``).
        num_samples: training samples per epoch when the source knows it (memory banks need it).
        accumulate: micro-batches per optimizer step.
        device_type: where the run trains ("cpu", "cuda", ...).
    """

    backbone: str | None = None
    image_size: int = 32
    tokenizer: Any = None
    seq_len: int = 128
    batch_size: int = 256
    world_size: int = 1
    num_samples: int | None = None
    accumulate: int = 1
    device_type: str = "cpu"

    @classmethod
    def from_config(
        cls,
        config: Any,  # noqa: ANN401
        tokenizer: Any = None,  # noqa: ANN401
        world_size: int = 1,
        num_samples: int | None = None,
        device_type: str = "cpu",
    ) -> BuildContext:
        """The context of a :class:`selfsup.config.RunConfig` (and the run's tokenizer)."""
        return cls(
            config.backbone,
            config.image_size,
            tokenizer,
            config.seq_len,
            config.batch_size,
            world_size,
            num_samples,
            config.optim.accumulate,
            device_type,
        )

    @property
    def global_batch(self) -> int:
        """Samples per micro-batch over all processes."""
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch (at least 1), when the data size is known."""
        if not self.num_samples:
            return None
        return max(1, self.num_samples // (self.global_batch * self.accumulate))


class Method(nn.Module):
    """Base class of every self-supervised method.

    Subclasses set ``kind`` ("image", "text" or "pair": the data they consume), ``defaults`` and,
    when they support more than kNN and the linear probe, ``protocols``;
    implement ``build``, ``forward``, ``embed`` and ``export``, and may override ``after_step`` and
    ``param_groups``.
    """

    kind: ClassVar[str] = "image"
    defaults: ClassVar[OptimDefaults] = OptimDefaults()
    # Evaluation protocols the method's encoder supports (``selfsup evaluate --protocol``).
    protocols: ClassVar[tuple[str, ...]] = ("knn", "linear")
    # State that bf16 storage would break (EMA weights whose per-step change is below bf16's
    # resolution, running histograms): such methods refuse precision=bf16-true.
    fp32_state: ClassVar[bool] = False
    # False where converting batch norm to SyncBatchNorm would undo the method (MoCo's
    # shuffling BN needs per-process statistics).
    allows_sync_batchnorm: ClassVar[bool] = True
    # Buffers every process keeps identical itself, from gathered values (a memory bank, a
    # queue): DDP need not send them from rank 0 before every forward (655 MB for InstDisc's
    # ImageNet bank).
    replicated_buffers: ClassVar[tuple[str, ...]] = ()
    # Constructor arguments the pipeline sets from the run config (not user method_args).
    provided_args: ClassVar[frozenset[str]] = frozenset()
    # Text and pair methods: the tokenizer kind trained when the run config names none
    # ("wordpiece", "bpe", "unigram" or "wordlevel"; see selfsup.data.tokenizer).
    tokenizer_kind: ClassVar[str] = "wordpiece"
    # The backbone a run that names none trains (None: the method has no backbone choice);
    # ``backbone_for`` may pick it by image size, and the run's config.yaml records the pick.
    default_backbone: ClassVar[str | None] = None
    # Text encoders: how ``embed`` may pool token states into one vector ("mean", "cls",
    # "last"; see selfsup.backbones.text.pool), the method's default first. Empty: no choice.
    poolings: ClassVar[tuple[str, ...]] = ()
    # State entries that describe the training data rather than learnt weights (word2vec's word
    # counts, its vocabulary): a random-init baseline (``--random-init``) loads them too.
    data_state: ClassVar[tuple[str, ...]] = ()
    # Whether a collapse of the diagnostics' embeddings (``embed`` of the probe samples) is a
    # failure of training: the collapse alarm and ``stop_on_collapse`` (the figures are logged
    # either way).
    collapse_alarm: ClassVar[bool] = True
    # True where the method applies its own plain-SGD step (word2vec's fused path): the engine
    # then calls ``update(batch, lr)`` instead of forward, backward and the optimizer step.
    updates_itself: bool = False

    def update(self, batch: dict[str, Tensor], lr: float) -> dict[str, Tensor]:  # pragma: no cover
        """Apply one SGD step of learning rate ``lr`` on ``batch`` in place and return the
        metrics ``forward`` would (``loss`` first); only where ``updates_itself`` is True."""
        raise NotImplementedError

    _pooling: str | None = None

    @property
    def pooling(self) -> str | None:
        """The pooling ``embed`` and ``encoder_for_finetuning`` use (None: not a choice)."""
        return self._pooling or (self.poolings[0] if self.poolings else None)

    def set_pooling(self, pooling: str) -> None:
        """Pool ``embed``'s features with ``pooling`` from now on (``selfsup evaluate --pooling``)."""
        if pooling not in self.poolings:
            valid = ", ".join(self.poolings) or "none (this method's features are not pooled)"
            raise ValueError(f"pooling {pooling!r} does not apply to this method; valid: {valid}")
        self._pooling = pooling

    @classmethod
    def backbone_for(cls, ctx: BuildContext) -> str | None:
        """The backbone ``build(ctx)`` trains: ``ctx.backbone``, else the method's default."""
        return ctx.backbone or cls.default_backbone

    def recipe(self) -> OptimDefaults:
        """The optimisation recipe of this instance: ``defaults`` unless a method argument
        changes it (word2vec's CBOW trains at twice skip-gram's learning rate)."""
        return type(self).defaults

    @classmethod
    def backbone_choices(cls) -> list[str] | None:
        """Backbone names the method builds, when they are not its kind's registry (vision
        backbones for images, ``selfsup.backbones.text_configs`` for text); [] for none at all."""
        return None

    @classmethod
    def tokenizer_path(cls, method_args: dict[str, Any]) -> str | None:
        """A folder whose tokenizer the run must use (e.g. that of a pretrained encoder the
        method starts from); None: the run trains or loads its own (``tokenizer.*``)."""
        return None

    @classmethod
    def tokenizer_specials(cls, method_args: dict[str, Any]) -> list[str]:
        """Special tokens the method needs beyond its tokenizer kind's own (e.g. T5 sentinels),
        added when the run trains its tokenizer."""
        return []

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> tuple[Any, Any] | None:
        """``(dataset, collate_fn)`` to train on, built from the source's training split, or None
        for the default of the method's kind (images as decoded; text packed into blocks of
        ``seq_len`` tokens; pairs with tokenised captions). Methods whose examples are not plain
        blocks (sentence pairs, span corruption, word windows) override this. A streamed
        dataset must split its input by ``rank`` / ``world_size`` (and by DataLoader worker);
        ``seed`` is the run's, for any order the dataset draws itself."""
        return None

    @classmethod
    def build(cls, ctx: BuildContext, **kwargs: Any) -> Method:
        """Construct the method from the pipeline's context and the user's method arguments."""
        raise NotImplementedError

    @classmethod
    def argument_names(cls) -> list[str]:
        """Names the user may set in ``method_args``: the keyword parameters of ``build`` and,
        when ``build`` takes ``**kwargs``, the constructor's parameters that have a default (one
        without, such as ELECTRA's two configs, is what ``build`` itself makes). Values the
        pipeline provides (tokenizer, backbone, image size) are excluded."""
        reserved = {"self", "cls", "ctx", "tokenizer", "backbone", "image_size", "config"}
        build = inspect.signature(cls.build).parameters
        names = [
            n
            for n, p in build.items()
            if p.kind == p.KEYWORD_ONLY or p.kind == p.POSITIONAL_OR_KEYWORD
        ]
        if any(p.kind == p.VAR_KEYWORD for p in build.values()):
            init = inspect.signature(cls.__init__).parameters.values()
            names += [p.name for p in init if p.default is not p.empty]
        return sorted({n for n in names if n not in reserved} - {"kwargs"} - cls.provided_args)

    @classmethod
    def argument_defaults(cls) -> dict[str, Any]:
        """The defaults of the :meth:`argument_names` that a signature declares: ``build``'s,
        the constructor's or ``model_config``'s, the most derived class's first;
        :data:`inspect.Parameter.empty` for one the user must set. Names no signature declares
        (a text method's ``transformers`` config fields) are left out: the backbone decides."""
        signatures = [
            inspect.signature(getattr(klass, name)).parameters
            for klass in cls.__mro__
            for name in ("build", "__init__", "model_config")
            if name in vars(klass)
        ]
        defaults = {}
        for name in cls.argument_names():
            found = [s[name].default for s in signatures if name in s]
            if found:
                given = [d for d in found if d is not inspect.Parameter.empty]
                defaults[name] = given[0] if given else inspect.Parameter.empty
        return defaults

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> None:
        """Called once after every optimizer step (not per micro-batch)."""

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters the coming optimizer step must leave alone (default: none).

        The engine sets their ``.grad`` to None just before the step, so the optimizer skips
        them entirely: no update, no weight decay, no momentum or Adam moments advanced, as the
        DINO and SwAV reference recipes freeze their last layer and prototypes. A zero gradient
        would not do: AdamW would still count the steps and decay its moments, and the layer's
        first updates after the freeze would be several times too large.
        """
        return []

    def discard_step(self) -> None:
        """Called when the engine skips a step (``nonfinite=skip``): forget what the step's
        forward passes kept for ``after_step`` (buffers are restored by the engine)."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer.

        Default: weights in one group, biases and normalisation parameters (any parameter with
        fewer than two dimensions) in another with ``weight_decay=0`` and ``lars_exclude=True``,
        which LARS reads to skip trust-ratio adaptation (You et al. 2017; SimCLR appendix B.1).
        A group may set ``fixed_lr=True`` to keep its learning rate off the schedule.
        """
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
        return groups

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:  # pragma: no cover
        """Representation used for evaluation: ``(B, D)`` features of the encoder (no heads)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_head(self, features: Tensor) -> Tensor | None:
        """The head the loss acts on (e.g. a projector) applied to ``embed``'s ``(B, D)``
        features, ``(B, D')``, for the collapse diagnostics; None for a method without one (the
        default)."""
        return None

    def report_panels(self, batch: dict[str, Tensor]) -> list[Any]:
        """Method-specific figures for ``selfsup report`` as
        :class:`selfsup.report.panels.Panel` objects, from a batch of (up to 256) evaluation
        samples; none by default."""
        return []

    def export(self, path: Path) -> None:  # pragma: no cover
        """Write the encoder so that it loads without selfsup (safetensors + JSON config)."""
        raise NotImplementedError


def create_method(name: str, ctx: BuildContext, **kwargs: Any) -> Method:
    """Build the method registered as ``name``; unknown names list the valid ones."""
    return METHODS.get(name).build(ctx, **kwargs)
