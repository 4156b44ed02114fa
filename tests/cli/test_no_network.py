"""Nothing in a run reaches the network: pretraining (image and text, tokenizer training
included), evaluation and export run with every internet connection refused."""

import socket

import pytest

from selfsup.cli import main


@pytest.fixture
def offline(monkeypatch):
    attempts = []
    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"test: network access to {address} refused")
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: attempts.append(a) or [])
    yield attempts


def test_pretrain_evaluate_and_export_never_connect(tmp_path, offline):
    common = ["--budget", "2steps", "num_workers=0", "progress=false", "diagnostics_every=0"]
    image = ["pretrain", "--method", "simclr", "--data", "digits", "--image-size", "16",
             "--batch-size", "8", "--out", str(tmp_path / "img"), *common]  # fmt: skip
    text = ["pretrain", "--method", "mlm", "--data", "lee", "--backbone", "bert-tiny",
            "--seq-len", "32", "--batch-size", "4", "--out", str(tmp_path / "txt"),
            "tokenizer.vocab_size=500", *common]  # fmt: skip
    assert main(image) == 0 and main(text) == 0
    assert main(["evaluate", str(tmp_path / "img"), "--protocol", "knn",
                 "--bank-size", "100", "--query-size", "50"]) == 0  # fmt: skip
    assert (tmp_path / "txt" / "export").is_dir()
    assert offline == []
