"""One end-to-end run through the command line per data kind, on tiny data."""

import json

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.testing import image_folder

COMMON = ["--budget", "3steps", "--seed", "0", "num_workers=0", "progress=false", "log_every=1"]


def test_image_folder_pretrain_evaluate_embed_export(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    args = ["pretrain", "--method", "simclr", "--data", f"folder:{data}", "--batch-size", "4",
            "--image-size", "16", "--out", str(run), *COMMON,
            "method_args.proj_hidden_dim=32", "method_args.proj_dim=8"]  # fmt: skip
    assert main(args) == 0
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "export", "tensorboard"} <= {
        p.name for p in run.iterdir()
    }
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all("loss" in r and "lr" in r for r in lines)
    assert json.loads((run / "summary.json").read_text())["steps"] == 3

    capsys.readouterr()
    assert (
        main(["evaluate", str(run), "--protocol", "knn", "--k", "3", "--temperature", "0.5"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["k"] == 3 and result["temperature"] == 0.5 and 0 <= result["top1"] <= 100
    assert (run / "results.jsonl").read_text().count("\n") == 1
    assert main(["evaluate", str(run), "--protocol", "knn", "--k", "1000"]) == 0
    result = json.loads(capsys.readouterr().out)  # every sample of the bank votes
    assert result["k"] == result["bank"] < 1000
    assert main(["evaluate", str(run), "--protocol", "linear"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "linear" and 0 <= result["top1"] <= 100 and result["penalty"] > 0
    assert (run / "results.jsonl").read_text().count("\n") == 3
    assert main(["evaluate", str(run), "--protocol", "zeroshot"]) == 2  # not for an image method
    assert "its protocols: knn, linear" in capsys.readouterr().err

    # --bank-size / --query-size draw from the whole split: the folder lists class 0 first
    assert main(["evaluate", str(run), "--bank-size", "6", "--query-size", "6"]) == 0
    capsys.readouterr()

    def last_result():  # with its confusion matrix, which the terminal does not show
        return json.loads((run / "results.jsonl").read_text().splitlines()[-1])

    result = last_result()
    assert (result["bank"], result["queries"]) == (6, 6)
    assert all(sum(row) > 0 for row in result["confusion"])  # queries of both classes
    # the feature cache notices a changed folder
    (data / "test" / "class1" / "0.png").rename(data / "test" / "class0" / "new.png")
    assert main(["evaluate", str(run), "--bank-size", "6"]) == 0
    assert [sum(row) for row in last_result()["confusion"]] == [7, 5]
    (data / "test" / "class0" / "new.png").rename(data / "test" / "class1" / "0.png")
    # values that cannot work are refused before any work, in one line
    for bad in (["--k", "0"], ["--temperature", "0"], ["--query-size", "0"],
                ["--data", "lee"]):  # fmt: skip
        assert main(["evaluate", str(run), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("selfsup: error:") and "Traceback" not in err, err
    assert "a simclr run reads image or pair data, but 'lee' is text data" in err
    assert main(["embed", str(run), "--data", "lee", "--out", str(tmp_path / "x")]) == 2
    if not torch.cuda.is_available():
        assert main(["evaluate", str(run), "--device", "cuda"]) == 2
        assert "no GPU" in capsys.readouterr().err

    out = tmp_path / "emb.npy"
    assert main(["embed", str(run), "--out", str(out), "--split", "test"]) == 0
    labels = tmp_path / "emb.labels.npy"
    wrote = f"wrote 12 embeddings of 512 dimensions to {out} and its labels to {labels}"
    assert capsys.readouterr().out.strip() == wrote
    assert main(["embed", str(run), "--out", str(tmp_path / "emb2"), "--limit", "2"]) == 0
    assert f"to {tmp_path / 'emb2.npy'} " in capsys.readouterr().out  # what np.save wrote
    emb = np.load(out)
    assert (
        emb.shape == (12, 512)
        and np.load(tmp_path / "emb.labels.npy").tolist() == [0] * 6 + [1] * 6
    )

    # The README's snippet: the encoder rebuilt with timm + safetensors alone, and images of
    # any size prepared as selfsup decodes them.
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = readme.split("# vision: timm + safetensors")[1].split("# text: transformers")[0]
    snippet = snippet.split("\n", 1)[1]  # after the comment's line
    scope: dict = {}
    exec(snippet.replace("runs/simclr-c10/export", str(run / "export")), scope)  # noqa: S102
    from selfsup.data.decode import square
    from selfsup.runs import load_run

    image = torch.randint(0, 256, (3, 24, 40), dtype=torch.uint8)  # not square, not 16 px
    with torch.no_grad():
        theirs = scope["model"](scope["prepare"](image)[None])
        ours = load_run(run).method.embed({"image": square(image, 16)[None]})
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)

    # The exported encoder rebuilds with timm + safetensors alone, following its config.json.
    import timm
    from safetensors.torch import load_file

    config = json.loads((run / "export" / "config.json").read_text())
    model = timm.create_model(config["model_name"], pretrained=False, **config["model_kwargs"])
    if config["cifar_stem"]:
        model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.load_state_dict(load_file(run / "export" / "model.safetensors"))
    model.eval()
    from selfsup.runs import load_run

    method = load_run(run).method
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model((x / 255 - mean) / std), method.embed({"image": x}), atol=1e-5)


def test_text_pretrain_mlm_evaluate_and_export(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    lines = [
        f"document {i} talks about cats and dogs and the weather in town number {i % 7}"
        for i in range(200)
    ]
    corpus.write_text("\n".join(lines))
    run = tmp_path / "run"
    args = ["pretrain", "--method", "mlm", "--data", f"text:{corpus}", "--backbone", "bert-tiny",
            "--batch-size", "4", "--out", str(run), *COMMON, "seq_len=16", "tokenizer.vocab_size=300"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "mlm"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["masked_token_acc"] <= 100

    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(run / "export")
    tokenizer = AutoTokenizer.from_pretrained(run / "export")
    enc = tokenizer(["cats and dogs"], return_tensors="pt")
    assert model(**enc).last_hidden_state.shape[-1] == 128
    # the exported tokenizer truncates where embed does (seq_len=16), as the README shows
    long = tokenizer([" ".join(["cats"] * 50)], truncation=True, return_tensors="pt")
    assert tokenizer.model_max_length == 16 and long["input_ids"].shape == (1, 16)


def test_a_corpus_short_of_one_batch_is_refused_before_the_run_starts(tmp_path, capsys):
    # packed text has no known length: its start is read before the run directory is written
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"cats and dogs number {i}" for i in range(40)))
    run = tmp_path / "run"
    args = ["pretrain", "--method", "mlm", "--data", f"text:{corpus}", "--backbone", "bert-tiny",
            "--batch-size", "64", "--out", str(run), *COMMON, "seq_len=16",
            "tokenizer.vocab_size=100"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "batch_size 64:" in err and "has only " in err and "blocks of seq_len=16 tokens" in err
    assert "lower batch_size or seq_len" in err and "Traceback" not in err
    assert not run.exists()


def test_a_binary_file_among_text_files_is_skipped_from_the_tokenizer_on(tmp_path, caplog):
    # the tokenizer's training texts are read before the run: the file was an error there
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text("\n".join(f"cats and dogs number {i}" for i in range(200)))
    (folder / "zz.txt").write_bytes(b"\x00\x01binary" * 100)
    run = tmp_path / "run"
    args = ["pretrain", "--method", "mlm", "--data", f"text:{folder}", "--backbone", "bert-tiny",
            "--batch-size", "4", "--out", str(run), *COMMON, "seq_len=16",
            "tokenizer.vocab_size=100"]  # fmt: skip
    assert main(args) == 0
    assert "zz.txt is binary" in (run / "faults.jsonl").read_text()
    assert "skipped while reading the data before training" in caplog.text


def test_a_run_that_saved_no_checkpoint_is_started_again_with_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: simclr\n")  # a run stopped before step 1 was saved
    data = image_folder(tmp_path / "imgs")
    args = ["pretrain", "--method", "simclr", "--data", f"folder:{data}", "--batch-size", "4",
            "--image-size", "16", "--out", str(run), *COMMON]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "saved no checkpoint; pass --overwrite" in err and "--resume" not in err


def test_pairs_clip_zeroshot_and_retrieval(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    args = ["pretrain", "--method", "clip", "--data", "shapes:64", "--batch-size", "8",
            "--image-size", "16", "--out", str(run), *COMMON, "seq_len=24",
            "method_args.text_backbone=bert-tiny", "method_args.embed_dim=16"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "zeroshot", "--query-size", "60"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["chance"] == pytest.approx(100 / 30) and "heldout_top1" in result
    assert main(["evaluate", str(run), "--protocol", "retrieval", "--query-size", "40"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@10"} <= set(result)
    assert main(["evaluate", str(run), "--protocol", "retrieval", "--query-size", "8"]) == 0
    assert "retrieval over 8 pairs only" in caplog.text  # R@10 of 8 pairs says nothing
    capsys.readouterr()
    assert {"image", "text", "projections.safetensors"} <= {
        p.name for p in (run / "export").iterdir()
    }
    # the image tower on labelled images without captions: zero-shot and kNN
    for protocol in ("zeroshot", "knn"):
        args = ["evaluate", str(run), "--protocol", protocol, "--data", "digits", "--query-size",
                "50", "--bank-size", "100"]  # fmt: skip
        assert main(args) == 0
        result = json.loads(capsys.readouterr().out)
        assert 0 <= result["top1"] <= 100
    assert main(["evaluate", str(run), "--protocol", "retrieval", "--data", "digits"]) == 2
    assert "retrieval: a clip run reads pair data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "simclrr", "--data", "digits"], "simclr"),
        (["--method", "simclr", "--data", "digitz"], "digits"),
        (["--method", "simclr", "--data", "folder:/no/such/path"], "/no/such/path"),
        (["--method", "simclr", "--data", "digits", "--backbone", "resnet17"], "resnet18"),
        (["--method", "clip", "--data", "digits"], "pair"),
        (["--method", "simclr", "--data", "digits", "method_args.temprature=0.2"], "temperature"),
        (["--method", "simclr", "--data", "digits", "optim.lrr=0.2"], "optim.lr"),
        (
            ["--method", "simclr", "--data", "digits", "method_args.temperature=abc"],
            "method_args.temperature of method SimCLR must be float",
        ),
        (["--method", "simclr", "--data", "digits", "method_args.proj_dim=-3"], "proj_dim=-3"),
        # values out of range are refused when the method is built, not at its first step
        (["--method", "mlm", "--data", "lee", "--backbone", "bert-tiny",
          "method_args.mlm_probability=1.5"], "mlm_probability must be in (0, 1], got 1.5"),
        (["--method", "mlm", "--data", "lee", "--backbone", "bert-tiny",
          "method_args.mlm_probability=0"], "mlm_probability must be in (0, 1], got 0"),
        (["--method", "clip", "--data", "shapes", "method_args.init_temperature=-1"],
         "init_temperature must be > 0"),
        (["--method", "mae", "--data", "digits", "--backbone", "vit_tiny_patch4",
          "method_args.mask_ratio=1.5"], "mask_ratio must be in [0, 1)"),
        (["--method", "swav", "--data", "digits", "method_args.epsilon=0"], "epsilon > 0"),
        (["--method", "word2vec", "--data", "lee", "stop_on_collapse=true"],
         "word2vec has no collapse alarm"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_message(tmp_path, capsys, args, needle):
    code = main(["pretrain", *args, "--out", str(tmp_path / "run"), "--budget", "1steps"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("selfsup: error:") and needle in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()  # nothing written


def test_list_shows_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "simclr",
        "mlm",
        "clip",
        "resnet18",
        "bert-mini",
        "digits",
        "shapes",
        "lee",
        "shards",
    ):
        assert name in out


def test_corrupt_image_in_a_worker_is_skipped_or_stops_the_run_naming_it(tmp_path, capsys,
                                                                           caplog):  # fmt: skip
    data = image_folder(tmp_path / "imgs")
    bad = data / "train" / "class0" / "3.png"
    bad.write_bytes(b"this is not a png")
    args = ["pretrain", "--method", "simclr", "--data", f"folder:{data}", "--batch-size", "4",
            "--image-size", "16", "--budget", "3steps", "num_workers=1", "progress=false",
            "method_args.proj_hidden_dim=16", "decode_cache=off"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 0  # skipped, counted, listed
    assert str(bad) in (tmp_path / "run" / "faults.jsonl").read_text()
    # evaluating the run skips it too, and says so
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="selfsup"):
        assert main(["evaluate", str(tmp_path / "run"), "--k", "3"]) == 0
        assert json.loads(capsys.readouterr().out)["bank"] == 11
        assert main(["embed", str(tmp_path / "run"), "--split", "train", "--out",
                     str(tmp_path / "emb.npy")]) == 0  # fmt: skip
    assert np.load(tmp_path / "emb.npy").shape[0] == 11
    assert caplog.text.count(f"skipped an unreadable sample: cannot decode image {bad}") == 2
    capsys.readouterr()
    code = main([*args, "--out", str(tmp_path / "strict"), "max_bad_fraction=0"])
    err = capsys.readouterr().err
    assert code == 3 and str(bad) in err and "Traceback" not in err
    # Decoded once before training (the cache), the same file stops the run before it starts.
    code = main([*args, "--out", str(tmp_path / "cached"), "max_bad_fraction=0",
                 "decode_cache=on"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "cached").exists()


def test_a_relative_data_path_is_found_from_another_folder(tmp_path, monkeypatch, capsys):
    image_folder(tmp_path / "project" / "imgs")
    monkeypatch.chdir(tmp_path / "project")
    args = ["pretrain", "--method", "simclr", "--data", "folder:imgs", "--batch-size", "4",
            "--image-size", "16", "--out", "run", *COMMON, "method_args.proj_hidden_dim=32",
            "method_args.proj_dim=8", "--budget", "1steps"]  # fmt: skip
    assert main(args) == 0
    monkeypatch.chdir(tmp_path)  # elsewhere: imgs/ is not here
    capsys.readouterr()
    assert main(["evaluate", "project/run", "--k", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["data"].endswith("project/imgs")


def test_a_missing_or_foreign_run_directory_is_named(tmp_path, capsys):
    for command in (["evaluate"], ["report"], ["compare", "--out", str(tmp_path / "c.html")]):
        assert main([*command, str(tmp_path / "nope")]) == 2
        assert (
            capsys.readouterr().err.strip() == f"selfsup: error: {tmp_path / 'nope'} does not exist"
        )
        assert main([*command, str(tmp_path)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"selfsup: error: {tmp_path} is not a run directory (no config.yaml)"
        )
