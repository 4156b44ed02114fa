"""Throughput of batched on-device views vs torchvision's per-image transforms.

Measures images/s for making two SimCLR views of every image of a uint8 batch:

* selfsup: ``ViewAugment.simclr(size)`` on the whole batch at once, per-sample random parameters;
* torchvision: the same recipe (v2 RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter),
  RandomGrayscale, ToDtype, Normalize) called per image in a Python loop, on uint8 tensors and on PIL
  images, which is what a DataLoader worker does.

All variants run in one process, interleaved, repeated after a warm-up; the median is reported. By
default torch uses one thread, like a DataLoader worker, so both sides are measured per CPU core.

    python benchmarks/bench_views.py > benchmarks/views.md
"""

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision
import torchvision.transforms.v2 as T
from PIL import Image

from selfsup.views import IMAGENET_MEAN, IMAGENET_STD, ViewAugment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def torchvision_pipeline(size: int, strength: float, pil: bool) -> T.Compose:
    s = strength
    steps = [
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if pil:
        steps.append(T.PILToTensor())
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)"
    )
    p.add_argument("--device", default="cpu", help="device of the batched views")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    pil_images = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    dev_images = images.to(args.device)

    sync = torch.cuda.synchronize if dev_images.is_cuda else (lambda: None)
    aug = ViewAugment.simclr(args.size, blur=False)  # SimCLR omits blur on CIFAR-10
    aug_blur = ViewAugment.simclr(args.size, blur=True)
    tv_tensor = torchvision_pipeline(args.size, 1.0, pil=False)
    tv_pil = torchvision_pipeline(args.size, 1.0, pil=True)

    def batched(a: ViewAugment) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def run() -> tuple[torch.Tensor, torch.Tensor]:
            views = a(dev_images), a(dev_images)
            sync()
            return views

        return run

    def per_image(tf: T.Compose, inputs: list) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def run() -> tuple[torch.Tensor, torch.Tensor]:
            return torch.stack([tf(im) for im in inputs]), torch.stack([tf(im) for im in inputs])

        return run

    variants = {
        f"selfsup ViewAugment.simclr({args.size}, blur=False), batched on {args.device}": batched(
            aug
        ),
        f"selfsup ViewAugment.simclr({args.size}, blur=True), batched on {args.device}": batched(
            aug_blur
        ),
        "torchvision v2 per image, uint8 tensor": per_image(tv_tensor, list(images)),
        "torchvision v2 per image, PIL": per_image(tv_pil, pil_images),
    }
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)

    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    ref_tensor = rate["torchvision v2 per image, uint8 tensor"]
    ref_pil = rate["torchvision v2 per image, PIL"]

    print("# Batched views vs per-image torchvision transforms\n")
    print(
        f"Two SimCLR views (crop 0.08-1 + flip, colour jitter (0.8, 0.8, 0.8, 0.2) p=0.8, grayscale "
        f"p=0.2, normalise) of each of {args.batch} uint8 {args.size}x{args.size} images; median of "
        f"{args.repeats} interleaved repeats after one warm-up. images/s counts source images "
        f"(each yields two views).\n"
    )
    print("| variant | images/s | vs torchvision tensor | vs torchvision PIL |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in rate.items():
        print(f"| {name} | {r:,.0f} | {r / ref_tensor:.1f}x | {r / ref_pil:.1f}x |")
    dev = torch.cuda.get_device_name() if dev_images.is_cuda else "-"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n- machine: {cpu_model()}, {os.cpu_count()} logical cores visible, load average "
        f"{load} (1/5/15 min) at the end of the run, GPU: {dev}\n"
        f"- torch threads: {torch.get_num_threads()} (torchvision per-image runs in this process, "
        f"like one DataLoader worker)\n"
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}\n"
        f"- command: `python {' '.join([os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))}`"
    )
    print(
        "\nBoth sides draw per-sample random parameters (crop box, flip, jitter factors and order, "
        "grayscale). The batched crop resizes bilinearly without antialiasing; torchvision "
        "antialiases when a crop is downscaled. Absolute numbers move with machine load; the "
        "ratios come from interleaved runs in one process."
    )


if __name__ == "__main__":
    main()
