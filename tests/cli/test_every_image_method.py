"""Every image method runs from the command line: pretrain two steps on tar shards, export, and
evaluate with kNN and the linear probe; and pretrain on every other image source that needs no
files from outside (an image folder, the built-in digits, generated shapes)."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.methods import METHODS
from selfsup.testing import image_folder

COMMON = ["--budget", "2steps", "--seed", "0", "num_workers=0", "progress=false", "log_every=1"]
# (backbone, method_args) per image method: tiny settings that run in about a second.
TINY_CLI = {
    "simclr": ("resnet18", {"proj_hidden_dim": 32, "proj_dim": 8}),
    "moco": ("resnet18", {"queue_size": 32, "proj_hidden_dim": 32, "proj_dim": 8}),
    "mocov3": ("resnet18", {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32}),
    "byol": ("resnet18", {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32}),
    "simsiam": ("resnet18", {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8}),
    "swav": ("resnet18", {"num_prototypes": 8, "proj_hidden_dim": 32, "proj_dim": 8}),
    "dino": ("resnet18", {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 8, "num_local": 2}),
    "barlowtwins": ("resnet18", {"proj_dim": 32}),
    "vicreg": ("resnet18", {"proj_dim": 32}),
    "instdisc": ("resnet18", {"feature_dim": 16, "num_negatives": 8}),
    "mae": ("vit_tiny_patch4", {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}),
    "rotation": ("resnet18", {}),
    "jigsaw": ("resnet18", {"num_permutations": 10, "head_hidden_dim": 16}),
    "relative_patch": ("resnet18", {"head_hidden_dim": 16}),
    "inpainting": ("resnet18", {"decoder_width": 16}),
    "colorization": ("resnet18", {"head_width": 16}),
}
IMAGE_METHODS = sorted(n for n in METHODS.names() if METHODS.get(n).kind == "image")


def test_every_image_method_has_cli_settings():
    assert set(IMAGE_METHODS) == set(TINY_CLI)


def cli_args(name):
    backbone, args = TINY_CLI[name]  # options first: argparse wants the key=value items together
    return ["--backbone", backbone, *COMMON, *(f"method_args.{k}={v}" for k, v in args.items())]


def write_shards(root, n=16, size=16):
    """One train and one test shard of coloured noise with .cls labels."""
    rng = np.random.default_rng(0)
    root.mkdir()
    (root / "classes.txt").write_text("red\ngreen\n")
    for split in ("train", "test"):
        with tarfile.open(root / f"{split}-000000.tar", "w") as tar:
            for i in range(n):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                pixels[..., i % 2] = 220
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data") / "shards")


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_pretrain_and_evaluate(name, shards, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--method", name, "--data", f"shards:{shards}", "--batch-size", "8",
            "--image-size", "16", "--out", str(run), *cli_args(name)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records)
    assert (run / "export" / "model.safetensors").is_file()
    capsys.readouterr()
    for protocol in ("knn", "linear"):
        assert main(["evaluate", str(run), "--protocol", protocol, "--k", "3"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["protocol"] == protocol and 0 <= result["top1"] <= 100


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("data") / "imgs", per_class=8)


@pytest.mark.parametrize("name", IMAGE_METHODS)
@pytest.mark.parametrize("source", ["folder", "digits", "shapes"])
def test_pretrain_on_every_other_image_source(name, source, folder, tmp_path, capsys):
    data = {"folder": f"folder:{folder}", "digits": "digits", "shapes": "shapes:32"}[source]
    run = tmp_path / "run"
    args = ["pretrain", "--method", name, "--data", data, "--batch-size", "8",
            "--image-size", "16", "--out", str(run), *cli_args(name)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
