"""Resume equivalence: 2k steps in one go == k steps, stop, resume for k more (bitwise, CPU fp32),
for one method of each data kind (image, text, pair), for a method with a queue (MoCo), for
DINO and SwAV, whose last layer / prototypes unfreeze and SwAV's queue starts across the cut, and
for word2vec's compiled kernel, which draws from its own generator."""

import pytest
import torch

from selfsup.config import ConfigError, load_config
from selfsup.data import build_source
from selfsup.data.tokenizer import train_tokenizer
from selfsup.engine.diagnosis import RunDiagnostics
from selfsup.pipeline import pretrain
from selfsup.testing import tar_shards

RUNS = {
    "simclr": {"method": "simclr", "data": "digits", "image_size": 16, "batch_size": 16,
               "method_args": {"proj_hidden_dim": 32, "proj_dim": 8}},
    "mlm": {"method": "mlm", "data": "lee", "backbone": "bert-tiny", "seq_len": 32, "batch_size": 8,
            },
    # a pair method, and a method whose queue of keys must resume exactly
    "clip": {"method": "clip", "data": "shapes:64", "image_size": 16, "batch_size": 8,
             "seq_len": 16, "method_args": {"text_backbone": "bert-tiny", "embed_dim": 16}},
    "moco": {"method": "moco", "data": "digits", "image_size": 16, "batch_size": 8,
             "method_args": {"queue_size": 32, "proj_hidden_dim": 32, "proj_dim": 8}},
    # the crash comes in step 3: the frozen layer starts training and the queue is used there
    "dino": {"method": "dino", "data": "digits", "image_size": 16, "batch_size": 8,
             "backbone": "resnet18", "precision": "32-true",
             "method_args": {"hidden_dim": 32, "bottleneck_dim": 16, "out_dim": 64,
                             "num_local": 2, "freeze_last_layer_steps": 2}},
    "swav": {"method": "swav", "data": "digits", "image_size": 16, "batch_size": 8,
             "method_args": {"proj_hidden_dim": 32, "proj_dim": 8, "num_prototypes": 16,
                             "num_local": 2, "queue_length": 16, "queue_start_step": 1,
                             "freeze_prototypes_steps": 2}},
    # the compiled kernel: its draws come from a generator seeded from torch's at every step
    "word2vec": {"method": "word2vec", "data": "lee", "seq_len": 100, "batch_size": 2,
                 "method_args": {"dim": 16, "min_count": 2}},
}  # fmt: skip


def config(name, out, steps, tokenizer=None):
    extra = {"tokenizer": {"path": str(tokenizer)}} if tokenizer else {}
    values = {**RUNS[name], **extra, "budget": f"{steps}steps", "out": str(out), "num_workers": 0,
              "checkpoint_every": 2, "log_every": 1, "progress": False}  # fmt: skip
    return load_config(values=values)


def weights(run_dir):
    state = torch.load(
        sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "state.pt", weights_only=True
    )
    return state["method"], state["optimizer"]


@pytest.mark.parametrize("name", list(RUNS))
def test_resume_matches_uninterrupted(name, tmp_path, monkeypatch, tiny_tokenizer):
    # Both runs share one saved tokenizer: the Unigram trainer is only nearly deterministic
    # (see selfsup.data.tokenizer._canonical_ids), and one training is enough.
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tok = tmp_path / "tok" if name in ("mlm", "clip") else None
    if name == "word2vec":
        tok = tmp_path / "words"
        train_tokenizer([s["text"] for s in build_source("lee").train], kind="wordlevel",
                        vocab_size=20_000).save_pretrained(tok)  # fmt: skip
    pretrain(config(name, tmp_path / "full", 4, tok))

    original = RunDiagnostics.at

    class Crash(Exception):
        pass

    def crash_after_two(self, step):
        if step == 3:  # the checkpoint of step 2 is written; die in the middle of step 3
            raise Crash
        return original(self, step)

    monkeypatch.setattr(RunDiagnostics, "at", crash_after_two)
    with pytest.raises(Crash):
        pretrain(config(name, tmp_path / "cut", 4, tok))
    monkeypatch.setattr(RunDiagnostics, "at", original)
    pretrain(config(name, tmp_path / "cut", 4, tok), resume=tmp_path / "cut")

    full, full_opt = weights(tmp_path / "full")
    cut, cut_opt = weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    for key in full:
        assert torch.equal(full[key], cut[key]), f"{key} differs after resume"
    assert full_opt["state"].keys() == cut_opt["state"].keys()


def test_existing_run_is_not_overwritten(tmp_path):
    pretrain(config("simclr", tmp_path / "run", 1))
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(config("simclr", tmp_path / "run", 1))


def test_a_finished_run_resumes_to_nothing_without_reading_its_data(tmp_path, monkeypatch, caplog):
    import shutil

    import selfsup.pipeline

    run = tmp_path / "run"
    pretrain(config("simclr", run, 2))

    def unread(*args, **kwargs):
        raise AssertionError("the data was read")

    with monkeypatch.context() as patched:
        patched.setattr(selfsup.pipeline, "build_source", unread)
        assert pretrain(config("simclr", run, 2), resume=run) == run
    assert "is finished: a budget of 2 steps is spent" in caplog.text
    shutil.rmtree(run / "export")  # e.g. a full disk stopped its export: resuming writes it
    pretrain(config("simclr", run, 2), resume=run)
    assert (run / "export" / "model.safetensors").is_file()


def test_a_stream_resumes_only_with_its_number_of_workers(tmp_path):
    # decode_cache=off: the shards are streamed, in an order that depends on the workers
    shard_dir = tar_shards(tmp_path / "shards", shards=3, per_shard=8, label=1)

    def shards(workers, steps=2):
        values = {**RUNS["simclr"], "data": f"shards:{shard_dir}", "image_size": 8,
                  "batch_size": 4, "decode_cache": "off", "num_workers": workers,
                  "budget": f"{steps}steps", "out": str(tmp_path / "run"), "progress": False}  # fmt: skip
        return load_config(values=values)

    pretrain(shards(workers=1))
    with pytest.raises(ConfigError, match="saved with num_workers=1: resume with that"):
        pretrain(shards(workers=2, steps=4), resume=tmp_path / "run")
    pretrain(shards(workers=0, steps=3), resume=tmp_path / "run")  # 0 and 1: the same order


def test_overwrite_deletes_only_a_run(tmp_path):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="holds files but no run"):
        pretrain(config("simclr", precious, 1), overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    pretrain(config("simclr", tmp_path / "run", 1))
    pretrain(config("simclr", tmp_path / "run", 1), overwrite=True)  # a run: replaced


def test_refused_resumes_leave_the_run_resumable(tmp_path):
    import json

    run = tmp_path / "run"
    pretrain(config("simclr", run, 2))
    saved_config = (run / "config.yaml").read_text()
    ckpt = run / "checkpoints" / "step-00000002"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["world_size"] == 1
    (ckpt / "meta.json").write_text(json.dumps({**meta, "world_size": 2}))
    with pytest.raises(ConfigError, match="written by 2 processes"):
        pretrain(config("simclr", run, 4), resume=run)
    assert (run / "config.yaml").read_text() == saved_config  # checked before any write
    (ckpt / "meta.json").write_text(json.dumps(meta))
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="does not fit this run"):
        pretrain(config("simclr", run, 4), resume=run)


def test_summary_counts_epochs_and_resume_reads_past_a_torn_metrics_line(tmp_path):
    import json

    shard_dir = tar_shards(
        tmp_path / "shards", shards=3, per_shard=8, label=1
    )  # 24 samples: 6 batches of 4 per epoch
    values = {**RUNS["simclr"], "data": f"shards:{shard_dir}", "image_size": 8, "batch_size": 4,
              "out": str(tmp_path / "run"), "progress": False, "log_every": 1}  # fmt: skip
    pretrain(load_config(values={**values, "budget": "1epochs"}))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["epochs"] == 1.0
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a crash in the middle of a write
    (tmp_path / "run" / "checkpoints" / ".tmp-step-00000007-x").mkdir()  # a save killed
    pretrain(load_config(values={**values, "budget": "2epochs"}), resume=tmp_path / "run")
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == list(range(1, 13))
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_overwrite_trains_a_new_tokenizer(tmp_path):
    # the replaced run's tokenizer is not the new run's, whose config may ask another one
    def mlm(vocab):
        values = {**RUNS["mlm"], "budget": "1steps", "out": str(tmp_path / "run"),
                  "num_workers": 0, "progress": False, "tokenizer": {"vocab_size": vocab}}  # fmt: skip
        return load_config(values=values)

    from selfsup.data.tokenizer import load_tokenizer

    pretrain(mlm(300))
    assert len(load_tokenizer(tmp_path / "run" / "tokenizer")) <= 300
    pretrain(mlm(600), overwrite=True)
    assert 300 < len(load_tokenizer(tmp_path / "run" / "tokenizer")) <= 600
