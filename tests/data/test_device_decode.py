"""JPEGs decoded with their batch on the device (torchvision's decoder; here its CPU one) give the
images PIL gives, and a file the device cannot decode is decoded, or named, as on the CPU path."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

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

CPU = torch.device("cpu")


def _picture(height: int, width: int, seed: int) -> Image.Image:
    """A smooth colour gradient (JPEG and resizing change it little) with a seed-dependent tint."""
    y, x = np.mgrid[0:height, 0:width]
    tint = np.random.default_rng(seed).integers(0, 120, 3)
    pixels = np.stack([x * 200 / width, y * 200 / height, (x + y) * 100 / (width + height)], -1)
    return Image.fromarray((pixels + tint).clip(0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation  # EXIF Orientation
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


@pytest.fixture
def mixed_folder(tmp_path):
    """train/a: JPEGs of several shapes (one rotated by EXIF), a greyscale JPEG, a CMYK JPEG and a
    PNG; train/b: one more JPEG."""
    a, b = tmp_path / "train" / "a", tmp_path / "train" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    (a / "0.jpg").write_bytes(_jpeg(_picture(40, 60, 0)))
    (a / "1.jpg").write_bytes(_jpeg(_picture(50, 30, 1), orientation=6))  # shown rotated 90
    (a / "2.jpg").write_bytes(_jpeg(_picture(32, 32, 2).convert("L")))
    (a / "3.jpg").write_bytes(_jpeg(_picture(36, 48, 3).convert("CMYK")))
    _picture(24, 24, 4).save(a / "4.png")
    (b / "5.jpg").write_bytes(_jpeg(_picture(64, 80, 5)))
    return tmp_path


def test_device_decoded_cache_matches_pil(mixed_folder):
    source = build_source(f"folder:{mixed_folder}", image_size=16)
    on_device = decoded_cache(source.train, source.num_samples, 16, workers=0, device=CPU)
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


def test_a_jpeg_the_device_fails_on_is_named_or_recorded(tmp_path):
    good = _jpeg(_picture(200, 200, 0))  # large enough that half of it holds the whole header
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "0.jpg").write_bytes(good)
    (folder / "1.jpg").write_bytes(good[: len(good) // 2])  # a valid header, then truncated
    (folder / "2.jpg").write_bytes(good)
    source = build_source(f"folder:{tmp_path}", image_size=16)
    with pytest.raises(DataError, match=r"1\.jpg"):
        decoded_cache(source.train, source.num_samples, 16, workers=0, device=CPU)

    set_fault_log(source.train, FaultLog(tmp_path / "faults.jsonl"))
    cache = decoded_cache(source.train, source.num_samples, 16, workers=0, device=CPU)
    assert len(cache) == 2
    faults = read_faults(tmp_path / "faults.jsonl")
    assert len(faults) == 1 and "1.jpg" in faults[0]


def test_decode_on_device_keeps_decoded_samples_in_place():
    decoded = torch.full((3, 8, 8), 7, dtype=torch.uint8)
    encoded = EncodedJPEG(
        torch.frombuffer(bytearray(_jpeg(_picture(8, 8, 0))), dtype=torch.uint8), "x"
    )
    images, kept, errors = decode_on_device([decoded, encoded, decoded], 8, CPU)
    assert images.shape == (3, 3, 8, 8) and kept == [0, 1, 2] and errors == []
    assert torch.equal(images[0], decoded) and torch.equal(images[2], decoded)


def test_shard_jpegs_decode_on_the_device(tmp_path, make_tar):
    members = []
    for i in range(5):
        members += [(f"{i:03d}.jpg", _jpeg(_picture(30, 40, i))), (f"{i:03d}.cls", b"%d" % i)]
    make_tar(tmp_path / "train-0000.tar", members)
    source = build_source(f"shards:{tmp_path}", image_size=12)
    on_device = decoded_cache(source.train, None, 12, workers=0, device=CPU)
    on_cpu = decoded_cache(source.train, None, 12, workers=0)
    assert sorted(on_device.labels.tolist()) == sorted(on_cpu.labels.tolist()) == list(range(5))
    by_label = on_device.labels.argsort(), on_cpu.labels.argsort()  # the shards stream shuffled
    difference = on_device.images[by_label[0]].float() - on_cpu.images[by_label[1]].float()
    assert difference.abs().mean() < 4


def test_the_decoding_device_follows_the_accelerator():
    assert jpeg_decode_device("cpu") is None
    assert jpeg_decode_device("cuda", "ddp_fork") is None
    if not torch.cuda.is_available():
        assert jpeg_decode_device("auto") is None
    with pytest.raises(ConfigError, match="decode_device"):
        RunConfig(decode_device="gpu").validate()
