"""Pooling token states into one vector per text, and choosing it at evaluation time."""

import pytest
import torch

from selfsup.backbones.text import pool


def test_pool_mean_cls_last_on_right_padded_rows():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])
    torch.testing.assert_close(
        pool(hidden, mask, "last"), torch.stack([hidden[0, 2], hidden[1, 1]])
    )
    mean = torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)])
    torch.testing.assert_close(pool(hidden, mask, "mean"), mean)
    with pytest.raises(ValueError, match="valid: mean, cls, last"):
        pool(hidden, mask, "max")


def test_method_pooling_choices_reach_embed():
    from transformers import GPT2Config

    from selfsup.methods.causal_lm import CausalLM

    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    tokenizer = type(
        "Tok", (), {"eos_token_id": 0, "sep_token_id": None, "__len__": lambda s: 50}
    )()
    method = CausalLM(config, tokenizer).eval()
    assert method.pooling == "mean"
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": mask}
    hidden = method.model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    method.set_pooling("last")
    torch.testing.assert_close(method.embed(batch), torch.stack([hidden[0, 5], hidden[1, 2]]))
    torch.testing.assert_close(method.encoder_for_finetuning()(ids, mask), method.embed(batch))
    with pytest.raises(ValueError, match="valid: mean, last"):
        method.set_pooling("cls")
