"""Decode one image file to a fixed-size uint8 tensor: the only image processing sources do.

Every image, whatever its mode or size, becomes RGB, is rotated by its EXIF orientation, resized
so its shorter side is S and centre-cropped to S x S. Random augmentation happens later, batched on
the device (``selfsup.views``).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from selfsup.data.source import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "decode_image",
    "is_image_file",
    "square",
    "to_square_rgb",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# Largest image decoded (PIL's own default warning limit, about 9,459 x 9,459). PIL only warns
# between this and twice it; a decompression bomb (a small file that decodes to gigabytes) is
# refused here before its pixels are decoded. JPEGs are measured after draft-mode reduction.
MAX_PIXELS = 89_478_485

# Modes holding more than 8 bits per pixel; PIL's convert("RGB") would clip them at 255.
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has an image extension (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _WIDE_MODES:
        # 16-bit (or float) greyscale: rescale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and array.max(initial=0.0) <= 1.0 else 65535.0
        if image.mode == "I" and array.max(initial=0.0) <= 255:
            top = 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array)  # 2-D uint8 -> mode L
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette entry or one grey / RGB value is transparent
    if image.mode == "P":
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent pixels have arbitrary colour; composite over white so they are defined.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, S, S): shorter side resized to S (bicubic, antialiased), centre crop.

    torchvision's uint8 resize, about 6x faster than PIL's bicubic on a 2-core CPU (500 x 375 to
    224 px: 0.34 against 2.0 ms; ``benchmarks/decode.md``), and the same on every device.
    """
    height, width = image.shape[-2:]
    if height == width == size:  # already S x S (CIFAR-sized files at their own size)
        return image.contiguous()
    from torchvision.transforms.v2 import functional as F

    if min(height, width) != size:
        scale = size / min(height, width)
        shape = [max(size, round(height * scale)), max(size, round(width * scale))]
        image = F.resize(image, shape, interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(image, [size, size]).contiguous()


def to_square_rgb(image: Image.Image, size: int) -> torch.Tensor:
    """Convert a PIL image to RGB, apply EXIF orientation, resize shorter side, centre crop.

    Args:
        image: Any PIL image (modes L, RGBA, P, CMYK, I;16, ... are converted to RGB).
        size: Output side S.

    Returns:
        uint8 tensor (3, S, S).
    """
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    array = np.array(image, dtype=np.uint8)  # (H, W, 3), a writable copy
    return square(torch.from_numpy(array).permute(2, 0, 1), size)


def decode_image(
    data: bytes | str | os.PathLike[str], size: int, *, name: str = ""
) -> torch.Tensor:
    """Decode an image file or its bytes to a uint8 tensor of shape (3, S, S).

    Args:
        data: Encoded bytes or a file path.
        size: Output side S.
        name: How to call the image in an error message (defaults to the path).

    Returns:
        uint8 tensor (3, S, S).

    Raises:
        DataError: The file is missing, empty or cannot be decoded; the message names it.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if len(data) == 0:
            raise DataError(f"image {label} is empty (0 bytes)")
        stream: io.BytesIO | str = io.BytesIO(data)
    else:
        path = os.fspath(data)
        label = name or path
        try:
            if os.path.getsize(path) == 0:
                raise DataError(f"image {label} is empty (0 bytes)")
        except OSError as exc:
            raise DataError(f"cannot read image {label}: {exc.strerror or exc}") from exc
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                # JPEG only: let libjpeg decode at a reduced scale that still covers S x S.
                image.draft("RGB", (size, size))
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DataError(
                        f"image {label} is {width} x {height} pixels, more than the "
                        f"{MAX_PIXELS:,} decoded at most (a decompression bomb?)"
                    )
                image.load()
                return to_square_rgb(image, size)
    except DataError:
        raise
    except UnidentifiedImageError as exc:
        raise DataError(
            f"cannot decode image {label}: not an image, or a format PIL cannot read"
        ) from exc
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, zlib.error, ...)
        raise DataError(f"cannot decode image {label}: {exc}") from exc
