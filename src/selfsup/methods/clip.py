"""CLIP: contrastive language-image pretraining.

Radford, Kim, Hallacy, et al. "Learning Transferable Visual Models From Natural Language
Supervision". ICML 2021. https://arxiv.org/abs/2103.00020

An image tower and a text tower are projected linearly into one embedding space, L2-normalised,
and trained with a symmetric cross entropy over the in-batch image-text similarity matrix
(figure 3). The temperature is learned as a log-parameterised logit scale initialised to
1 / 0.07 and clamped so the scale never exceeds 100 (section 2.5).

Paper defaults: AdamW with decoupled weight decay 0.2 on non-gain/bias weights, betas
(0.9, 0.98), eps 1e-6, cosine schedule; the only augmentation is a random square crop. We do not
augment by default because the built-in captions describe positions ("left of", "above"), which
crops and flips would falsify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from selfsup.backbones import create_vision_backbone
from selfsup.backbones.text import TextEncoder, save_pretrained
from selfsup.backbones.text_configs import build_text_config
from selfsup.data.tokenizer import save_tokenizer
from selfsup.losses import ClipLoss
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method
from selfsup.views import EvalTransform


@register_method("clip", "CLIP (Radford et al. 2021): image and text towers, symmetric InfoNCE")
class CLIP(Method):
    """CLIP on image-caption pairs.

    Batches: ``{"image": uint8 (B, 3, S, S), "input_ids": (B, L), "attention_mask": (B, L)}``.

    Args:
        tokenizer: the run's ``PreTrainedTokenizerFast`` (saved with the run and the export).
        backbone: image tower name.
        text_backbone: text tower size (see ``selfsup list``).
        image_size: side S of the images.
        max_len: longest caption in tokens (the run's ``seq_len``).
        embed_dim: shared embedding dimension.
        init_temperature: initial softmax temperature (scale 1 / 0.07).
    """

    kind = "pair"
    default_backbone = "resnet18"  # the image tower (method_args.text_backbone: the text one)
    protocols = ("knn", "linear", "zeroshot", "retrieval")
    provided_args = frozenset({"max_len"})
    defaults = OptimDefaults(
        optimizer="adamw", lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6
    )

    def __init__(
        self,
        tokenizer: Any,
        backbone: str = "resnet18",
        text_backbone: str = "bert-mini",
        image_size: int = 32,
        max_len: int = 32,
        embed_dim: int = 256,
        init_temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.image_encoder = create_vision_backbone(backbone, image_size=image_size)
        config = build_text_config(
            text_backbone,
            vocab_size=len(tokenizer),
            max_position_embeddings=max_len,
            # the pad row gets no gradient: it must be the tokenizer's pad, not BPE's <s> at 0
            pad_token_id=tokenizer.pad_token_id,
        )
        self.text_encoder = TextEncoder(config)
        self.image_proj = nn.Linear(self.image_encoder.dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_encoder.dim, embed_dim, bias=False)
        self.criterion = ClipLoss(init_temperature)
        self.preprocess = EvalTransform(image_size)
        self.max_len = max_len

    @classmethod
    def build(cls, ctx: BuildContext, **kwargs: Any) -> CLIP:
        if ctx.tokenizer is None:
            raise ValueError("clip needs a tokenizer; the pipeline trains one on the captions")
        # One caption length for the collate, the position embeddings and zero-shot prompts.
        kwargs["max_len"] = ctx.seq_len
        return cls(
            ctx.tokenizer, backbone=cls.backbone_for(ctx), image_size=ctx.image_size, **kwargs
        )

    def encode_image(self, images: Tensor) -> Tensor:
        """images: uint8 (B, 3, S, S) -> unnormalised embeddings (B, embed_dim)."""
        return self.image_proj(self.image_encoder(self.preprocess(images)))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask: (B, L) -> unnormalised embeddings (B, embed_dim)."""
        return self.text_proj(self.text_encoder(input_ids, attention_mask))

    def encode_image_batch(self, batch: dict[str, Tensor]) -> Tensor:
        return self.encode_image(batch["image"])

    def encode_text_batch(self, batch: dict[str, Tensor]) -> Tensor:
        return self.encode_text(batch["input_ids"], batch["attention_mask"])

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        )
        return {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
        }

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image = self.encode_image(batch["image"])
        text = self.encode_text(batch["input_ids"], batch["attention_mask"])
        loss = self.criterion(image, text)
        return {"loss": loss, "logit_scale": self.criterion.log_scale.detach().exp()}

    def after_step(self, step: int, total_steps: int) -> None:
        self.criterion.clamp_()

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.image_encoder(self.preprocess(batch["image"]))

    def export(self, path: Path) -> None:
        """Writes ``image/`` (timm), ``text/`` (transformers + tokenizer) and the projections."""
        self.image_encoder.export(path / "image", self.preprocess.mean, self.preprocess.std)
        save_pretrained(self.text_encoder.bert, path / "text")
        save_tokenizer(self.tokenizer, path / "text")
        heads = {
            "image_proj.weight": self.image_proj.weight.detach().cpu().contiguous(),
            "text_proj.weight": self.text_proj.weight.detach().cpu().contiguous(),
            "log_scale": self.criterion.log_scale.detach().cpu().reshape(1),
        }
        save_file(heads, str(path / "projections.safetensors"))
        info = {
            "format": "clip",
            "image": "image/",
            "text": "text/",
            "text_pooling": self.text_encoder.pooling,
        }
        (path / "config.json").write_text(json.dumps(info, indent=2))
