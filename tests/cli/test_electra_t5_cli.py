"""ELECTRA and T5 span corruption end to end through the command line on the built-in ``lee``."""

import json

import pytest
from transformers import AutoModel, AutoTokenizer

from selfsup.cli import main

COMMON = ["--data", "lee", "--backbone", "bert-tiny", "--batch-size", "4", "--budget", "2steps",
          "--seed", "0", "num_workers=0", "progress=false", "log_every=1",
          "tokenizer.vocab_size=400"]  # fmt: skip
RUNS = {
    "electra": (["seq_len=32", "method_args.hidden_size=64", "method_args.num_attention_heads=2"],
                {"mlm_loss", "rtd_loss", "gen_acc", "disc_acc", "replaced"}, "ElectraModel"),
    # wordpiece: training the default unigram tokenizer on lee takes ~5 s here; the unigram
    # path with sentinels is covered by tests/methods/test_t5.py and the registry smoke test
    "t5": (["seq_len=24", "method_args.num_sentinels=8", "method_args.d_model=64",
            "tokenizer.kind=wordpiece"],
           {"target_acc"}, "T5Model"),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(RUNS))
def test_pretrain_and_export(method, tmp_path):
    args, logged, exported = RUNS[method]
    run = tmp_path / "run"
    assert main(["pretrain", "--method", method, "--out", str(run), *COMMON, *args]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(logged <= set(r) and r["loss"] > 0 for r in records)
    model = AutoModel.from_pretrained(run / "export")
    assert type(model).__name__ == exported and model.config.hidden_size == 64
    tokenizer = AutoTokenizer.from_pretrained(run / "export")
    if method == "t5":  # the run's tokenizer was trained with the sentinels
        assert tokenizer.convert_tokens_to_ids("<extra_id_7>") != tokenizer.unk_token_id
        assert "<extra_id_8>" not in tokenizer.get_vocab()
        enc = tokenizer(["the prime minister"], return_tensors="pt", return_token_type_ids=False)
        hidden = model.encoder(**enc).last_hidden_state
    else:
        hidden = model(**tokenizer(["the prime minister"], return_tensors="pt")).last_hidden_state
    assert hidden.shape[-1] == 64
