"""Text backbones: exports write safetensors quietly and load with transformers alone."""

from transformers import AutoModel, BertConfig, BertModel
from transformers.utils import logging as hf_logging

from selfsup.backbones.text import save_pretrained


def test_save_pretrained_is_quiet_and_restores_the_progress_bar(tmp_path, capfd):
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=16)  # fmt: skip
    model = BertModel(config)
    hf_logging.enable_progress_bar()
    save_pretrained(model, tmp_path / "m")
    assert "Writing model shards" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = AutoModel.from_pretrained(tmp_path / "m")
    assert loaded.config.hidden_size == 8
