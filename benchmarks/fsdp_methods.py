"""Every method under ``strategy=fsdp`` against ``strategy=ddp``: 3 steps of each in 2 CPU
processes (gloo), fp32, tiny settings (those of ``tests/methods/test_methods.py``), then the
losses logged and the weights and optimizer state of the final checkpoints compared.

    python benchmarks/fsdp_methods.py            # every method (about 12 minutes on 2 cores)
    python benchmarks/fsdp_methods.py mae clip   # some
    python benchmarks/fsdp_methods.py --min-params 20000   # tiny layers as units of their own

T5 runs with AdamW, as Adafactor cannot update sharded parameters, and word2vec with dense
gradients (``sparse: false``); in two processes it trains through the optimizer, as under DDP.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "methods")]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import machine  # noqa: E402
from test_methods import BACKBONE, BACKBONE_FOR, TINY  # noqa: E402

from conftest import CORPUS  # noqa: E402
from selfsup.data.tokenizer import train_tokenizer  # noqa: E402
from selfsup.engine import sharding  # noqa: E402
from selfsup.methods import METHODS  # noqa: E402

RUN = """
import json, sys
from selfsup.config import load_config
from selfsup.engine import sharding
from selfsup.pipeline import pretrain
sharding.MIN_PARAMS = int(sys.argv[2])
pretrain(load_config(values=json.loads(sys.argv[1])), overwrite=True)
"""


def settings(name: str, tokenizer: Path) -> dict:
    cls = METHODS.get(name)
    values = {"method": name, "data": {"image": "digits", "text": "lee", "pair": "shapes:64"}[cls.kind],
              "backbone": BACKBONE_FOR.get(name, BACKBONE[cls.kind]), "image_size": 16,
              "batch_size": 8, "seq_len": 16, "budget": "3steps", "devices": 2,
              "accelerator": "cpu", "num_workers": 0, "checkpoint_every": 3, "log_every": 1,
              "progress": False, "precision": "32-true", "method_args": TINY[name]}  # fmt: skip
    if name == "word2vec":  # FSDP shards dense gradients only
        values["method_args"] = {**TINY[name], "sparse": False}
    if name == "t5":  # its tokenizer needs sentinels: the method trains its own
        values["optim"] = {"name": "adamw"}
    elif cls.kind != "image":  # one tokenizer for both runs (training ties break by hash order)
        values["tokenizer"] = {"path": str(tokenizer)}
    return values


def difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """(largest absolute difference, difference relative to the whole), over tensors taken
    together: a tensor's own relative difference means little when its norm is near zero (a bias
    that moved by 1e-9 from zero)."""
    if not a:
        return 0.0, 0.0
    largest = max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True)
                  if x.numel())  # fmt: skip
    squares = sum(
        float((x.double() - y.double()).square().sum()) for x, y in zip(a, b, strict=True)
    )
    total = sum(float(x.double().square().sum()) for x in a)
    return largest, (squares / max(total, 1e-300)) ** 0.5


def compare(name: str, root: Path, tokenizer: Path, min_params: int) -> str:
    script = root / "run.py"
    script.write_text(RUN)
    found = {}
    for strategy in ("ddp", "fsdp"):
        out = root / f"{name}-{strategy}"
        values = {**settings(name, tokenizer), "strategy": strategy, "out": str(out)}
        done = subprocess.run([sys.executable, str(script), json.dumps(values), str(min_params)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            return f"| {name} | failed under {strategy}: {done.stderr.strip().splitlines()[-1]} |"
        state = torch.load(out / "checkpoints" / "step-00000003" / "state.pt", weights_only=True)
        losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").open()]
        found[strategy] = (state, losses)
    (a, la), (b, lb) = found["ddp"], found["fsdp"]
    keys = [k for k, v in a["method"].items() if v.is_floating_point()]
    weights = difference([a["method"][k] for k in keys], [b["method"][k] for k in keys])
    pairs = [(v, b["optimizer"]["state"][i][k]) for i, s in a["optimizer"]["state"].items()
             for k, v in s.items() if torch.is_tensor(v) and v.is_floating_point()]  # fmt: skip
    moments = difference([x for x, _ in pairs], [y for _, y in pairs])
    loss = max(abs(x - y) / abs(x) for x, y in zip(la, lb, strict=True))
    return (f"| {name} | {la[-1]:.4f} | {lb[-1]:.4f} | {loss:.0e} | {weights[0]:.0e} | "
            f"{weights[1]:.0e} | {moments[1]:.0e} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="methods (default: all)")
    parser.add_argument("--min-params", type=int, default=sharding.MIN_PARAMS,
                        help="parameters per sharded unit (lower: more units in tiny models)")  # fmt: skip
    args = parser.parse_args()
    names = args.names or METHODS.names()
    flag = "" if args.min_params == sharding.MIN_PARAMS else f" --min-params {args.min_params}"
    print(f"{machine()}\n\nCommand: `python benchmarks/fsdp_methods.py{flag}`\n")
    print("| method | loss at step 3, DDP | FSDP | loss difference (relative, largest of 3 "
          "steps) | largest weight difference | weights, relative | optimizer state, relative "
          "|\n|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = Path(tmp) / "tokenizer"
        train_tokenizer(CORPUS * 20, kind="wordpiece", vocab_size=300).save_pretrained(tokenizer)
        for name in names:
            print(compare(name, Path(tmp), tokenizer, args.min_params), flush=True)


if __name__ == "__main__":
    main()
