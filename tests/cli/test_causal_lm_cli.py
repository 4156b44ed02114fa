"""GPT end to end through the command line: pretrain on the built-in ``lee`` corpus, then
evaluate held-out perplexity, then load the export with transformers."""

import json
import math

import pytest
import torch
import yaml

from selfsup.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine, two threads per tiny matmul made each
    step about 30x slower under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_GPT = ["method_args.n_layer=2", "method_args.n_embd=32", "method_args.n_head=2"]


def test_gpt_pretrain_on_lee_then_perplexity(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--method", "gpt", "--data", "lee", "--batch-size", "8", "--budget",
            "4steps", "--seed", "0", "--out", str(run), "num_workers=0", "progress=false",
            "log_every=1", "seq_len=32", "tokenizer.vocab_size=300", *TINY_GPT]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    saved = yaml.safe_load((run / "config.yaml").read_text())  # what the defaults picked
    assert saved["backbone"] == "bert-mini"
    assert saved["tokenizer"] == {"kind": "bpe", "vocab_size": 300, "path": None}
    assert (
        json.loads((run / "tokenizer" / "tokenizer_config.json").read_text())["eos_token"] == "</s>"
    )

    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "perplexity"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "perplexity" and result["data"] == "lee"
    assert result["seq_len"] == 32 and result["tokens"] > 1000 and result["blocks"] > 30
    assert result["perplexity"] == pytest.approx(math.exp(result["nll"]))
    assert 1 < result["perplexity"] < 2 * 300  # barely trained: around the vocabulary size
    assert (run / "results.jsonl").read_text().count("\n") == 1

    assert main(["evaluate", str(run), "--protocol", "mlm"]) == 2  # not a masked LM
    assert "its protocols: perplexity, knn, linear" in capsys.readouterr().err

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "export")
    tokenizer = AutoTokenizer.from_pretrained(run / "export")
    assert model.config.model_type == "gpt2" and model.config.n_layer == 2
    assert model(**tokenizer(["the prime minister"], return_tensors="pt")).logits.shape[-1] >= len(
        tokenizer
    )
