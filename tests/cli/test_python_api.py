"""The README's Python API, as written there: pretrain, evaluate, embed and report."""

import signal

import numpy as np

import selfsup
from selfsup.config import load_config


def test_readme_python_api(tmp_path):
    config = load_config(
        values={
            "method": "simclr",
            "data": "digits",
            "budget": "2steps",  # the README's "2m", shortened
            "batch_size": 16,
            "image_size": 16,
            "precision": "32-true",
            "num_workers": 0,
            "out": str(tmp_path / "run"),
            "method_args": {"proj_hidden_dim": 32, "proj_dim": 16},
        }
    )
    before = signal.getsignal(signal.SIGUSR1)
    run_dir = selfsup.pretrain(config)
    assert signal.getsignal(signal.SIGUSR1) == before  # the caller's handling is restored
    # config.yaml records the backbone the method's default picked; the caller's config is kept
    assert "backbone: resnet18" in (run_dir / "config.yaml").read_text()
    assert config.backbone is None
    # pretraining imported the selfsup.evaluate package, which takes the name of the function
    # selfsup/__init__.py defines: the package is callable as the function
    result = selfsup.evaluate(run_dir, protocol="knn", bank_size=64, query_size=32)
    assert result["protocol"] == "knn" and 0 <= result["top1"] <= 100
    assert selfsup.evaluate.evaluate is not None  # the package's own names are there too
    out = selfsup.embed(run_dir, tmp_path / "emb.npy", limit=8)
    assert np.load(out).shape[0] == 8

    from selfsup.report import report

    assert report(run_dir, samples=32, bank_size=32).is_file()


def test_readme_building_blocks_snippet_runs_as_written():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = readme.split("The building blocks are plain")[1].split("```python")[1]
    scope: dict = {}
    exec(snippet.split("```")[0], scope)  # noqa: S102 - our own README
    assert scope["loss"].ndim == 0 and scope["view1"].shape == (8, 3, 32, 32)
