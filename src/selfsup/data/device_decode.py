"""Decode JPEGs on the training device: torchvision's batched decoder (nvJPEG on a GPU).

On a GPU (``decode_device: auto``), whether the images are decoded once into memory
(``selfsup.data.cache``) or in every epoch, the decoding workers only read each file and check
its header. A JPEG that the device can decode (RGB or greyscale, not a decompression bomb)
travels as its encoded bytes, an :class:`EncodedJPEG`, and is decoded with its batch on the
device, turned by its EXIF orientation (:func:`orient`), resized so its shorter side is S and
centre-cropped (:func:`~selfsup.data.decode.square`), as
:func:`~selfsup.data.decode.decode_image` does. Every other file (PNG, CMYK JPEG, ...) is decoded
by the workers as always. An image the device fails on is decoded again by PIL, so a corrupt file
gets the same message, naming it, as on the CPU path.

The same code runs on the CPU with torchvision's CPU decoder (how the tests check it); the PIL
path stays the CPU default because its draft mode decodes large JPEGs at a reduced scale
(``benchmarks/decode.md``). torchvision 0.29 deprecates its image decoders in favour of
TorchCodec's; they are still the ones every torchvision from 0.19 (torch 2.4) has, so selfsup uses
them and silences the notice.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

from selfsup.data.decode import MAX_PIXELS, decode_image, square
from selfsup.data.source import DataError

__all__ = [
    "DeferredCollate",
    "DeviceDecoder",
    "EncodedJPEG",
    "decode_on_device",
    "jpeg_decode_device",
    "read_image",
]

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"  # the end-of-image marker
_ORIENTATION = 0x0112  # the EXIF tag


@dataclasses.dataclass
class EncodedJPEG:
    """A JPEG file's bytes ``data`` (L,) uint8, to be decoded with its batch; ``name`` for errors;
    ``orientation`` its EXIF orientation (1-8, 1 = upright), applied after decoding."""

    data: Tensor
    name: str
    orientation: int = 1


def jpeg_decode_device(accelerator: str, strategy: str = "auto") -> torch.device | None:
    """The device that decodes JPEGs for ``accelerator``: this process's CUDA device when training
    runs on one, ``None`` (the workers decode with PIL) otherwise, and under a strategy that
    forks processes after the cache is built (CUDA cannot be used before a fork)."""
    if accelerator not in ("auto", "cuda", "gpu") or not torch.cuda.is_available():
        return None
    if "fork" in strategy or "notebook" in strategy:
        return None
    # before Fabric sets the process's device: torchrun's LOCAL_RANK, or srun's SLURM_LOCALID
    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID") or 0
    return torch.device("cuda", int(local) % torch.cuda.device_count())


def _device_header(data: bytes) -> int | None:
    """The EXIF orientation of ``data`` when it is a whole JPEG whose header the device decoder
    handles (RGB or greyscale, not a bomb); None when PIL should decode it. A file must end with
    the end-of-image marker: a truncated one goes to PIL, which names the fault, where a device
    decoder may fill in the missing rows."""
    if not data.startswith(_JPEG_MAGIC) or not data.rstrip(b"\0\r\n ").endswith(_JPEG_END):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
                if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                    return None
                if width * height > MAX_PIXELS:
                    return None
                orientation = image.getexif().get(_ORIENTATION, 1)
                return orientation if orientation in range(1, 9) else 1
    except Exception:  # noqa: BLE001 (PIL raises many types; decode_image names the file's fault)
        return None


def orient(image: Tensor, orientation: int) -> Tensor:
    """``image (C, H, W)`` as displayed under EXIF ``orientation`` (1-8), as PIL's
    ``ImageOps.exif_transpose`` turns it. torchvision applies EXIF orientation on the CPU only,
    so the device path applies it here, the same on every device."""
    if orientation in (5, 6, 7, 8):  # the stored rows are the displayed columns
        image = image.transpose(-2, -1)
    flip = {2: (-1,), 3: (-2, -1), 4: (-2,), 6: (-1,), 7: (-2, -1), 8: (-2,)}.get(orientation)
    return image.flip(flip) if flip else image


def read_image(
    data: bytes | str | os.PathLike[str], size: int, *, name: str = "", defer_jpeg: bool = False
) -> Tensor | EncodedJPEG:
    """:func:`~selfsup.data.decode.decode_image`, or with ``defer_jpeg`` a JPEG that the device
    can decode as its :class:`EncodedJPEG` bytes."""
    if defer_jpeg:
        label = name or (os.fspath(data) if not isinstance(data, bytes | bytearray) else "<bytes>")
        raw = data if isinstance(data, bytes | bytearray) else _read_bytes(data)
        orientation = None if raw is None else _device_header(bytes(raw))
        if orientation is not None:
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            return EncodedJPEG(data, label, orientation)
        if raw is not None:  # read once: PIL decodes the bytes
            return decode_image(bytes(raw), size, name=label)
    return decode_image(data, size, name=name)


def _read_bytes(path: str | os.PathLike[str]) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None  # decode_image reports it


def _decode_jpegs(datas: list[Tensor], device: torch.device) -> list[Tensor | None]:
    """Decode ``datas`` on ``device``, as a batch; one at a time when the batch fails, ``None``
    for each that fails alone."""
    with warnings.catch_warnings():  # torchvision 0.29's deprecation notice (module docstring)
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        options = {"mode": ImageReadMode.RGB, "device": device}  # orientation: see orient
        try:
            return list(decode_jpeg(datas, **options))
        except RuntimeError:  # one bad file fails the batch: find it
            out: list[Tensor | None] = []
            for data in datas:
                try:
                    out.append(decode_jpeg(data, **options))
                except RuntimeError:
                    out.append(None)
            return out


def decode_on_device(
    images: list[Tensor | EncodedJPEG], size: int, device: torch.device
) -> tuple[Tensor, list[int], list[str]]:
    """Finish decoding a batch: its :class:`EncodedJPEG` images on ``device``.

    Args:
        images: per sample, a decoded (3, S, S) uint8 tensor or an :class:`EncodedJPEG`.
        size: side S.
        device: where the JPEGs decode.

    Returns:
        ``(images (N, 3, S, S) uint8 on device, kept, errors)``: ``kept`` the positions in
        ``images`` of the N samples that decoded, ``errors`` the message of each that did not
        (PIL's, naming the file).
    """
    pending = [i for i, image in enumerate(images) if isinstance(image, EncodedJPEG)]
    datas = [images[i].data for i in pending]
    decoded = dict(zip(pending, _decode_jpegs(datas, device) if datas else [], strict=True))
    out, kept, errors = [], [], []  # out: each decoded sample, on the CPU or the device
    for i, image in enumerate(images):
        if isinstance(image, EncodedJPEG):
            pixels = decoded[i]
            if pixels is None:  # the device failed: PIL names the fault, or decodes it after all
                try:
                    image = decode_image(image.data.numpy().tobytes(), size, name=image.name)
                except DataError as err:
                    errors.append(str(err))
                    continue
            else:
                image = square(orient(pixels, image.orientation), size)
        out.append(image)
        kept.append(i)
    result = torch.empty((len(out), 3, size, size), dtype=torch.uint8, device=device)
    elsewhere = [j for j, image in enumerate(out) if image.device != result.device]
    if elsewhere:  # decoded by the workers (or PIL): one copy to the device for all of them
        result[elsewhere] = torch.stack([out[j] for j in elsewhere]).to(result.device)
    for j, image in enumerate(out):
        if image.device == result.device:
            result[j] = image
    return result, kept, errors


class DeferredCollate:
    """Collate samples whose images may be :class:`EncodedJPEG`: ``inner`` (torch's default
    collate when ``None``) builds the batch from the other fields, and ``batch["image"]`` is the
    list of images, for :class:`DeviceDecoder` to finish in the main process."""

    def __init__(self, inner: Callable[[list[Any]], Any] | None = None) -> None:
        self.inner = inner

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        placeholder = torch.zeros((3, 1, 1), dtype=torch.uint8)
        images = [s["image"] for s in samples]
        rest = [{**s, "image": placeholder} for s in samples]
        batch = (self.inner or default_collate)(rest)
        batch["image"] = images
        return batch


class DeviceDecoder:
    """Finish a :class:`DeferredCollate` batch: decode its JPEGs on ``device`` into
    ``batch["image"]`` (B, 3, S, S) uint8 there.

    A sample that cannot be decoded is recorded in ``faults()`` (raises without a fault sink, as
    reading it in a worker would) and its place in the batch is taken by one that could, so every
    process keeps the same batch size.
    """

    def __init__(self, size: int, device: torch.device, faults: Callable[[], Any]) -> None:
        self.size = size
        self.device = device
        self.faults = faults

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:  # noqa: D102
        images, kept, errors = decode_on_device(batch["image"], self.size, self.device)
        if not errors:
            return {**batch, "image": images}
        sink = self.faults()
        if sink is None or not kept:
            raise DataError(errors[0])
        for error in errors:
            sink.record(error)
        n = len(batch["image"])
        slot = {i: j for j, i in enumerate(kept)}  # position in the batch -> row of ``images``
        source = [i if i in slot else kept[i % len(kept)] for i in range(n)]
        out: dict[str, Any] = {"image": images[[slot[i] for i in source]]}
        for key, value in batch.items():
            if key == "image":
                continue
            if isinstance(value, Tensor) and value.ndim and len(value) == n:
                value = value[source]
            elif isinstance(value, list) and len(value) == n:
                value = [value[i] for i in source]
            out[key] = value
        return out
