"""Training throughput against its ceiling, in one process: how much of a step is not the model?

Ways to take the same optimizer steps of one method (default SimCLR, ResNet-18 with the CIFAR
stem, batch 256, 32 px, CIFAR-10 shards; any method with ``--method``: text methods read
``wiki`` and count tokens), interleaved and repeated after warm-up:

* ``ceiling``: the method's forward (encoder, head, loss), backward and optimizer step on inputs
  already in memory: no decoding, no augmentation. The method's view stages (``VIEW_STAGES``:
  augmentations, multi-crop, puzzles, patch pairs, token masking, ...) return what they
  produced for the first batch. Nothing that feeds the model can be faster than this.
* ``selfsup``: what ``selfsup pretrain`` runs, built the same way (source, tokenizer, loader):
  the source's decoded uint8 images from the training loader (``num_workers`` decoding
  workers, or the decoded-image cache with ``--cache``), views drawn batched on the device by
  the method, then the same step.
* ``per-image`` (SimCLR only): the usual PyTorch recipe (lightly's examples): per-image
  torchvision v2 transforms in 2 DataLoader workers producing both views, then the same step.
* with ``--compile``, ``ceiling+compile`` and ``selfsup+compile``: the same through
  ``torch.compile(method)`` (what ``compile: true`` runs; the ceiling's replayed view stages
  stay eager). Compilation happens in the warm-up steps, outside the timed ones.

Peak resident memory is measured per path in a fresh process (``--only PATH``): the main process
plus its DataLoader workers (``ru_maxrss`` of the process and of its largest child, times the
number of workers).

    python benchmarks/throughput.py                        # bf16 and fp32, prints a markdown table
    python benchmarks/throughput.py --precision bf16-mixed --steps 4 --repeats 3
    python benchmarks/throughput.py --method dino --batch 128 --cache --precision bf16-mixed
    python benchmarks/throughput.py --method mlm --batch 32 --precision bf16-mixed
    python benchmarks/throughput.py --compile --precision bf16-mixed --no-memory
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
COMPILED = ("ceiling+compile", "selfsup+compile")  # with --compile


# The stages that turn a loader batch into the model's input, per method: the ceiling replays
# their first outputs. "name" is an attribute of the method (a view module or a bound method);
# "module:name" a function its forward calls from that module.
VIEW_STAGES = {
    "simclr": ["augment"],
    "moco": ["augment"],
    "mocov3": ["augment1", "augment2"],
    "byol": ["augment1", "augment2"],
    "simsiam": ["augment"],
    "swav": ["multicrop"],
    "dino": ["multicrop"],
    "barlowtwins": ["views"],
    "vicreg": ["views"],
    "instdisc": ["augment"],
    "mae": ["augment"],
    "rotation": ["selfsup.methods.rotation:random_crop", "selfsup.methods.rotation:rotate_batch"],
    "jigsaw": ["puzzles", "selfsup.methods.jigsaw:normalize_patches"],
    "relative_patch": [
        "pairs",
        "selfsup.methods.context:normalize_patches",
        "selfsup.methods.context:drop_channels",
    ],
    "inpainting": ["selfsup.methods.inpainting:random_resized_crop", "regions"],
    "colorization": [
        "selfsup.methods.colorization:random_resized_crop",
        "selfsup.methods.colorization:rgb_to_lab",
    ],
    "mlm": ["selfsup.views.tokens:mask_tokens"],
    "bert": ["selfsup.views.tokens:mask_tokens"],
    "roberta": ["selfsup.views.tokens:mask_tokens"],
    "clip": ["preprocess"],
}


class Replay(torch.nn.Module):
    """Stands in for a view stage: records its outputs once, then returns them in turn."""

    def __init__(self, fn) -> None:  # noqa: ANN001
        super().__init__()
        self.fn, self.outputs, self.calls, self.recording = fn, [], 0, True

    def __getattr__(self, name: str):  # noqa: ANN204
        try:
            return super().__getattr__(name)
        except AttributeError:  # the stage's own attributes (e.g. a MultiCrop's num_global)
            fn = self.__dict__.get("fn", self._modules.get("fn"))
            if fn is None:
                raise
            return getattr(fn, name)

    @torch._dynamo.disable  # replaying is not the model's work: never traced
    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if self.recording:
            self.outputs.append(self.fn(*args, **kwargs))
            return self.outputs[-1]
        self.calls += 1
        return self.outputs[(self.calls - 1) % len(self.outputs)]


class Stages:
    """Swaps a method's view stages for :class:`Replay` stand-ins while in a ``with`` block."""

    def __init__(self, method: torch.nn.Module, names: list[str]) -> None:
        self.method, self.replays = method, {}
        for name in names:
            owner, attr = self._owner(name)
            self.replays[name] = Replay(getattr(owner, attr))

    def _owner(self, name: str) -> tuple[object, str]:
        if ":" in name:
            module, attr = name.split(":")
            return sys.modules[module], attr
        return self.method, name

    def __enter__(self) -> Stages:
        for name, replay in self.replays.items():
            owner, attr = self._owner(name)
            # the instance dict shadows both child modules and the class's methods
            object.__setattr__(owner, attr, replay) if owner is self.method else setattr(
                owner, attr, replay
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for name, replay in self.replays.items():
            owner, attr = self._owner(name)
            if owner is self.method:
                del owner.__dict__[attr]
            else:
                setattr(owner, attr, replay.fn)

    def record(self, batch: dict) -> None:
        """One step's view outputs (under no_grad: they are the model's inputs, not its work)."""
        with self, torch.no_grad():
            self.method(batch)
        for replay in self.replays.values():
            replay.recording = False


def build(args: argparse.Namespace) -> dict:
    """The method, an optimizer, and one endless batch iterator per path, built as ``selfsup
    pretrain`` builds them (source, tokenizer, decoded cache, loader)."""
    import tempfile

    from lightning_fabric import Fabric

    from selfsup.config import RunConfig
    from selfsup.config_parse import yaml_load
    from selfsup.data import build_source
    from selfsup.data.cache import cacheable, decoded_cache
    from selfsup.methods import METHODS, BuildContext
    from selfsup.run_data import make_loader, prepare_tokenizer

    torch.manual_seed(0)
    cls = METHODS.get(args.method)
    data = args.data or (f"cifar10-shards:{DATA}" if cls.kind == "image" else "wiki")
    config = RunConfig(method=args.method, data=data, backbone=args.backbone,
                       batch_size=args.batch, image_size=32, seq_len=args.seq_len,
                       method_args={k: yaml_load(v) for k, v in args.method_args}, num_workers=args.workers)  # fmt: skip
    source = build_source(data, image_size=32, seed=0)
    if args.cache and cls.kind != "text" and cacheable(source.train):
        source.train = decoded_cache(source.train, source.num_samples, 32, args.workers)
    device = torch.device(args.device)
    fabric = Fabric(accelerator=device.type, devices=1, precision="32-true")  # autocast is ours
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = (
            prepare_tokenizer(config, source, Path(tmp), fabric, cls)
            if cls.kind != "image"
            else None
        )
    ctx = BuildContext.from_config(config, tokenizer, 1, source.num_samples)
    method = cls.build(ctx, **config.method_args).to(device)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(cls.kind, source, tokenizer, config, fabric, method)
    epochs = iter(range(10**6))
    # A fresh iterator (fresh workers) per timed segment, closed after it: workers left running
    # would prefetch during the other paths' segments and slow them down.
    # batches reach the model as the training loop hands them over: moved by Fabric
    opened = {"selfsup": lambda: map(fabric.to_device, loader.epoch(next(epochs)))}
    first = fabric.to_device(next(iter(loader.epoch(0))))
    stages = Stages(method, VIEW_STAGES[args.method])
    stages.record(first)
    if args.method == "simclr":
        shards = sorted(str(p) for p in DATA.glob("train-*.tar"))
        per_image = DataLoader(TorchvisionViews(shards), batch_size=args.batch, num_workers=2,
                               pin_memory=device.type == "cuda")  # fmt: skip
        opened["per-image"] = lambda: (
            tuple(x.to(device, non_blocking=True) for x in views) for views in per_image
        )
    unit = "tokens" if cls.kind == "text" else "images"
    size = (
        (lambda b: int(b["attention_mask"].sum())) if unit == "tokens" else (lambda b: args.batch)
    )
    if args.compile:
        opened["selfsup+compile"] = opened["selfsup"]
    return {"method": method, "optimizer": optimizer, "stages": stages, "first": first,
            "opened": opened, "iters": {}, "unit": unit, "size": size(first), "device": device,
            "compiled": torch.compile(method) if args.compile else None}  # fmt: skip


def step(state: dict, path: str, bf16: bool) -> None:
    method, optimizer = state["method"], state["optimizer"]
    model = state["compiled"] if path.endswith("+compile") else method
    with torch.autocast(state["device"].type, dtype=torch.bfloat16, enabled=bf16):
        if path.startswith("ceiling"):
            with state["stages"]:
                loss = model(state["first"])["loss"]
        elif path.startswith("selfsup"):
            loss = model(next(state["iters"][path]))["loss"]
        else:  # the per-image views, through the same encoder, head and loss as SimCLR's
            x1, x2 = next(state["iters"]["per-image"])
            z1, z2 = method.projector(method.backbone(torch.cat([x1, x2]))).chunk(2)
            loss = method.criterion(z1, z2)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict:
    state = build(args)
    paths = [args.only] if args.only else list(PATHS) + (list(COMPILED) if args.compile else [])
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
                synchronize(state["device"])
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(state, path, bf16)
                synchronize(state["device"])
                # text: the first batch's real tokens per step (packed blocks: every batch's)
                rate = args.steps * state["size"] / (time.perf_counter() - start)
                rates.setdefault(f"{path}|{bf16}", []).append(rate)
                state["iters"].pop(path, None)  # closes the iterator and its workers
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = 0 if args.only == "ceiling" or (args.only == "selfsup" and args.cache) else 2
    # the memory of one path, measured alone: the other paths' loaders are never started
    gpu = state["device"].type == "cuda"
    return {
        "rates": {k: sorted(v)[len(v) // 2] for k, v in rates.items()},
        "peak_mib": (own + workers * children) / 1024,
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
        "unit": state["unit"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default=None, help="default: the method's")
    parser.add_argument("--data", default=None, help="default: CIFAR-10 shards, or wiki for text")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument(
        "--arg", dest="method_args", nargs=2, action="append", default=[], metavar=("KEY", "VALUE")
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument("--workers", type=int, default=2, help="selfsup's decoding workers")
    parser.add_argument("--cache", action="store_true", help="selfsup reads the decoded cache")
    parser.add_argument("--precision", nargs="*", default=["bf16-mixed", "32-true"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=PATHS, help="one path (the memory measurement)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument(
        "--compile", action="store_true", help="also the paths through torch.compile"
    )
    args = parser.parse_args()
    from selfsup.methods import METHODS

    if args.data is None and METHODS.get(args.method).kind != "text" and not DATA.exists():
        print(f"CIFAR-10 shards not found at {DATA}", file=sys.stderr)
        return 1
    torch.set_num_threads(torch.get_num_threads())
    found = measure(args)
    if args.json or args.only:
        print(json.dumps(found))
        return 0
    memory: dict[str, float] = {}
    gpu_memory: dict[str, float] = {}
    rates = found["rates"]
    paths = [p for p in PATHS + COMPILED if any(k.startswith(f"{p}|") for k in rates)]
    if not args.no_memory:
        for path in [p for p in paths if p in PATHS]:
            command = [
                sys.executable,
                __file__,
                "--only",
                path,
                "--steps",
                "2",
                "--repeats",
                "1",
                "--method",
                args.method,
                "--seq-len",
                str(args.seq_len),
                "--batch",
                str(args.batch),
                "--precision",
                args.precision[0],
                "--workers",
                str(args.workers),
                "--device",
                args.device,
            ]
            command += ["--cache"] if args.cache else []  # fmt: skip
            command += ["--backbone", args.backbone] if args.backbone else []
            command += ["--data", args.data] if args.data else []
            command += [x for kv in args.method_args for x in ("--arg", *kv)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            found_path = json.loads(out.strip().splitlines()[-1])
            memory[path] = found_path["peak_mib"]
            if found_path["gpu_peak_mib"] is not None:
                gpu_memory[path] = found_path["gpu_peak_mib"]
    lines = [
        f"Machine: {machine()}",
        "",
        f"Command: `python benchmarks/throughput.py {' '.join(sys.argv[1:])}` ({args.method}, "
        f"{args.backbone or 'its default backbone'}, batch {args.batch}, 32 px, on {args.device}; median of {args.repeats} interleaved "
        f"repeats of {args.steps} steps after warm-up; selfsup: "
        + ("decoded-image cache, no workers" if args.cache else f"{args.workers} workers")
        + ")",
        "",
        f"| precision | path | {found['unit']}/s | of the ceiling | vs per-image | peak memory MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for precision in args.precision:
        bf16 = precision == "bf16-mixed"
        ceiling, base = rates[f"ceiling|{bf16}"], rates.get(f"per-image|{bf16}")
        for path in paths:
            rate = rates[f"{path}|{bf16}"]
            mem = (
                f"{memory[path]:.0f}"
                + (f" (GPU {gpu_memory[path]:.0f})" if path in gpu_memory else "")
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
