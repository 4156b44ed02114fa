"""End to end through the command line: bert, roberta and albert on the built-in ``lee`` corpus,
then the mlm and pseudo_perplexity protocols and the exported encoder."""

import json

import pytest
import torch

from selfsup.cli import main

COMMON = ["--budget", "2steps", "--seed", "0", "num_workers=0", "progress=false", "log_every=1"]
HELD_OUT = (
    "The minister said on day {} that the fires had spread towards Sydney. Police were ready."
)
PAIR_METRIC = {"bert": "nsp_acc", "roberta": None, "albert": "sop_acc"}


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_pretrain_evaluate_and_export_on_lee(name, tmp_path, capsys):
    pytest.importorskip("gensim")  # the lee corpus ships with gensim
    run = tmp_path / "run"
    args = ["pretrain", "--method", name, "--data", "lee", "--backbone", "bert-tiny",
            "--batch-size", "4", "--out", str(run), *COMMON, "seq_len=32",
            "tokenizer.vocab_size=300"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*records)
    assert "mlm_acc" in logged
    if PAIR_METRIC[name]:
        assert PAIR_METRIC[name] in logged
    capsys.readouterr()

    # a small held-out text keeps the protocols quick (lee's test split would take seconds)
    held_out = tmp_path / "eval.txt"
    held_out.write_text("\n".join(HELD_OUT.format(i) for i in range(40)))
    data = ["--data", f"text:{held_out}", "--batch-size", "64"]
    assert main(["evaluate", str(run), "--protocol", "mlm", *data]) == 0
    masked = json.loads(capsys.readouterr().out)
    assert 0 <= masked["masked_token_acc"] <= 100 and "pooling" not in masked  # nothing pooled
    pppl = ["evaluate", str(run), "--protocol", "pseudo_perplexity", "--arg", "max_tokens=40"]
    assert main([*pppl, *data]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["scored_tokens"] == 40 and 1 < result["pseudo_perplexity"] < 10 * 300
    assert "40 of 40 tokens scored" in captured.err  # its progress, on stderr

    from transformers import AutoModel, AutoTokenizer

    from selfsup.runs import load_run

    model = AutoModel.from_pretrained(run / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "export")
    enc = tokenizer(["The prime minister said on Sunday."], return_tensors="pt")
    method = load_run(run).method
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"]).last_hidden_state
        expected = method.encoder(input_ids=enc["input_ids"]).last_hidden_state
    assert hidden.shape[-1] == 128
    torch.testing.assert_close(hidden, expected)
