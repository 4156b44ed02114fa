"""Memory and speed of ``strategy=fsdp`` against ``strategy=ddp``: the same pretraining run in 2
processes on this machine (gloo), alternated: the resident memory of the larger process after
each step (median over the steps after the first) and at its peak (the forward and backward
under way; the final checkpoint and export included), and the training rate.

By default MLM on a BERT-base encoder (92 M parameters with the vocabulary selfsup trains on
``lee``) with AdamW: per process DDP holds 4 bytes of parameter, 4 of gradient and 8 of
optimizer state per parameter, 1.5 GB, and its gradient buckets, 0.37 GB; FSDP with 2 processes
half of the 16 bytes, and the whole parameters of a unit while it runs.

    python benchmarks/bench_fsdp.py                  # prints a markdown table
    python benchmarks/bench_fsdp.py --repeats 1 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import machine  # noqa: E402

RUN = """
import json, os, resource, statistics, sys
from pathlib import Path
import torch.distributed as dist
from selfsup.config import load_config
from selfsup.engine.loop import Loop
from selfsup.pipeline import pretrain

held = []  # resident memory after each step, MiB
diagnose = Loop._diagnose
def after_step(self, step):
    held.append(int(open(f"/proc/{os.getpid()}/statm").read().split()[1]) * 4096 / 2**20)
    return diagnose(self, step)
Loop._diagnose = after_step
out, values = sys.argv[1], json.loads(sys.argv[2])
pretrain(load_config(values={**values, "out": out}), overwrite=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
figures = {"peak": peak, "held": statistics.median(held[1:])}
Path(out, f"memory-rank{dist.get_rank()}.json").write_text(json.dumps(figures))
"""


def launch(root: Path, strategy: str, values: dict, memory: bool) -> dict[str, float]:
    """One run's rate and memory; ``memory``: with a fixed mmap threshold, slower."""
    script = root / "run.py"
    script.write_text(RUN)
    out = root / strategy
    # glibc keeps freed blocks of up to 32 MiB in its heap (its mmap threshold rises with each
    # large free), so that resident memory stays at its highest; a fixed threshold returns them
    # and the resident memory follows what the tensors hold, for both strategies alike. It
    # costs speed (a fresh mapping for each block), so the rate comes from a run without it.
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "131072"} if memory else {})}
    done = subprocess.run(
        [sys.executable, str(script), str(out), json.dumps({**values, "strategy": strategy})],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise SystemExit(f"{strategy} failed:\n{done.stderr[-3000:]}")
    rates = [json.loads(line)["samples_per_s"] for line in (out / "metrics.jsonl").open()]
    memory = [json.loads((out / f"memory-rank{r}.json").read_text()) for r in (0, 1)]
    return {"rate": statistics.median(rates[1:]),  # after the first step
            "held": max(m["held"] for m in memory), "peak": max(m["peak"] for m in memory)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="mlm")
    parser.add_argument("--backbone", default="bert-base")
    parser.add_argument("--data", default="lee")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="bf16-mixed")
    args = parser.parse_args()
    values = {"method": args.method, "backbone": args.backbone, "data": args.data,
              "batch_size": args.batch, "seq_len": args.seq_len, "devices": 2,
              "accelerator": "cpu", "budget": f"{args.steps}steps", "precision": args.precision,
              "num_workers": 0, "log_every": 1, "progress": False,
              "checkpoint_every": 10**6}  # fmt: skip
    found: dict[str, list[dict[str, float]]] = {"ddp": [], "fsdp": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for strategy in found:  # alternated
                held = launch(Path(tmp), strategy, values, memory=True)
                rate = launch(Path(tmp), strategy, values, memory=False)["rate"]
                found[strategy].append({**held, "rate": rate})
                print(strategy, found[strategy][-1], flush=True)
    keys = ("rate", "held", "peak")
    rows = {
        s: {k: statistics.median(r[k] for r in runs) for k in keys} for s, runs in found.items()
    }
    print(f"\n{machine()}\n")
    print(f"Command: `python benchmarks/bench_fsdp.py --method {args.method} --backbone "
          f"{args.backbone} --batch {args.batch} --seq-len {args.seq_len} --steps {args.steps} "
          f"--repeats {args.repeats} --precision {args.precision}` (2 processes, gloo; medians "
          f"of {args.repeats} alternated launches; rate: median over steps after the first)\n")  # fmt: skip
    print("| strategy | resident memory between steps MiB | vs DDP | peak MiB | vs DDP "
          "| samples/s | vs DDP |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    d = rows["ddp"]
    for s, r in rows.items():
        print(f"| {s} | {r['held']:.0f} | {r['held'] / d['held']:.2f}x | {r['peak']:.0f} | "
              f"{r['peak'] / d['peak']:.2f}x | {r['rate']:.1f} | {r['rate'] / d['rate']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
