"""Is selfsup's SimCLR step as fast as a plain PyTorch one? Same work, one process, interleaved.

``plain``: torchvision's ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), channels-last,
a 2048-wide projector with batch norm, NT-Xent, SGD. ``selfsup``: ``SimCLR(image_size=32)``'s
forward with its augmentation replaced by the same views in memory (the ``ceiling`` path of
``throughput.py``). Batch 256 (512 views), bf16 autocast, median of 5 repeats of 3 steps.

    python benchmarks/bench_plain_ceiling.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import Fixed  # noqa: E402

from selfsup.losses import nt_xent  # noqa: E402
from selfsup.methods.simclr import SimCLR  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    batch = 256
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    head = nn.Sequential(
        nn.Linear(512, 2048), nn.BatchNorm1d(2048), nn.ReLU(), nn.Linear(2048, 128)
    )
    plain = nn.Sequential(net, head).to(memory_format=torch.channels_last)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    views = torch.randn(2 * batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    method = SimCLR(image_size=32)
    method.augment = Fixed(views[:batch].contiguous())
    method_opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    images = {"image": torch.zeros(batch, 3, 32, 32, dtype=torch.uint8)}

    def plain_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z1, z2 = plain(views).chunk(2)
            loss = nt_xent(z1, z2, 0.1)
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    def selfsup_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = method(images)["loss"]
        loss.backward()
        method_opt.step()
        method_opt.zero_grad(set_to_none=True)

    steps = {"plain": plain_step, "selfsup": selfsup_step}
    for step in steps.values():
        step(), step()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(5):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(3):
                step()
            rates[name].append(3 * batch / (time.perf_counter() - start))
    for name, found in rates.items():
        print(
            f"{name}: {sorted(found)[2]:.1f} images/s (median of {', '.join(f'{r:.0f}' for r in found)})"
        )


if __name__ == "__main__":
    main()
