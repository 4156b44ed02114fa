"""SimCSE through the command line: pretrain on ``lee``, then kNN and fine-tuning on the labelled
``polarity`` sentences, and the export through ``transformers.AutoModel``."""

import importlib.util
import json

import pytest
import torch

from selfsup.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None, reason="gensim ships the lee and polarity corpora"
)


def test_simcse_pretrain_then_knn_and_finetune_on_polarity(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--method", "simcse", "--data", "lee", "--backbone", "bert-tiny",
            "--batch-size", "8", "--out", str(run), "--budget", "3steps", "--seed", "0",
            "num_workers=0", "progress=false", "log_every=1", "seq_len=32",
            "tokenizer.vocab_size=400", "method_args.hidden_size=32",
            "method_args.num_attention_heads=2"]  # fmt: skip
    assert main(args) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert all(r["loss"] > 0 and -1 <= r["positive_cos"] <= 1 for r in lines)
    capsys.readouterr()

    knn_args = ["evaluate", str(run), "--protocol", "knn", "--data", "polarity", "--k", "10"]
    assert main(knn_args) == 0
    knn = json.loads(capsys.readouterr().out)
    assert knn["data"] == "polarity" and knn["bank"] == 150 and knn["queries"] == 50
    assert 0 <= knn["top1"] <= 100 and knn["pooling"] == "cls"
    assert main([*knn_args, "--pooling", "mean"]) == 0
    mean = json.loads(capsys.readouterr().out)
    assert mean["pooling"] == "mean" and mean["bank"] == 150
    assert main([*knn_args, "--pooling", "last"]) == 2
    err = capsys.readouterr().err
    assert "--pooling: pooling 'last' does not apply" in err and "valid: cls, mean" in err

    ft = ["evaluate", str(run), "--protocol", "finetune", "--data", "polarity"]
    assert main([*ft, "--arg", "epochs=1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "finetune" and result["epochs"] == 1 and result["steps"] == 10
    assert result["train_size"] == 150 and result["test_size"] == 50 and result["chance"] == 50
    assert 0 <= result["top1"] <= 100
    from selfsup.runs import load_run

    method = load_run(run).method
    encoder = sum(p.numel() for p in method.encoder.parameters())
    assert result["trainable_params"] == encoder + 32 * 2 + 2  # encoder + linear head, no MLP
    records = (run / "results.jsonl").read_text().splitlines()
    assert [json.loads(r)["protocol"] for r in records] == ["knn", "knn", "finetune"]
    assert main([*ft, "--arg", "epoch=1"]) == 2
    assert "Valid: adapter_dim, batch_size" in capsys.readouterr().err

    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(run / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "export")
    enc = tokenizer(["a sentence about the weather"], return_tensors="pt")
    with torch.no_grad():
        cls = model(**enc).last_hidden_state[:, 0]
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    torch.testing.assert_close(cls, method.embed(batch))

    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("simcse", "wiki", "polarity", "finetune"))


def test_simcse_starts_from_a_pretrained_encoder_and_its_tokenizer(tmp_path, capsys):
    """The paper's setting: SimCSE from a masked-LM run's export (a BERT and its tokenizer)."""
    from safetensors.torch import load_file

    from selfsup.runs import load_run

    mlm = tmp_path / "mlm"
    common = ["--data", "lee", "--backbone", "bert-tiny", "--batch-size", "8", "--seed", "0",
              "num_workers=0", "progress=false", "seq_len=32", "precision=32-true"]  # fmt: skip
    assert main(["pretrain", "--method", "mlm", "--out", str(mlm), "--budget", "2steps",
                 *common, "tokenizer.vocab_size=300"]) == 0  # fmt: skip
    run = tmp_path / "simcse"
    assert main(["pretrain", "--method", "simcse", "--out", str(run), "--budget", "1steps",
                 *common, f"method_args.init={mlm / 'export'}", "optim.lr=1e-12",
                 "optim.warmup=0"]) == 0  # fmt: skip
    # the run uses the export's tokenizer, and its encoder starts from the export's weights
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(mlm / "export").get_vocab()
    assert AutoTokenizer.from_pretrained(run / "export").get_vocab() == exported
    start = load_file(mlm / "export" / "model.safetensors")
    trained = load_run(run).method.encoder.bert.state_dict()
    for name in (
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
    ):
        torch.testing.assert_close(trained[name], start[name], atol=1e-6, rtol=0)
    capsys.readouterr()
    assert main(["pretrain", "--method", "simcse", "--out", str(tmp_path / "bad"),
                 "--budget", "1steps", *common, f"method_args.init={tmp_path}"]) == 2  # fmt: skip
    assert "method_args.init: no tokenizer could be read from" in capsys.readouterr().err

    # another architecture, or a BERT missing weights, would train from random weights silently
    import json
    import shutil

    from safetensors.torch import save_file

    other, partial = tmp_path / "other", tmp_path / "partial"
    shutil.copytree(mlm / "export", other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    shutil.copytree(mlm / "export", partial)
    save_file({k: v for k, v in start.items() if "layer.0." not in k},
              str(partial / "model.safetensors"), metadata={"format": "pt"})  # fmt: skip
    for folder, needle in ((other, "holds a 'gpt2' model, not a BERT encoder"),
                           (partial, "lacks ")):  # fmt: skip
        assert main(["pretrain", "--method", "simcse", "--out", str(tmp_path / "bad"),
                     "--budget", "1steps", *common, f"method_args.init={folder}"]) == 2  # fmt: skip
        assert needle in capsys.readouterr().err
