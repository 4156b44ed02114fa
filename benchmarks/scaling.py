"""Scaling: SimCLR step throughput against batch size on this machine, and an analytic estimate of
the communication per step for N data-parallel GPUs.

Measured: the ``ceiling`` step of ``throughput.py`` (ResNet-18 CIFAR stem, 2048-wide projector,
NT-Xent on two views, SGD, bf16 autocast, views in memory) at per-process batches 64, 128 and
256, interleaved in one process, median of 3 repeats of 2 steps after warm-up.

Estimated: per optimizer step and GPU, with ring collectives (an all-reduce of S bytes moves
2 (N-1)/N S through each GPU's link, an all-gather (N-1)/N S of the gathered size):

* DDP's gradient all-reduce: S = 4 bytes x parameters;
* NT-Xent's embedding all-gather, forward: S = N x 2b x 128 x 4 bytes (both views, fp32);
* its backward, selfsup's ``gather_with_grad``: an all-reduce of the gathered gradient, the same S.

    python benchmarks/scaling.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import machine  # noqa: E402
from throughput import Fixed  # noqa: E402

from selfsup.methods.simclr import SimCLR  # noqa: E402

BATCHES = (64, 128, 256)
GPUS = (2, 8, 64, 256, 1024)
LINKS = {"NVLink-class, 100 GB/s": 100e9, "100 Gb/s Ethernet, 12.5 GB/s": 12.5e9}


def measure() -> dict[int, float]:
    torch.manual_seed(0)
    method = SimCLR(image_size=32)
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    views = {b: torch.randn(b, 3, 32, 32) for b in BATCHES}
    images = {b: {"image": torch.zeros(b, 3, 32, 32, dtype=torch.uint8)} for b in BATCHES}

    def step(b: int) -> None:
        method.augment = Fixed(views[b])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = method(images[b])["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in BATCHES:
        step(b), step(b)
    rates: dict[int, list[float]] = {b: [] for b in BATCHES}
    for _ in range(3):
        for b in BATCHES:
            start = time.perf_counter()
            step(b), step(b)
            rates[b].append(2 * b / (time.perf_counter() - start))
    return {b: sorted(r)[1] for b, r in rates.items()}


def main() -> None:
    params = sum(p.numel() for p in SimCLR(image_size=32).parameters())
    rates = measure()
    lines = [
        "# Scaling",
        "",
        f"Machine: {machine()}. Command: `python benchmarks/scaling.py`.",
        "",
        "## Throughput against batch size (one process, bf16, views in memory)",
        "",
        "| batch | images/s | vs batch 64 |",
        "|---:|---:|---:|",
        *(f"| {b} | {r:.0f} | {r / rates[64]:.2f}x |" for b, r in rates.items()),
        "",
        "## Communication per step and GPU (estimate), SimCLR, per-GPU batch 256",
        "",
        f"Parameters: {params / 1e6:.1f} M (ResNet-18 + projector), gradients fp32.",
        "",
        "| GPUs | gradient all-reduce MB | embedding all-gather MB | its backward all-reduce MB | "
        + " | ".join(f"time at {name} ms" for name in LINKS)
        + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(LINKS),
    ]
    for n in GPUS:
        grads = 2 * (n - 1) / n * 4 * params
        gathered = n * 2 * 256 * 128 * 4
        forward = (n - 1) / n * gathered
        backward = 2 * (n - 1) / n * gathered
        total = grads + forward + backward
        times = " | ".join(f"{total / bw * 1e3:.1f}" for bw in LINKS.values())
        lines.append(
            f"| {n} | {grads / 1e6:.1f} | {forward / 1e6:.1f} | {backward / 1e6:.1f} | {times} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
