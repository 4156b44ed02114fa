import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.decode import decode_image, to_square_rgb
from selfsup.data.source import DataError


def test_resize_shorter_side_then_centre_crop(tmp_path):
    # 64x32: red outer quarters, green middle half. Shorter side 32 -> 16 gives 32x16; the
    # centre 16 columns come from the green middle.
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :16] = array[:, 48:] = (255, 0, 0)
    array[:, 16:48] = (0, 255, 0)
    path = tmp_path / "wide.png"
    Image.fromarray(array).save(path)
    out = decode_image(path, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert out[1].min() >= 200 and out[0].max() <= 60


def test_upscales_small_images(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (5, 3), (0, 0, 255)).save(path)
    out = decode_image(path, 24)
    assert out.shape == (3, 24, 24)
    assert out[2].float().mean() > 250


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1"])
def test_modes_become_rgb(mode):
    image = Image.new("RGB", (10, 10), (0, 0, 255)).convert(mode)
    out = to_square_rgb(image, 8)
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    # Opaque images: the result is PIL's own RGB conversion of the pixel.
    expected = torch.tensor(image.convert("RGB").getpixel((0, 0)), dtype=torch.uint8)
    assert torch.equal(out[:, 0, 0], expected)


def test_transparent_pixels_composite_over_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    out = to_square_rgb(image, 8)
    assert out.min() == 255


def test_16_bit_grey_is_rescaled_not_clipped(tmp_path):
    array = np.full((8, 8), 32768, np.uint16)
    array[0, :] = 65535
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    out = decode_image(path, 8)
    assert 120 <= int(out[0, 4, 4]) <= 135  # mid-grey; PIL's plain convert would give 255
    assert int(out[0, 0, 4]) == 255


def test_exif_orientation_applied(tmp_path):
    # Stored 40x20 with red left half and blue right half; orientation 6 = rotate 90 deg
    # clockwise for display, which puts red on top.
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    out = decode_image(path, 16).int()
    top, bottom = out[:, 2, 8], out[:, 13, 8]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_empty_file_names_it(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg.*empty"):
        decode_image(path, 8)


def test_garbage_file_names_it(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="cannot decode image .*garbage.png"):
        decode_image(path, 8)


def test_garbage_bytes_use_given_name():
    with pytest.raises(DataError, match="shard-3:key7.jpg"):
        decode_image(b"\xff\xd8 nope", 8, name="shard-3:key7.jpg")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="nothere.png"):
        decode_image(tmp_path / "nothere.png", 8)


@pytest.mark.parametrize(("mode", "key"), [("L", 0), ("RGB", (0, 0, 0))])
def test_single_colour_png_transparency_composites_over_white(tmp_path, mode, key):
    path = tmp_path / "t.png"
    Image.new(mode, (8, 8), key).save(path, transparency=key)  # every pixel is the transparent one
    assert decode_image(path, 8).min() == 255  # as a transparent palette image gives
