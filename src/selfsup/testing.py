"""Check cross-process code on a CPU: run a function in N processes joined by a gloo group.

Every operation that mixes samples (gathered negatives, Sinkhorn sums, centres, batch statistics)
must give under data parallelism what one process gives on the concatenated batch. These helpers
make that a few lines in a test, for selfsup's own losses and for yours::

    from functools import partial
    from selfsup.losses import nt_xent
    from selfsup.testing import gloo_loss_and_grads

    loss, g1, g2 = gloo_loss_and_grads(partial(nt_xent, temperature=0.2), z1, z2, world_size=2)
    # equal to nt_xent(z1, z2, 0.2) and its gradients, to float tolerance

It also writes small test data: an image folder of PNGs (:func:`image_folder`) and one of JPEGs
with a corrupt file (:func:`jpeg_folder`, and :func:`jpeg_captions` for image-caption pairs).

Functions passed to the processes must be picklable (module-level functions or
``functools.partial`` of them), as ``torch.multiprocessing``'s spawn start method requires.
"""

from __future__ import annotations

import io
import os
import queue as queue_module
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor


def _run(rank: int, world: int, init_file: str, fn: Callable, args: tuple, queue: Any) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        buffer = io.BytesIO()  # bytes outlive this process; shared-memory tensors would not
        torch.save(result, buffer)
        queue.put((rank, buffer.getvalue()))
    finally:
        dist.destroy_process_group()


def spawn_gloo(
    fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 120.0
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes sharing a gloo
    process group, and return their results in rank order.

    Args:
        fn: picklable function; its result may hold tensors, numbers, lists, tuples and dicts.
        args: picklable arguments passed to every process.
        world_size: number of processes.
        timeout: seconds to wait for each result.

    Raises:
        RuntimeError: a process failed (its traceback is on stderr) or did not answer in time.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        procs = [
            ctx.Process(target=_run, args=(r, world_size, init_file, fn, args, queue))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        results: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(results) < world_size:
                try:
                    rank, data = queue.get(timeout=1.0)
                except queue_module.Empty:  # a process that died says so at once
                    died = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                    if died or time.monotonic() > deadline:
                        raise RuntimeError(f"exit codes {died}" if died else "no answer") from None
                    continue
                results[rank] = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as exc:  # a process died or hung
            for p in procs:
                p.kill()
            raise RuntimeError(f"a gloo process failed or timed out: {exc!r}") from exc
        finally:
            for p in procs:
                p.join(timeout=60)
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"gloo processes exited with {failed}")
    return [results[r] for r in range(world_size)]


def _loss_and_grads(
    rank: int, world: int, loss: Callable[[Tensor, Tensor], Tensor], z1: Tensor, z2: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    b = z1.shape[0] // world
    a = z1[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    c = z2[rank * b : (rank + 1) * b].clone().requires_grad_(True)
    value = loss(a, c)
    value.backward()
    total = value.detach().clone()
    dist.all_reduce(total)
    # DDP averages gradients over processes: the global loss is the mean of the local ones.
    return total / world, a.grad / world, c.grad / world


def gloo_loss_and_grads(
    loss: Callable[[Tensor, Tensor], Tensor], z1: Tensor, z2: Tensor, world_size: int = 2
) -> tuple[Tensor, Tensor, Tensor]:
    """A two-view loss computed as data parallelism computes it.

    The batch is split evenly over ``world_size`` gloo processes; each computes ``loss`` on its
    rows and backpropagates; the loss is averaged and the gradients are divided by the world size,
    as DDP does.

    Args:
        loss: picklable ``loss(z1, z2) -> scalar``.
        z1: (N, D) first-view embeddings, N divisible by ``world_size``.
        z2: (N, D) second-view embeddings.
        world_size: number of processes.

    Returns:
        (loss, grad of z1 (N, D), grad of z2 (N, D)), to compare with one process's values.
    """
    if z1.shape[0] % world_size:
        raise ValueError(f"batch {z1.shape[0]} does not split over {world_size} processes")
    out = spawn_gloo(_loss_and_grads, loss, z1, z2, world_size=world_size)
    return out[0][0], torch.cat([o[1] for o in out]), torch.cat([o[2] for o in out])


def image_folder(root: Any, per_class: int = 6, size: int = 20) -> Any:  # noqa: ANN401
    """Write a tiny labelled image folder for tests: ``root/{train,test}/class{0,1}/*.png``,
    noisy red and blue squares of ``size`` pixels, ``per_class`` per class and split."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def gradient_picture(height: int, width: int, seed: int = 0) -> Any:  # noqa: ANN401
    """A PIL image: smooth colour gradients (red along x, green along y; JPEG and resizing change
    them little, a wrong orientation a lot) with a tint drawn from ``seed``."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    tint = np.random.default_rng(seed).integers(0, 120, 3)
    pixels = np.stack([x * 200 / width, y * 200 / height, (x + y) * 100 / (width + height)], -1)
    return Image.fromarray((pixels + tint).clip(0, 255).astype(np.uint8))


def jpeg_bytes(image: Any, orientation: int | None = None) -> bytes:  # noqa: ANN401
    """``image`` as a quality-95 JPEG file, with EXIF ``orientation`` (1-8) when given."""
    from PIL import Image

    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation  # EXIF Orientation
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def broken_jpeg(data: bytes) -> bytes:
    """``data``, a JPEG, with its first Huffman table broken: the header reads, and the file
    looks whole (it ends with its end-of-image marker), but no decoder can decode it."""
    table = data.index(b"\xff\xc4") + 5  # the table's 16 code-length counts
    return data[:table] + b"\xff" * 16 + data[table + 16 :]


def jpeg_folder(root: Any, bad: int | None = None) -> Any:  # noqa: ANN401
    """Write ``root/train/class{0,1}``: 6 JPEGs of 160 x 200 each (class 1 tinted blue); class
    0's image number ``bad`` broken after its header (:func:`broken_jpeg`). Returns ``root``."""
    import numpy as np
    from PIL import Image

    for c in range(2):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(6):
            picture = np.asarray(gradient_picture(160, 200, 6 * c + i)).copy()
            picture[..., 2] = 220 if c else 20
            data = jpeg_bytes(Image.fromarray(picture))
            (folder / f"{i}.jpg").write_bytes(broken_jpeg(data) if (c, i) == (0, bad) else data)
    return root


def jpeg_captions(root: Any, count: int = 13, bad: int | None = None) -> Any:  # noqa: ANN401
    """Write ``count`` 60 x 80 JPEGs and ``root/pairs.csv`` captioning them ("a picture number
    i"); image ``bad`` broken after its header (:func:`broken_jpeg`). Row 9 falls in the test split of
    ``captions:``, so 13 rows give 12 training pairs. Returns the CSV's path."""
    rows = ["image,caption"]
    for i in range(count):
        data = jpeg_bytes(gradient_picture(60, 80, i))
        (root / f"{i}.jpg").write_bytes(broken_jpeg(data) if i == bad else data)
        rows.append(f"{i}.jpg,a picture number {i}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def tar_shards(root: Any, shards: int = 2, per_shard: int = 6, label: int | None = None) -> Any:  # noqa: ANN401
    """Write ``root/train-{s}.tar`` shards of 8 px PNGs whose red channel numbers the samples
    (0, 1, ... across shards), with a ``.cls`` of ``label`` when given."""
    import io
    import tarfile

    from PIL import Image

    root.mkdir(parents=True)
    for s in range(shards):
        with tarfile.open(root / f"train-{s}.tar", "w") as archive:
            for i in range(per_shard):
                n = s * per_shard + i
                png = io.BytesIO()
                Image.new("RGB", (8, 8), (n % 256, 0, 0)).save(png, format="PNG")
                members = [(f"k{s}_{i}.png", png.getvalue())]
                if label is not None:
                    members.append((f"k{s}_{i}.cls", str(label).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return root
