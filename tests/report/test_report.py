"""``selfsup report`` and ``selfsup compare``: self-contained pages with every figure inline."""

import json
import re
import shutil
import subprocess

import pytest
import torch

from selfsup.cli import main
from selfsup.testing import image_folder

COMMON = ["--seed", "0", "num_workers=0", "progress=false", "log_every=1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A 4-step SimCLR run on a tiny labelled folder, with online kNN, diagnostics and results."""
    tmp = tmp_path_factory.mktemp("report")
    data = image_folder(tmp / "imgs", per_class=10)
    run = tmp / "run"
    args = ["pretrain", "--method", "simclr", "--data", f"folder:{data}", "--batch-size", "8",
            "--image-size", "16", "--out", str(run), "--budget", "4steps", *COMMON,
            "method_args.proj_hidden_dim=32", "method_args.proj_dim=8", "diagnostics_every=2",
            "diagnostics_samples=16", "knn_every=2", "knn_bank=20", "knn_queries=20"]  # fmt: skip
    assert main(args) == 0
    for protocol in ("knn", "linear"):
        assert main(["evaluate", str(run), "--protocol", protocol, "--k", "5"]) == 0
    assert main(["evaluate", str(run), "--protocol", "knn", "--k", "5", "--random-init"]) == 0
    fewshot = ["--arg", "shots=1,5", "--arg", "seeds=3"]
    assert main(["evaluate", str(run), "--protocol", "fewshot", *fewshot]) == 0
    return run


def images_of(html):
    return re.findall(r'<img src="([^"]*)"', html)


def test_report_is_self_contained_with_every_section(image_run, capsys):
    capsys.readouterr()
    assert main(["report", str(image_run), "--samples", "20", "--queries", "3"]) == 0
    path = image_run / "report.html"
    assert capsys.readouterr().out.strip() == f"wrote {path}"
    html = path.read_text()
    for heading in ("Training", "Evaluation results", "Embeddings of the test split",
                    "2-D map of the embeddings", "Nearest training neighbours"):  # fmt: skip
        assert heading in html
    assert "<th>encoder features</th><th>projector output</th>" in html  # SimCLR has a head
    sources = images_of(html)
    # curves, confusion matrix, spectrum, map, neighbour grid
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    metrics = [json.loads(line) for line in (image_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics if "knn_top1" in r] == [2, 4]
    assert all("head_effective_rank" in r for r in metrics if "effective_rank" in r)


def test_fewshot_is_recorded_with_mean_and_std(image_run):
    lines = (image_run / "results.jsonl").read_text().splitlines()
    (r,) = [json.loads(line) for line in lines if '"fewshot"' in line]
    assert r["shots"] == [1, 5] and r["seeds"] == 3 and r["classifier"] == "centroid"
    assert 0 <= r["1shot_top1"] <= 100 and r["5shot_top1_std"] >= 0 and r["queries"] == 20


def test_linear_and_knn_results_carry_a_confusion_matrix(image_run):
    results = [json.loads(line) for line in (image_run / "results.jsonl").read_text().splitlines()]
    for r in results:
        if r["protocol"] not in ("knn", "linear"):
            continue
        matrix = r["confusion"]
        assert r["classes"] == ["class0", "class1"] and len(matrix) == 2
        assert sum(map(sum, matrix)) == r["queries"]
        correct = matrix[0][0] + matrix[1][1]
        assert 100 * correct / r["queries"] == pytest.approx(r["top1"], abs=1e-3)


def test_image_runs_fine_tune_through_the_cli(image_run, capsys):
    capsys.readouterr()
    args = ["evaluate", str(image_run), "--protocol", "finetune", "--arg", "epochs=1"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tuning"] == "full" and result["trainable_params"] == result["total_params"]
    assert result["train_size"] == 20 and result["test_size"] == 20
    assert main([*args, "--arg", "tuning=lora"]) == 2  # a ResNet has no attention to adapt
    assert "lora needs a Transformer encoder" in capsys.readouterr().err


def test_diagnostics_on_demand(image_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(image_run), "--protocol", "diagnostics"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["split"] == "test" and r["samples"] == 20 and r["dim"] == 512
    assert 1 <= r["effective_rank"] <= 20 and r["collapse"] in ("none", "dimensional", "complete")
    assert 0 <= r["alignment"] <= 4 and -4 <= r["uniformity"] <= 0
    assert "spectrum" not in r  # 64 values: in results.jsonl, off the terminal
    saved = json.loads((image_run / "results.jsonl").read_text().splitlines()[-1])
    assert sum(saved["spectrum"]) <= 1 + 1e-6 and len(saved["spectrum"]) <= 20


def test_frozen_features_are_cached_per_checkpoint_and_survive_a_torn_file(image_run, capsys):
    cache = image_run / "features"
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 4  # train and test, trained and at random init
    capsys.readouterr()
    args = ["evaluate", str(image_run), "--protocol", "knn", "--k", "5"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert sorted(cache.glob("*.safetensors")) == files  # reused, not re-embedded
    for f in files:
        f.write_bytes(b"torn")
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["top1"] == first["top1"] and len(list(cache.glob("*.safetensors"))) == 4
    assert main([*args, "--no-cache", "--bank-size", "7"]) == 0
    assert len(list(cache.glob("*.safetensors"))) == 4


def test_report_without_embeddings_and_of_a_run_without_results(image_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(image_run, bare, ignore=shutil.ignore_patterns("results.jsonl", "report.html"))
    out = tmp_path / "page.html"
    assert main(["report", str(bare), "--out", str(out), "--no-embeddings"]) == 0
    html = out.read_text()
    assert "No results yet" in html and "2-D map" not in html and len(images_of(html)) == 1


def test_compare_puts_runs_side_by_side(image_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(image_run, other)
    out = tmp_path / "compare.html"
    assert main(["compare", str(image_run), str(other), "--out", str(out)]) == 0
    html = out.read_text()
    assert html.count("<td>simclr</td>") == 2
    sizes = re.search(r"knn \(random init\) \[(\d+)/(\d+)\] top1", html).groups()
    # results of other subset sizes or data get their own column
    with open(other / "results.jsonl", "a") as f:
        f.write(json.dumps({"protocol": "knn", "top1": 50.0, "bank": 7, "queries": 3}) + "\n")
        f.write(json.dumps({"protocol": "knn", "data": "lee", "top1": 9.0}) + "\n")
        f.write(json.dumps({"protocol": "mine", "seed": 0, "score": 1.5}) + "\n")
    assert main(["compare", str(image_run), str(other), "--out", str(out)]) == 0
    html = out.read_text()
    assert "mine score</th>" in html  # a column names the figure it shows
    assert f"knn [{sizes[0]}/{sizes[1]}] top1" in html and "knn [7/3] top1" in html
    assert "knn on lee top1" in html and len(images_of(html)) == 1
    assert main(["compare", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "nothing does not exist" in capsys.readouterr().err


def test_text_neighbours_are_sentences():
    from selfsup.report.embeddings import Embedded, neighbour_section

    shown = Embedded(torch.eye(2), torch.tensor([0, 1]), None, ["a cat sat", "stocks fell"])
    bank = Embedded(torch.eye(2)[[1, 0]], torch.tensor([1, 0]), None, ["markets <down>", "dogs"])
    html = neighbour_section(shown, bank, 2, ["pets", "money"])
    assert "[pets] a cat sat</td><td>[pets] dogs" in html and "&lt;down&gt;" in html


def test_mae_and_swav_panels():
    from selfsup.methods.mae import MAE
    from selfsup.methods.swav import SwAV

    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    mae = MAE(backbone="vit_tiny_patch4", image_size=32).eval()
    (panel,) = mae.report_panels({"image": images})
    assert list(panel.rows) == ["masked", "reconstruction", "original"]
    assert all(
        r.shape == (8, 3, 32, 32) and 0 <= r.min() and r.max() <= 1 for r in panel.rows.values()
    )
    swav = SwAV(backbone="resnet18", image_size=32, num_prototypes=30, proj_hidden_dim=32).eval()
    (panel,) = swav.report_panels({"image": images})
    assert panel.kind == "bars" and panel.values.shape == (30,) and panel.values.sum() == 10


def test_cls_attention_equals_timm_attention_weights():
    import timm

    from selfsup.report.attention import cls_attention

    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0
    ).eval()
    last = model.blocks[-1].attn
    last.fused_attn = False  # timm then materialises the softmax weights
    seen = []
    last.attn_drop.register_forward_hook(lambda m, i, out: seen.append(out))
    x = torch.randn(2, 3, 32, 32)
    maps = cls_attention(model, x)
    reference = seen[-1][:, :, 0, model.num_prefix_tokens :].mean(dim=1).reshape(2, 1, 4, 4)
    reference = torch.nn.functional.interpolate(reference, size=(32, 32), mode="bilinear")[:, 0]
    low = reference.flatten(1).min(1).values[:, None, None]
    high = reference.flatten(1).max(1).values[:, None, None]
    assert maps.shape == (2, 32, 32)
    assert torch.allclose(maps, (reference - low) / (high - low), atol=1e-4)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package chromium) absent")
def test_report_renders_in_chromium_with_every_image_loaded(image_run, tmp_path):
    """Open the page in headless Chromium and count the images that decoded."""
    main(["report", str(image_run), "--out", str(tmp_path / "r.html"), "--samples", "20"])
    html = (tmp_path / "r.html").read_text()
    expected = len(images_of(html))
    probe = (
        "<script>window.addEventListener('load', () => {"
        "const imgs = [...document.images];"
        "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
        "document.body.insertAdjacentHTML('beforeend',"
        ' `<div id="imgcheck">${ok}/${imgs.length}</div>`); });</script>'
    )
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", probe + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<div id="imgcheck">(\d+)/(\d+)</div>', dom)
    assert found, dom[-2000:]
    assert (int(found[1]), int(found[2])) == (expected, expected)


def test_text_run_report_shows_neighbouring_sentences(tmp_path):
    run = tmp_path / "mlm"
    args = ["pretrain", "--method", "mlm", "--data", "polarity", "--backbone", "bert-tiny",
            "--batch-size", "8", "--out", str(run), "--budget", "2steps", *COMMON, "seq_len=32",
            "tokenizer.vocab_size=500"]  # fmt: skip
    assert main(args) == 0
    assert main(["report", str(run), "--samples", "60", "--bank-size", "60"]) == 0
    html = (run / "report.html").read_text()
    assert "Nearest training neighbours of 6 test samples" in html
    assert html.count("<tr><td>[pos]") + html.count("<tr><td>[neg]") == 6


def test_compare_headlines_every_protocol_and_dollar_signs_are_text():
    import numpy as np

    from selfsup.report import plots
    from selfsup.report.compare import headline

    assert headline({"protocol": "knn", "k": 20.0, "top1": 50.0}) == "top1"
    assert headline({"protocol": "perplexity", "perplexity": 30.0, "nll": 3.4}) == "perplexity"
    assert headline({"protocol": "wordsim", "seed": 0, "wordsim353_spearman": 0.2}) == (
        "wordsim353_spearman"
    )
    analogy = {"protocol": "analogy", "semantic_accuracy": 0.3, "total_accuracy": 0.03}
    assert headline(analogy) == "total_accuracy"  # not the first figure, the semantic one
    assert headline({"protocol": "mine", "seed": 0, "score": 1.5}) == "score"  # a registered one
    assert plots.confusion(np.eye(2, dtype=int), ["cost $_$ sign", "b"])  # no mathtext error
