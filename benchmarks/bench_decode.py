"""JPEG decoding throughput: what the decoding workers do (PIL, with draft-mode reduction) against
torchvision's batched decoder, on the CPU and, when there is one, on the GPU
(``decode_device: auto``, ``selfsup.data.device_decode``).

The images are ImageNet-like: 500 x 375 JPEGs (quality 90) of smooth random colour fields with
noise, decoded to 224 x 224 (shorter side resized, centre crop) or to 32 x 32. Each row is the
median of 3 interleaved repeats over all images, after a warm-up pass, in one process of one
thread per decoder (the workers' setting).

    python benchmarks/bench_decode.py [--images 256] [--out benchmarks/decode.md]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import machine  # noqa: E402

from selfsup.data.decode import _to_rgb, decode_image  # noqa: E402
from selfsup.data.device_decode import EncodedJPEG, decode_on_device  # noqa: E402


def jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` 500 x 375 JPEG files."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC))
        noisy = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def pil_resized(data: bytes, size: int) -> torch.Tensor:
    """The workers' path before 2026-12, step for step: ``decode_image`` with PIL's resize."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (size, size))
        image.load()
        image = _to_rgb(ImageOps.exif_transpose(image))
        scale = size / min(image.size)
        shape = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
        image = image.resize(shape, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (shape[0] - size) // 2, (shape[1] - size) // 2
        array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def timed(run: Callable[[], object], device: torch.device | None) -> float:
    start = time.perf_counter()
    run()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = jpegs(args.images)
    encoded = [EncodedJPEG(torch.frombuffer(bytearray(f), dtype=torch.uint8), "") for f in files]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    rows: dict[str, Callable[[], object]] = {}
    for size in (224, 32):
        rows[f"workers: PIL decode (draft mode), torch resize, {size} px"] = lambda s=size: [
            decode_image(f, s) for f in files
        ]
        rows[f"workers before 2026-12: PIL decode and resize, {size} px"] = lambda s=size: [
            pil_resized(f, s) for f in files
        ]
        for device in devices:
            name = f"torchvision batched on {device.type}, {size} px"
            rows[name] = lambda s=size, d=device: [
                decode_on_device(encoded[i : i + args.batch], s, d)
                for i in range(0, len(encoded), args.batch)
            ]
    device_of = {name: torch.device("cuda") if "cuda" in name else None for name in rows}
    for name, run in rows.items():  # warm-up
        timed(run, device_of[name])
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(3):
        for name, run in rows.items():
            times[name].append(timed(run, device_of[name]))
    rates = {name: args.images / statistics.median(t) for name, t in times.items()}

    lines = [
        "# JPEG decoding throughput",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/bench_decode.py "
        f"--images {args.images}`.",
        "",
        f"{args.images} JPEGs of 500 x 375 px, batches of {args.batch}, one thread; median of 3.",
        "",
        "| decoder | images/s | vs the workers at the same size |",
        "|---|---:|---:|",
    ]
    for name, rate in rates.items():
        size = name.rsplit(", ", 1)[1]
        pil = rates[f"workers: PIL decode (draft mode), torch resize, {size}"]
        lines.append(f"| {name} | {rate:.0f} | {rate / pil:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
