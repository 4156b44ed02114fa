"""Instance discrimination variants on a CIFAR-10 subset: kNN accuracy after every epoch.

Trains ``InstDisc`` directly (no engine) on the first N training images of the CIFAR-10 shards,
decoded once to memory: batch 256, SGD lr 0.03, momentum 0.9, weight decay 5e-4, bf16 autocast,
ResNet-18 with the CIFAR stem. After every epoch the features of the N training images form the
kNN bank (k=200, T=0.1) for the first 2,000 test images. Every 10 steps it prints the loss, the
mean similarity of each feature to its own memory-bank row and NCE's normalising constant Z.

    python benchmarks/bench_instdisc.py '{"epochs": 4}'                      # NCE, Z per batch
    python benchmarks/bench_instdisc.py '{"epochs": 4, "z_momentum": 1}'     # the paper's fixed Z
    python benchmarks/bench_instdisc.py '{"epochs": 4, "loss": "softmax"}' --images 10000

The JSON holds InstDisc's arguments plus ``epochs``; results in ``instdisc.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.evaluate.knn import knn_accuracy
from selfsup.methods.instdisc import InstDisc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def load(prefix: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images (uint8 (n, 3, 32, 32)) and labels of the ``prefix`` shards."""
    images, labels = [], []
    for shard in sorted(DATA.glob(f"{prefix}-*.tar")):
        with tarfile.open(shard) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for member in tar:
                key, ext = member.name.rsplit(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(member).read()
                if len(members[key]) < 2:
                    continue
                sample = members.pop(key)
                images.append(np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
                labels.append(int(sample["cls"]))
                if len(images) == n:
                    break
        if len(images) == n:
            break
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("args", help="InstDisc arguments and 'epochs' as JSON")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    options = parser.parse_args()
    torch.manual_seed(0)
    kwargs = json.loads(options.args)
    epochs = kwargs.pop("epochs", 4)
    train_x, train_y = load("train", options.images)
    test_x, test_y = load("test", 2000)
    method = InstDisc(options.images, **kwargs).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            chunks = [
                method.embed({"image": images[i : i + 500]}) for i in range(0, len(images), 500)
            ]
        return torch.cat(chunks).float()

    def knn() -> float:
        method.eval()
        bank, queries = features(train_x), features(test_x)
        method.train()
        return knn_accuracy(bank, train_y, queries, test_y, 10)["top1"]

    print(json.dumps({**kwargs, "epoch": -1, "knn": knn()}), flush=True)
    step, start, b = 0, time.time(), options.batch_size
    for epoch in range(epochs):
        order = torch.randperm(options.images)
        for i in range(0, options.images - b + 1, b):
            index = order[i : i + b]
            with torch.autocast("cpu", torch.bfloat16):
                out = method({"image": train_x[index], "index": index})
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            step += 1
            method.after_step(step, 0)
            if step % 10 == 0:
                print(f"epoch {epoch} step {step} loss {out['loss'].item():.2f} "
                      f"own-row similarity {out['positive_similarity'].item():.3f} "
                      f"Z {method.z.item():.3g} {time.time() - start:.0f}s", flush=True)  # fmt: skip
        print(json.dumps({**kwargs, "epoch": epoch, "knn": knn()}), flush=True)


if __name__ == "__main__":
    main()
