"""LoRA and adapters: where they go, what trains, the starting function, and image fine-tuning."""

import pytest
import timm
import torch
from torch import nn

from selfsup.config import ConfigError
from selfsup.evaluate.peft import Adapter, LoRALinear, count_parameters, prepare
from selfsup.evaluate.protocols.finetune import FinetuneSettings, finetune_images, flip_and_crop


def tiny_vit():
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, num_classes=0
    ).eval()


def test_lora_is_the_base_map_plus_a_scaled_low_rank_update():
    base = nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(lora(x), base(x))  # B = 0: the pretrained function at start
    with torch.no_grad():
        lora.lora_b.normal_()
    expected = x @ (base.weight + 2.0 * lora.lora_b @ lora.lora_a).T + base.bias
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected)
    assert not base.weight.requires_grad


def test_adapter_starts_near_the_identity():
    adapter = Adapter(32, bottleneck=8)
    x = torch.randn(4, 32)
    assert (adapter(x) - x).abs().max() < 1e-3


@pytest.mark.parametrize(("kind", "wrapped"), [("lora", "LoRALinear"), ("adapter", "WithAdapter")])
def test_vit_gets_peft_in_every_block_and_only_it_trains(kind, wrapped):
    vit = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    before = vit(x)
    prepare(vit, kind)
    names = [type(m).__name__ for m in vit.modules()]
    assert names.count(wrapped) == (2 if kind == "lora" else 4)  # qkv / attn.proj + mlp.fc2
    torch.testing.assert_close(vit(x), before, atol=2e-2, rtol=0)  # (near) the same function
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    if kind == "lora":
        assert trainable and all("lora_" in n for n in trainable)
    else:
        assert all(".adapter." in n or "norm" in n for n in trainable)
        assert any("norm" in n for n in trainable)
    small, total = count_parameters(vit)
    assert 0 < small < total / 5


def test_bert_lora_targets_query_and_value(tiny_tokenizer):
    from selfsup.backbones.text import TextEncoder
    from selfsup.backbones.text_configs import build_text_config

    config = build_text_config("bert-tiny", len(tiny_tokenizer), 32, hidden_size=32,
                               num_attention_heads=2, intermediate_size=64)  # fmt: skip
    encoder = TextEncoder(config, "mean")
    prepare(encoder, "lora")
    wrapped = [n for n, m in encoder.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped and all(n.endswith(("query", "value")) for n in wrapped)
    prepare(TextEncoder(config, "mean"), "adapter")  # attention.output.dense, output.dense


def test_lora_a_has_the_authors_scale():
    lora = LoRALinear(nn.Linear(768, 768), rank=8)  # loralib: nn.Linear's init, 1 / sqrt(3 in)
    assert lora.lora_a.std().item() == pytest.approx((3 * 768) ** -0.5, rel=0.05)


@pytest.mark.parametrize(("kind", "count"), [("lora", 2), ("adapter", 4)])
def test_gpt2_conv1d_layers_take_lora_and_adapters(kind, count):
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    gpt = GPT2Model(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16))
    gpt.eval()
    ids = torch.randint(0, 50, (2, 8))
    before = gpt(ids).last_hidden_state
    prepare(gpt, kind)  # c_attn (fused qkv) / attn.c_proj and mlp.c_proj, as nn.Linear
    wrapped = [
        n for n, m in gpt.named_modules() if type(m).__name__ in ("LoRALinear", "WithAdapter")
    ]
    assert len(wrapped) == count and all(n.endswith(("c_attn", "c_proj")) for n in wrapped)
    torch.testing.assert_close(gpt(ids).last_hidden_state, before, atol=2e-2, rtol=0)
    if kind == "lora":  # exactly the pretrained function while B = 0
        torch.testing.assert_close(gpt(ids).last_hidden_state, before, atol=1e-5, rtol=1e-5)


def test_resnet_refuses_lora_with_a_clear_message():
    resnet = timm.create_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="lora needs a Transformer encoder.*tuning=full"):
        prepare(resnet, "lora")


def test_flip_and_crop_keeps_shape_and_content_size():
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    out = flip_and_crop(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_image_finetuning_full_lora_and_adapter_record_parameter_counts():
    from selfsup.methods.image import ImageEncoder
    from selfsup.views import EvalTransform

    vit = tiny_vit()

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.dim = vit, vit.num_features

        def forward(self, x):
            return self.model(x)

    encoder = ImageEncoder(EvalTransform(16), Backbone())
    g = torch.Generator().manual_seed(0)

    def sample(i):
        colour = torch.tensor([220, 20, 20] if i % 2 else [20, 20, 220], dtype=torch.uint8)
        noise = torch.randint(0, 30, (3, 16, 16), generator=g, dtype=torch.uint8)
        return {"image": colour.view(3, 1, 1) + noise, "label": i % 2}

    train, test = [sample(i) for i in range(32)], [sample(i) for i in range(12)]
    results = {}
    for tuning in ("full", "lora", "adapter"):
        settings = FinetuneSettings(epochs=3, batch_size=8, tuning=tuning)
        results[tuning] = finetune_images(encoder, train, test, 2, settings, seed=0)
    assert results["full"]["trainable_params"] == results["full"]["total_params"]
    for tuning in ("lora", "adapter"):
        r = results[tuning]
        assert r["trainable_params"] < r["total_params"] / 5 and r["lr"] == 1e-3
        assert r["tuning"] == tuning and r["top1"] >= 75.0
    assert "lora_rank" in results["lora"] and "adapter_dim" not in results["lora"]
    assert results["full"]["top1"] >= 75.0 and results["full"]["lr"] == 1e-4
    with pytest.raises(ConfigError, match="tuning='prefix'"):
        FinetuneSettings.from_options({"tuning": "prefix"})
