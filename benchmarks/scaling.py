"""Scaling: SimCLR step throughput against batch size on this machine, and an analytic estimate of
the communication per step for N data-parallel GPUs.

Measured: the ``ceiling`` step of ``throughput.py`` (ResNet-18 CIFAR stem, 2048-wide projector,
NT-Xent on two views, SGD, bf16 autocast, views in memory) at per-process batches 64, 128 and
256, interleaved in one process, median of 3 repeats of 2 steps after warm-up. Then the same
step at a global batch of 128 in 1 process with 2 threads against 2 DDP processes (gloo, selfsup's
gathered NT-Xent) with 1 thread each, alternated, median of 3 launches of 3 timed steps.

Estimated: per optimizer step and GPU, with ring collectives (an all-reduce of S bytes moves
2 (N-1)/N S through each GPU's link, an all-gather (N-1)/N S of the gathered size):

* DDP's gradient all-reduce: S = 4 bytes x parameters;
* NT-Xent's embedding all-gather, forward: S = N x 2b x 128 x 4 bytes (both views, fp32);
* its backward, selfsup's ``gather_with_grad``: a reduce-scatter of the gathered gradient, the
  same S and the same (N-1)/N S per link as the all-gather.

    python benchmarks/scaling.py              # measure, then estimate
    python benchmarks/scaling.py --estimate   # the estimate alone
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import machine  # noqa: E402

from selfsup.methods.simclr import SimCLR  # noqa: E402


class Fixed(torch.nn.Module):
    """Stands in for SimCLR's augmentation: returns views already in memory."""

    def __init__(self, views: torch.Tensor) -> None:
        super().__init__()
        self.views = views

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.views


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


PROCESS_BATCH = 128  # global batch of the processes measurement


def _ddp_worker(rank: int, world: int, port: int, steps: int, out: str) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(max(1, 2 // world))
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    method = SimCLR(image_size=32)
    b = PROCESS_BATCH // world
    method.augment = Fixed(torch.randn(b, 3, 32, 32))
    model = DistributedDataParallel(method) if world > 1 else method
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    images = {"image": torch.zeros(b, 3, 32, 32, dtype=torch.uint8)}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(images)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(), step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if world > 1:
        dist.barrier()
    if rank == 0:
        Path(out).write_text(str(steps * PROCESS_BATCH / (time.perf_counter() - start)))
    if world > 1:
        dist.destroy_process_group()


def measure_processes(repeats: int = 3, steps: int = 3) -> dict[int, float]:
    import tempfile

    import torch.multiprocessing as mp

    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for world in rates:
                out = str(Path(tmp) / f"{world}-{r}")
                mp.spawn(_ddp_worker, args=(world, 29600 + 2 * r + world, steps, out),
                         nprocs=world)  # fmt: skip
                rates[world].append(float(Path(out).read_text()))
    return {w: sorted(r)[len(r) // 2] for w, r in rates.items()}


def estimate(params: int) -> list[str]:
    """Markdown lines: the estimated communication per step and GPU for ``params`` parameters."""
    lines = [
        "## Communication per step and GPU (estimate), SimCLR, per-GPU batch 256",
        "",
        f"Parameters: {params / 1e6:.1f} M (ResNet-18 + projector), gradients fp32.",
        "",
        "| GPUs | gradient all-reduce MB | embedding all-gather MB | its backward reduce-scatter MB | "
        + " | ".join(f"time at {name} ms" for name in LINKS)
        + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(LINKS),
    ]
    for n in GPUS:
        grads = 2 * (n - 1) / n * 4 * params
        gathered = n * 2 * 256 * 128 * 4
        forward = backward = (n - 1) / n * gathered
        total = grads + forward + backward
        times = " | ".join(f"{total / bw * 1e3:.1f}" for bw in LINKS.values())
        lines.append(
            f"| {n} | {grads / 1e6:.1f} | {forward / 1e6:.1f} | {backward / 1e6:.1f} | {times} |"
        )
    return lines


def main() -> None:
    params = sum(p.numel() for p in SimCLR(image_size=32).parameters())
    if "--estimate" in sys.argv[1:]:
        print("\n".join(estimate(params)))
        return
    rates = measure()
    processes = measure_processes()
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
        f"## Throughput against processes (global batch {PROCESS_BATCH}, bf16, views in memory)",
        "",
        "| processes x threads | images/s | vs 1 process |",
        "|---|---:|---:|",
        *(f"| {w} x {2 // w} | {r:.0f} | {r / processes[1]:.2f}x |" for w, r in processes.items()),
        "",
        *estimate(params),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
