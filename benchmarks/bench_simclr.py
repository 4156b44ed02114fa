"""SimCLR on the CIFAR-10 shards: kNN accuracy after a wall-clock budget, and training throughput.

Part 1 (quality): `selfsup pretrain` SimCLR, ResNet-18 with CIFAR stem, batch 256, for a wall-clock
budget; then kNN top-1 (k=200, T=0.1, cosine, weighted vote) with the first 10,000 training images
as memory bank and the first 2,000 test images as queries, beside the same encoder at random init.

Part 2 (throughput): optimizer steps of the same model fed (a) by selfsup's batched views on the
device and (b) by per-image torchvision v2 transforms in 2 DataLoader workers, in fp32 and bf16,
interleaved and repeated after warm-up in one process.

    python benchmarks/bench_simclr.py --budget 10m            # both parts, writes simclr.md
    python benchmarks/bench_simclr.py --skip-train            # throughput only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tarfile
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from torchvision.transforms import v2

# CIFAR-10 shards: ../shared beside the checkout, or SELFSUP_CIFAR (a GPU machine's copy)
DATA = Path(
    os.environ.get("SELFSUP_CIFAR")
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"{cpu}, {os.cpu_count()} cores, GPU: {gpu}; python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    )


def train_and_knn(budget: str, out: Path, precision: str, compile: bool) -> dict:
    from selfsup.config import load_config
    from selfsup.evaluate import evaluate
    from selfsup.pipeline import pretrain

    config = load_config(
        values={
            "method": "simclr",
            "data": f"cifar10-shards:{DATA}",
            "backbone": "resnet18",
            "budget": budget,
            "batch_size": 256,
            "precision": precision,
            "num_workers": 2,
            "out": str(out),
            "checkpoint_every": 100,
            "compile": compile,
        }
    )
    run = pretrain(config, overwrite=True)
    knn = {"bank_size": 10_000, "query_size": 2_000, "k": 200, "temperature": 0.1}
    learned = evaluate(run, protocol="knn", **knn)
    random = evaluate(run, protocol="knn", random_init=True, **knn)
    summary = json.loads((run / "summary.json").read_text())
    return {"learned": learned, "random": random, "summary": summary, "config": config.to_dict()}


class TorchvisionViews(IterableDataset):
    """Per-image SimCLR views in DataLoader workers: the usual torchvision path."""

    def __init__(self, shards: list[str]) -> None:
        self.shards = shards
        s = 0.5  # SimCLR's CIFAR-10 colour strength, no blur (appendix B.9)
        self.t = v2.Compose(
            [
                v2.PILToTensor(),
                v2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                v2.RandomGrayscale(p=0.2),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        while True:
            for shard in self.shards[wid::nw]:
                with tarfile.open(shard) as tar:
                    for member in tar:
                        if member.name.endswith(".jpg"):
                            img = Image.open(io.BytesIO(tar.extractfile(member).read())).convert(
                                "RGB"
                            )
                            yield self.t(img), self.t(img)


def throughput(steps: int, repeats: int) -> list[dict]:
    from selfsup.data import build_source
    from selfsup.methods.simclr import SimCLR

    torch.manual_seed(0)
    method = SimCLR(image_size=32)
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    batched = DataLoader(
        build_source(f"cifar10-shards:{DATA}").train, batch_size=256, num_workers=2, drop_last=True
    )
    shards = sorted(str(p) for p in DATA.glob("train-*.tar"))
    per_image = DataLoader(TorchvisionViews(shards), batch_size=256, num_workers=2)
    iters = {"batched": iter(batched), "per-image": iter(per_image)}

    def step(path: str, bf16: bool) -> None:
        batch = next(iters[path])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if path == "batched":
                loss = method(batch)["loss"]
            else:
                x1, x2 = batch
                z1 = method.projector(method.backbone(x1))
                z2 = method.projector(method.backbone(x2))
                loss = method.criterion(z1, z2)
        loss.backward()
        opt.step()
        opt.zero_grad()

    rows: dict[tuple[str, bool], list[float]] = {}
    for path in iters:
        for bf16 in (False, True):
            step(path, bf16)  # warm-up (and worker start-up)
    for _ in range(repeats):
        for path in iters:
            for bf16 in (False, True):
                start = time.perf_counter()
                for _ in range(steps):
                    step(path, bf16)
                rate = steps * 256 / (time.perf_counter() - start)
                rows.setdefault((path, bf16), []).append(rate)
    return [
        {
            "views": p,
            "precision": "bf16-mixed" if b else "fp32",
            "images_per_s": sorted(r)[len(r) // 2],
        }
        for (p, b), r in rows.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--out", default="runs/bench-simclr-cifar10")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the method")
    parser.add_argument("--steps", type=int, default=3, help="steps per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--md", default=str(Path(__file__).with_name("simclr.md")))
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"CIFAR-10 shards not found at {DATA}; see ../shared/data/README.md", file=sys.stderr)
        return 1
    lines = ["# SimCLR on CIFAR-10 shards (CPU)", "", f"- machine: {machine()}", ""]
    if not args.skip_train:
        r = train_and_knn(args.budget, Path(args.out), args.precision, args.compile)
        s = r["summary"]
        lines += [
            "## kNN top-1 after a wall-clock budget",
            "",
            f"Command: `python benchmarks/bench_simclr.py --budget {args.budget}"
            f"{' --compile' if args.compile else ''}` (SimCLR defaults: LARS, "
            f"lr 0.3 x B/256, wd 1e-6, T=0.1, 10 % warm-up, cosine; ResNet-18 CIFAR stem; batch 256; "
            f"{args.precision}; 2 decoding workers).",
            "",
            "| encoder | steps | kNN top-1 % | kNN top-5 % |",
            "| --- | ---: | ---: | ---: |",
            f"| random initialisation | 0 | {r['random']['top1']:.1f} | {r['random']['top5']:.1f} |",
            f"| SimCLR, {args.budget} | {s['steps']} | {r['learned']['top1']:.1f} | {r['learned']['top5']:.1f} |",
            "",
            f"Training: {s['steps']} steps, {s['samples']} images in {s['seconds']} s "
            f"({s['samples_per_s']} images/s including logging and checkpoints). kNN: k=200, T=0.1, "
            "cosine, weighted vote; bank = first 10,000 training images, queries = first 2,000 test images.",
            "",
        ]
        print("\n".join(lines))
    rows = throughput(args.steps, args.repeats)
    base = {row["precision"]: row["images_per_s"] for row in rows if row["views"] == "per-image"}
    lines += [
        "## Training throughput: batched on-device views vs per-image torchvision",
        "",
        f"Command: `python benchmarks/bench_simclr.py --skip-train` (median of {args.repeats} interleaved "
        f"repeats of {args.steps} steps after warm-up; batch 256, two views; SGD step included).",
        "",
        "| views | precision | images/s | vs per-image, same precision |",
        "| --- | --- | ---: | ---: |",
    ]
    for row in rows:
        ratio = row["images_per_s"] / base[row["precision"]]
        lines.append(
            f"| {row['views']} | {row['precision']} | {row['images_per_s']:.0f} | {ratio:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.md).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
