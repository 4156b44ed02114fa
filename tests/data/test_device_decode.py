"""JPEGs decoded with their batch on the device (torchvision's decoder; here its CPU one) give the
images PIL gives, and a file the device cannot decode is decoded, or named, as on the CPU path."""

import pytest
import torch

from selfsup.config import ConfigError, RunConfig
from selfsup.data import build_source
from selfsup.data.cache import decoded_cache
from selfsup.data.device_decode import (
    EncodedJPEG,
    decode_on_device,
    jpeg_decode_device,
    read_image,
)
from selfsup.data.faults import FaultLog, read_faults, set_fault_log
from selfsup.data.source import DataError
from selfsup.testing import broken_jpeg, gradient_picture, jpeg_bytes, jpeg_captions, jpeg_folder

CPU = torch.device("cpu")
# torchvision's CPU decoder stands in for the GPU; on a machine with one, nvJPEG is tested too
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


@pytest.fixture
def mixed_folder(tmp_path):
    """train/a: JPEGs of several shapes (one rotated by EXIF), a greyscale JPEG, a CMYK JPEG and a
    PNG; train/b: one more JPEG."""
    a, b = tmp_path / "train" / "a", tmp_path / "train" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    (a / "0.jpg").write_bytes(jpeg_bytes(gradient_picture(40, 60, 0)))
    (a / "1.jpg").write_bytes(
        jpeg_bytes(gradient_picture(50, 30, 1), orientation=6)
    )  # shown rotated 90
    (a / "2.jpg").write_bytes(jpeg_bytes(gradient_picture(32, 32, 2).convert("L")))
    (a / "3.jpg").write_bytes(jpeg_bytes(gradient_picture(36, 48, 3).convert("CMYK")))
    gradient_picture(24, 24, 4).save(a / "4.png")
    (b / "5.jpg").write_bytes(jpeg_bytes(gradient_picture(64, 80, 5)))
    return tmp_path


@pytest.mark.parametrize("device", DEVICES)
def test_device_decoded_cache_matches_pil(mixed_folder, device):
    source = build_source(f"folder:{mixed_folder}", image_size=16)
    on_device = decoded_cache(
        source.train, source.num_samples, 16, workers=0, device=torch.device(device)
    )
    assert source.train.defer_jpeg is False  # restored for the epochs that follow
    assert len(on_device) == len(source.train) == 6
    for i in range(len(on_device)):
        expected = source.train[i]  # PIL
        got = on_device[i]
        assert got["label"] == expected["label"] and got["image"].shape == (3, 16, 16)
        difference = (got["image"].float() - expected["image"].float()).abs().mean()
        assert difference < 4, f"image {i}: mean difference {difference:.1f} levels"


def test_only_jpegs_the_device_decodes_stay_encoded(mixed_folder):
    folder = mixed_folder / "train" / "a"
    kinds = [
        read_image(folder / f, 16, defer_jpeg=True)
        for f in sorted(p.name for p in folder.iterdir())
    ]
    assert [isinstance(k, EncodedJPEG) for k in kinds] == [True, True, True, False, False]
    assert kinds[0].name.endswith("0.jpg")
    assert isinstance(read_image(folder / "0.jpg", 16), torch.Tensor)  # not asked to defer


@pytest.mark.parametrize("device", DEVICES)
def test_a_jpeg_the_device_fails_on_is_named_or_recorded(tmp_path, device):
    good = jpeg_bytes(
        gradient_picture(200, 200, 0)
    )  # large enough that half of it holds the whole header
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "0.jpg").write_bytes(good)
    (folder / "1.jpg").write_bytes(broken_jpeg(good))  # a valid header, then broken
    (folder / "2.jpg").write_bytes(good)
    source = build_source(f"folder:{tmp_path}", image_size=16)
    with pytest.raises(DataError, match=r"1\.jpg"):
        decoded_cache(source.train, source.num_samples, 16, workers=0, device=torch.device(device))
    assert source.train.defer_jpeg is False  # restored after the error too

    set_fault_log(source.train, FaultLog(tmp_path / "faults.jsonl"))
    cache = decoded_cache(
        source.train, source.num_samples, 16, workers=0, device=torch.device(device)
    )
    assert len(cache) == 2
    faults = read_faults(tmp_path / "faults.jsonl")
    assert len(faults) == 1 and "1.jpg" in faults[0]


def test_decode_on_device_keeps_decoded_samples_in_place():
    decoded = torch.full((3, 8, 8), 7, dtype=torch.uint8)
    encoded = EncodedJPEG(
        torch.frombuffer(bytearray(jpeg_bytes(gradient_picture(8, 8, 0))), dtype=torch.uint8), "x"
    )
    images, kept, errors = decode_on_device([decoded, encoded, decoded], 8, CPU)
    assert images.shape == (3, 3, 8, 8) and kept == [0, 1, 2] and errors == []
    assert torch.equal(images[0], decoded) and torch.equal(images[2], decoded)


def test_shard_jpegs_decode_on_the_device(tmp_path, make_tar):
    members = []
    for i in range(5):
        members += [
            (f"{i:03d}.jpg", jpeg_bytes(gradient_picture(30, 40, i))),
            (f"{i:03d}.cls", b"%d" % i),
        ]
    make_tar(tmp_path / "train-0000.tar", members)
    source = build_source(f"shards:{tmp_path}", image_size=12)
    on_device = decoded_cache(source.train, None, 12, workers=0, device=CPU)
    on_cpu = decoded_cache(source.train, None, 12, workers=0)
    assert sorted(on_device.labels.tolist()) == sorted(on_cpu.labels.tolist()) == list(range(5))
    by_label = on_device.labels.argsort(), on_cpu.labels.argsort()  # the shards stream shuffled
    difference = on_device.images[by_label[0]].float() - on_cpu.images[by_label[1]].float()
    assert difference.abs().mean() < 4


def test_a_truncated_jpeg_is_left_to_pil():
    # nvJPEG may fill in the rows of a file cut short; PIL names its fault
    from selfsup.data.device_decode import _device_header

    good = jpeg_bytes(gradient_picture(200, 200, 0))
    assert _device_header(good) == 1 and _device_header(good + b"\0\0") == 1
    assert _device_header(good[: len(good) // 2]) is None


def test_the_decoding_gpu_is_the_local_process_one(monkeypatch):
    # the cache is decoded before Fabric sets each process's device: torchrun's LOCAL_RANK,
    # srun's SLURM_LOCALID, modulo the GPUs this process sees (srun --gpus-per-task=1 shows one)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert jpeg_decode_device("auto") == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert jpeg_decode_device("cuda") == torch.device("cuda", 5)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert jpeg_decode_device("cuda") == torch.device("cuda", 0)


def test_the_decoding_device_follows_the_accelerator():
    assert jpeg_decode_device("cpu") is None
    assert jpeg_decode_device("cuda", "ddp_fork") is None
    if not torch.cuda.is_available():
        assert jpeg_decode_device("auto") is None
    with pytest.raises(ConfigError, match="decode_device"):
        RunConfig(decode_device="gpu").validate()


def test_epoch_loader_finishes_batches_on_the_device_and_replaces_a_bad_sample(tmp_path):
    from selfsup.data.device_decode import DeferredCollate, DeviceDecoder
    from selfsup.data.faults import FaultCounter
    from selfsup.engine.loader import EpochLoader

    source = build_source(f"folder:{jpeg_folder(tmp_path, bad=2)}", image_size=16)
    dataset = source.train
    dataset.defer_jpeg = True
    finish = DeviceDecoder(16, CPU, faults=lambda: dataset.faults)
    loader = EpochLoader(dataset, 6, collate_fn=DeferredCollate(), finish=finish, shuffle=False)
    with pytest.raises(DataError, match=r"class0/2\.jpg"):  # no fault sink: the file is named
        list(loader.epoch(0))
    dataset.faults = FaultCounter()
    batches = list(loader.epoch(0))
    assert [b["image"].shape for b in batches] == [(6, 3, 16, 16)] * 2  # the batch size holds
    assert batches[0]["label"].tolist() == [0] * 6 and batches[1]["label"].tolist() == [1] * 6
    assert 2 not in batches[0]["index"].tolist()  # replaced by a sample that decoded
    assert len(dataset.faults.errors) == 1 and "2.jpg" in dataset.faults.errors[0]


@pytest.fixture
def device_decodes(monkeypatch):
    """Runs decode JPEGs on the CPU as if it were the GPU; the list counts, per call, the JPEGs
    that reached the device decoder."""
    import selfsup.data.cache
    import selfsup.data.device_decode as device_decode
    import selfsup.run_data

    monkeypatch.setattr(selfsup.run_data, "jpeg_decode_device", lambda *args: CPU)
    decoded, original = [], device_decode.decode_on_device

    def counted(images, size, device):
        decoded.append(sum(isinstance(image, EncodedJPEG) for image in images))
        return original(images, size, device)

    monkeypatch.setattr(device_decode, "decode_on_device", counted)
    monkeypatch.setattr(selfsup.data.cache, "decode_on_device", counted)
    return decoded


@pytest.mark.parametrize("decode_cache", ["off", "on"])
def test_a_run_decodes_jpegs_on_the_device(tmp_path, device_decodes, decode_cache):
    """A run as on a GPU, the device stood in for by the CPU: it trains and lists the bad file."""
    from selfsup.cli import main

    data = jpeg_folder(tmp_path / "imgs", bad=3)
    args = ["pretrain", "--method", "simclr", "--data", f"folder:{data}", "--batch-size", "4",
            "--image-size", "16", "--budget", "3steps", "num_workers=1", "progress=false",
            "method_args.proj_hidden_dim=16", f"decode_cache={decode_cache}",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    assert (
        sum(device_decodes) == 12
    )  # every JPEG read went to the "device": once, or in 3 batches of 4
    assert (
        str(data / "train" / "class0" / "3.jpg") in (tmp_path / "run" / "faults.jsonl").read_text()
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_applies_it(orientation, device):
    """torchvision applies EXIF orientation on the CPU only: the device path applies it itself."""
    data = jpeg_bytes(gradient_picture(40, 64, 0), orientation=orientation)
    encoded = read_image(data, 24, defer_jpeg=True)
    assert isinstance(encoded, EncodedJPEG) and encoded.orientation == orientation
    on_device = decode_on_device([encoded], 24, torch.device(device))[0][0].cpu()
    with_pil = read_image(data, 24)
    difference = (on_device.float() - with_pil.float()).abs().mean()
    assert difference < 4, f"orientation {orientation}: mean difference {difference:.1f} levels"


def test_caption_pairs_decode_on_the_device(tmp_path, device_decodes):
    """CLIP's batches (images with tokenised captions) through the deferred path: the captions
    stay with their images when a corrupt JPEG's place is taken by another sample."""
    from selfsup.cli import main

    pairs = jpeg_captions(tmp_path, bad=4)  # 12 training pairs: one epoch in the 2 steps
    run = tmp_path / "run"
    args = ["pretrain", "--method", "clip", "--data", f"captions:{pairs}",
            "--batch-size", "6", "--image-size", "16", "--budget", "2steps", "--out", str(run),
            "num_workers=1", "progress=false", "decode_cache=off", "seq_len=12",
            "method_args.text_backbone=bert-tiny", "method_args.embed_dim=16"]  # fmt: skip
    assert main(args) == 0
    assert sum(device_decodes) == 12  # 2 steps of 6 JPEGs, decoded on the "device"
    assert "4.jpg" in (run / "faults.jsonl").read_text()


def test_the_replacement_keeps_every_field_of_a_sample_together():
    """A failed sample's place is taken by another whole sample: image, label, tokens, text."""
    from selfsup.data.device_decode import DeviceDecoder
    from selfsup.data.faults import FaultCounter

    good = [jpeg_bytes(gradient_picture(20, 20, i)) for i in range(3)]
    bad = good[1][: len(good[1]) // 2]
    images = [EncodedJPEG(torch.frombuffer(bytearray(d), dtype=torch.uint8), f"{i}.jpg")
              for i, d in enumerate([good[0], bad, good[2]])]  # fmt: skip
    batch = {
        "image": images,
        "label": torch.tensor([10, 11, 12]),
        "input_ids": torch.tensor([[1, 10], [1, 11], [1, 12]]),
        "text": ["zero", "one", "two"],
    }
    sink = FaultCounter()
    out = DeviceDecoder(8, CPU, faults=lambda: sink)(batch)
    assert (
        out["image"].shape == (3, 3, 8, 8) and len(sink.errors) == 1 and "1.jpg" in sink.errors[0]
    )
    taken = out["label"][1].item() - 10  # the sample in the failed one's place
    assert taken in (0, 2)
    assert out["input_ids"][1].tolist() == [1, 10 + taken]
    assert out["text"][1] == ["zero", "one", "two"][taken]
    assert torch.equal(out["image"][1], out["image"][taken])
