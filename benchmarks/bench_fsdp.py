"""Memory and speed of ``strategy=fsdp`` against ``strategy=ddp``: the same pretraining run in 2
processes on this machine (gloo), alternated, each process's peak resident memory and the
training rate.

By default MLM on a BERT-base encoder (110 M parameters, AdamW: per process DDP holds 4 bytes of
parameter, 4 of gradient and 8 of optimizer state per parameter, 1.76 GB; FSDP half of that
with 2 processes, plus the whole parameters of one unit at a time while it runs).

    python benchmarks/bench_fsdp.py                  # prints a markdown table
    python benchmarks/bench_fsdp.py --repeats 1 --steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simclr import machine  # noqa: E402

RUN = """
import json, resource, sys
from pathlib import Path
import torch.distributed as dist
from selfsup.config import load_config
from selfsup.pipeline import pretrain

out, values = sys.argv[1], json.loads(sys.argv[2])
pretrain(load_config(values={**values, "out": out}), overwrite=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
Path(out, f"rss-rank{dist.get_rank()}.txt").write_text(str(peak))
"""


def launch(root: Path, strategy: str, values: dict) -> dict[str, float]:
    script = root / "run.py"
    script.write_text(RUN)
    out = root / strategy
    done = subprocess.run(
        [sys.executable, str(script), str(out), json.dumps({**values, "strategy": strategy})],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{strategy} failed:\n{done.stderr[-3000:]}")
    rates = [json.loads(line)["samples_per_s"] for line in (out / "metrics.jsonl").open()]
    peaks = [float((out / f"rss-rank{r}.txt").read_text()) for r in (0, 1)]
    return {"rate": statistics.median(rates[1:]), "peak": max(peaks)}  # after the first step


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
                found[strategy].append(launch(Path(tmp), strategy, values))
                print(strategy, found[strategy][-1], flush=True)
    rows = {s: {k: statistics.median(r[k] for r in runs) for k in ("rate", "peak")}
            for s, runs in found.items()}  # fmt: skip
    print(f"\n{machine()}\n")
    print(f"Command: `python benchmarks/bench_fsdp.py --method {args.method} --backbone "
          f"{args.backbone} --batch {args.batch} --seq-len {args.seq_len} --steps {args.steps} "
          f"--repeats {args.repeats} --precision {args.precision}` (2 processes, gloo; medians "
          f"of {args.repeats} alternated launches; rate: median over steps after the first)\n")  # fmt: skip
    print("| strategy | peak resident memory per process MiB | vs DDP | samples/s | vs DDP |")
    print("|---|---:|---:|---:|---:|")
    for s, r in rows.items():
        print(f"| {s} | {r['peak']:.0f} | {r['peak'] / rows['ddp']['peak']:.2f}x | "
              f"{r['rate']:.1f} | {r['rate'] / rows['ddp']['rate']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
