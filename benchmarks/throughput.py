"""Training throughput against its ceiling, in one process: how much of a step is not the model?

Three ways to take the same optimizer steps of one method (default SimCLR, ResNet-18 with the
CIFAR stem, batch 256, 32 px, CIFAR-10 shards), interleaved and repeated after warm-up:

* ``ceiling``: the method's forward (encoder, head, loss), backward and optimizer step on views
  already in memory: no decoding, no augmentation (the method's ``augment`` returns a fixed
  tensor). Nothing that feeds the model can be faster than this.
* ``selfsup``: what ``selfsup pretrain`` runs: the source's decoded uint8 images from the
  training loader (``num_workers`` decoding workers, or the decoded-image cache with
  ``--cache``), views drawn batched on the device by the method, then the same step.
* ``per-image``: the usual PyTorch recipe (lightly's examples): per-image torchvision v2
  transforms in 2 DataLoader workers producing both views, then the same step.

Peak resident memory is measured per path in a fresh process (``--only PATH``): the main process
plus its DataLoader workers (``ru_maxrss`` of the process and of its largest child, times the
number of workers).

    python benchmarks/throughput.py                        # bf16 and fp32, prints a markdown table
    python benchmarks/throughput.py --precision bf16-mixed --steps 4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import DATA, TorchvisionViews, machine  # noqa: E402

PATHS = ("ceiling", "selfsup", "per-image")


class Fixed(torch.nn.Module):
    """Stands in for the method's augmentation: returns views already in memory."""

    def __init__(self, views: torch.Tensor) -> None:
        super().__init__()
        self.views = views

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.views


def build(method_name: str, backbone: str, batch: int, workers: int, cache: bool) -> dict:
    """The method, an optimizer, and one endless batch iterator per path."""
    from selfsup.data import build_source
    from selfsup.engine.loader import EpochLoader
    from selfsup.methods import METHODS, BuildContext

    torch.manual_seed(0)
    source = build_source(f"cifar10-shards:{DATA}", image_size=32, seed=0)
    ctx = BuildContext(image_size=32, backbone=backbone, batch_size=batch, num_samples=50_000)
    method = METHODS.get(method_name).build(ctx)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    train = source.train
    if cache:
        from selfsup.data.cache import decoded_cache

        train = decoded_cache(train, source.num_samples, 32, workers)
    loader = EpochLoader(train, batch, seed=0, num_workers=0 if cache else workers)
    shards = sorted(str(p) for p in DATA.glob("train-*.tar"))
    per_image = DataLoader(TorchvisionViews(shards), batch_size=batch, num_workers=2)
    epochs = iter(range(10**6))
    # A fresh iterator (fresh workers) per timed segment, closed after it: workers left running
    # would prefetch during the other paths' segments and slow them down.
    opened = {"selfsup": lambda: loader.epoch(next(epochs)), "per-image": lambda: iter(per_image)}
    first = next(iter(DataLoader(source.train, batch_size=batch)))
    with torch.no_grad():
        fixed = method.augment(first["image"])  # one view, reused: the model's input, no work
    return {
        "method": method,
        "optimizer": optimizer,
        "fixed": Fixed(fixed),
        "first": first,
        "opened": opened,
        "iters": {},
    }


def step(state: dict, path: str, bf16: bool) -> None:
    method, optimizer = state["method"], state["optimizer"]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if path == "ceiling":
            augment = method.augment
            method.augment = state["fixed"]
            try:
                loss = method(state["first"])["loss"]
            finally:
                method.augment = augment
        elif path == "selfsup":
            loss = method(next(state["iters"]["selfsup"]))["loss"]
        else:  # the per-image views, through the same encoder, head and loss as SimCLR's
            x1, x2 = next(state["iters"]["per-image"])
            z1, z2 = method.projector(method.backbone(torch.cat([x1, x2]))).chunk(2)
            loss = method.criterion(z1, z2)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(args: argparse.Namespace) -> dict:
    state = build(args.method, args.backbone, args.batch, args.workers, args.cache)
    paths = [args.only] if args.only else list(PATHS)
    if args.method != "simclr":  # the per-image recipe below is SimCLR's
        paths = [p for p in paths if p != "per-image"]
    precisions = [p == "bf16-mixed" for p in args.precision]
    for path in paths:
        for bf16 in precisions:
            if path in state["opened"]:
                state["iters"][path] = state["opened"][path]()
            for _ in range(2):
                step(state, path, bf16)  # warm-up
            state["iters"].pop(path, None)
    rates: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for bf16 in precisions:
            for path in paths:
                if path in state["opened"]:
                    state["iters"][path] = state["opened"][path]()
                    step(state, path, bf16)  # untimed: the workers start and fill their queue
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(state, path, bf16)
                rate = args.steps * args.batch / (time.perf_counter() - start)
                rates.setdefault(f"{path}|{bf16}", []).append(rate)
                state["iters"].pop(path, None)  # closes the iterator and its workers
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = 0 if args.only == "ceiling" or (args.only == "selfsup" and args.cache) else 2
    # the memory of one path, measured alone: the other paths' loaders are never started
    return {
        "rates": {k: sorted(v)[len(v) // 2] for k, v in rates.items()},
        "peak_mib": (own + workers * children) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="selfsup's decoding workers")
    parser.add_argument("--cache", action="store_true", help="selfsup reads the decoded cache")
    parser.add_argument("--precision", nargs="*", default=["bf16-mixed", "32-true"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=PATHS, help="one path (the memory measurement)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"CIFAR-10 shards not found at {DATA}", file=sys.stderr)
        return 1
    torch.set_num_threads(torch.get_num_threads())
    found = measure(args)
    if args.json or args.only:
        print(json.dumps(found))
        return 0
    memory = {}
    rates = found["rates"]
    paths = [p for p in PATHS if any(k.startswith(f"{p}|") for k in rates)]
    if not args.no_memory:
        for path in paths:
            command = [sys.executable, __file__, "--only", path, "--steps", "2", "--repeats", "1",
                       "--method", args.method, "--backbone", args.backbone,
                       "--batch", str(args.batch), "--precision", args.precision[0],
                       "--workers", str(args.workers)] + (["--cache"] if args.cache else [])  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            memory[path] = json.loads(out.strip().splitlines()[-1])["peak_mib"]
    lines = [
        f"Machine: {machine()}",
        "",
        f"Command: `python benchmarks/throughput.py {' '.join(sys.argv[1:])}` ({args.method}, "
        f"{args.backbone}, batch {args.batch}, 32 px; median of {args.repeats} interleaved "
        f"repeats of {args.steps} steps after warm-up; selfsup: "
        + ("decoded-image cache, no workers" if args.cache else f"{args.workers} workers")
        + ")",
        "",
        "| precision | path | images/s | of the ceiling | vs per-image | peak memory MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for precision in args.precision:
        bf16 = precision == "bf16-mixed"
        ceiling, base = rates[f"ceiling|{bf16}"], rates.get(f"per-image|{bf16}")
        for path in paths:
            rate = rates[f"{path}|{bf16}"]
            mem = (
                f"{memory[path]:.0f}"
                if path in memory and bf16 == (args.precision[0] == "bf16-mixed")
                else ""
            )
            lines.append(
                f"| {precision} | {path} | {rate:.0f} | {rate / ceiling:.0%} | "
                + (f"{rate / base:.2f}x" if base else "n/a")
                + f" | {mem} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
