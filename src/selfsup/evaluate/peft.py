"""Parameter-efficient fine-tuning of Transformer encoders: LoRA and bottleneck adapters.

* LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen linear
  map ``W`` becomes ``W x + (alpha / r) B A x`` with ``A (r, in)`` drawn from a Gaussian and
  ``B (out, r)`` zero, so training starts from the pretrained function; only ``A`` and ``B``
  train. The paper gives no scale for ``A``; its authors' code (loralib) draws ``A`` as
  ``nn.Linear`` initialises weights, with standard deviation ``1 / sqrt(3 in)``, which is the
  Gaussian's here. Applied, as in the paper's section 7.1, to the attention's query and value
  projections (``query``/``value`` in BERT-style encoders, ``q``/``v`` in T5); timm ViTs and
  GPT-2 (``c_attn``) fuse query, key and value into one projection, which gets one LoRA pair.
  Defaults r = 8, alpha = 8.
* Adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"): a bottleneck
  ``x + up(GELU(down(x)))`` of width 64 after the attention's output projection and after the
  feed-forward block's output projection in every layer, before the residual sum; the
  up-projection starts near zero (N(0, 1e-3^2)), so each adapter starts near the identity. The
  adapters and the encoder's layer norms train (the paper's section 2.1).

In both, the classifier head trains as well; everything else stays frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PEFT_KINDS = ("full", "lora", "adapter")

# Names (last component) of the linear maps each kind modifies, across timm ViTs and the
# transformers encoders selfsup trains (BERT, RoBERTa, ELECTRA, DeBERTa, ALBERT, T5).
LORA_TARGETS = ("query", "value", "qkv", "q", "v", "query_proj", "value_proj", "in_proj", "c_attn")
ADAPTER_TARGETS = {
    # (parent's last name component or None, own name): attention output, feed-forward output
    ("attn", "proj"),  # timm ViT attention output
    ("mlp", "fc2"),  # timm ViT feed-forward output
    ("output", "dense"),  # BERT family: attention.output.dense and layer.output.dense
    ("attention", "dense"),  # ALBERT attention output
    (None, "ffn_output"),  # ALBERT feed-forward output
    ("SelfAttention", "o"),  # T5 attention output
    ("DenseReluDense", "wo"),  # T5 feed-forward output
    ("attn", "c_proj"),  # GPT-2 attention output
    ("mlp", "c_proj"),  # GPT-2 feed-forward output
}


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) B A``.

    Args:
        base: the pretrained linear map (frozen here).
        rank: r.
        alpha: scaling numerator.
        dropout: dropout on the LoRA branch's input.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        std = 1.0 / math.sqrt(3 * base.in_features)  # loralib's scale (nn.Linear's init)
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) * std)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self) -> Tensor:  # for code that reads the wrapped layer's weight
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """One ``nn.Linear`` computing the same function (for export)."""
        out = nn.Linear(self.base.in_features, self.base.out_features, self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


class Adapter(nn.Module):
    """Houlsby bottleneck adapter: ``x + up(GELU(down(x)))``, near the identity at start."""

    def __init__(self, dim: int, bottleneck: int = 64) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        for layer in (self.down, self.up):
            nn.init.normal_(layer.weight, std=1e-3 if layer is self.up else 0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.gelu(self.down(x)))


class WithAdapter(nn.Module):
    """A (trainable-frozen) linear map followed by an :class:`Adapter` on its output."""

    def __init__(self, base: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.base = base
        self.adapter = Adapter(base.out_features, bottleneck)

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.base(x))


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _linears(encoder: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear maps of ``encoder`` by name; transformers' ``Conv1D`` (GPT-2's linear maps,
    ``x @ W + b`` with ``W (in, out)``) comes as the ``nn.Linear`` computing the same."""
    out = []
    for name, module in encoder.named_modules():
        if type(module) is nn.Linear:
            out.append((name, module))
        elif type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
            w = module.weight  # (in, out)
            linear = nn.Linear(*w.shape, bias=module.bias is not None, device=w.device,
                               dtype=w.dtype)  # fmt: skip
            with torch.no_grad():
                linear.weight.copy_(w.T)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            out.append((name, linear))
    return out


def add_lora(encoder: nn.Module, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0) -> int:
    """Wrap the attention's query/value (or fused qkv) projections of ``encoder`` in LoRA, in
    place; returns how many were wrapped (0: no known attention projections)."""
    targets = [(n, m) for n, m in _linears(encoder) if n.rpartition(".")[2] in LORA_TARGETS]
    for name, module in targets:
        _replace(encoder, name, LoRALinear(module, rank, alpha, dropout))
    return len(targets)


def add_adapters(encoder: nn.Module, bottleneck: int = 64) -> int:
    """Put an adapter after every attention-output and feed-forward-output projection of
    ``encoder``, in place; returns how many were added."""
    targets = []
    for name, module in _linears(encoder):
        parts = name.split(".")
        parent = parts[-2] if len(parts) > 1 else None
        if (parent, parts[-1]) in ADAPTER_TARGETS or (None, parts[-1]) in ADAPTER_TARGETS:
            targets.append((name, module))
    for name, module in targets:
        _replace(encoder, name, WithAdapter(module, bottleneck))
    return len(targets)


def prepare(
    encoder: nn.Module, kind: str, rank: int = 8, alpha: float = 8.0, bottleneck: int = 64
) -> None:
    """Make ``encoder`` ready for fine-tuning of ``kind`` ("full", "lora" or "adapter") in place:
    insert the modules and set ``requires_grad`` (frozen but for LoRA / adapters and, with
    adapters, layer norms).

    Raises:
        ValueError: the encoder has no layer that ``kind`` knows how to adapt (e.g. a ResNet).
    """
    if kind not in PEFT_KINDS:
        raise ValueError(f"fine-tuning kind {kind!r}. Valid: {', '.join(PEFT_KINDS)}")
    if kind == "full":
        for p in encoder.parameters():
            p.requires_grad_(True)
        return
    for p in encoder.parameters():
        p.requires_grad_(False)
    found = add_lora(encoder, rank, alpha) if kind == "lora" else add_adapters(encoder, bottleneck)
    if found == 0:
        raise ValueError(
            f"{kind} needs a Transformer encoder (attention projections to adapt); "
            f"{type(encoder).__name__} has none: use --arg tuning=full"
        )
    for name, p in encoder.named_parameters():
        if kind == "lora" and ("lora_a" in name or "lora_b" in name):
            p.requires_grad_(True)
        if kind == "adapter" and (".adapter." in f".{name}" or _is_norm(encoder, name)):
            p.requires_grad_(True)


def _is_norm(encoder: nn.Module, param_name: str) -> bool:
    module_name = param_name.rpartition(".")[0]
    module = encoder.get_submodule(module_name) if module_name else encoder
    return isinstance(module, nn.LayerNorm | nn.GroupNorm) or "LayerNorm" in type(module).__name__


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
