"""Do the label-free diagnostics track accuracy, and does the collapse alarm fire when it should?

Three pretraining runs on the CIFAR-10 shards through ``selfsup.pretrain`` (batch 256, bf16
autocast, ResNet-18 with the CIFAR stem, one process), each logging the diagnostics of 512 fixed
training images every ``--every`` steps and the online kNN accuracy (bank: the first 5,000
training images, queries: the first 1,000 test images, k = 200, T = 0.1) every ``2 * --every``:

* ``simclr``: SimCLR with its defaults, ``--steps`` steps. Does effective rank predict kNN
  accuracy over training? (Spearman correlation over the logged points.)
* ``simsiam-nosg``: SimSiam without the stop-gradient (``method_args.stop_gradient=false``), the
  collapsing ablation of the SimSiam paper (figure 2). When does the alarm fire?
* ``simsiam``: SimSiam with its stop-gradient, the control: the alarm should stay silent.

    python benchmarks/bench_diagnostics.py                       # all three, then the table
    python benchmarks/bench_diagnostics.py --runs simsiam-nosg   # one run; the table uses all found
    python benchmarks/bench_diagnostics.py --table-only

Runs go to ``--out`` (default /tmp/selfsup-bench-diagnostics); the table goes to
``benchmarks/diagnostics.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from selfsup.config import load_config
from selfsup.pipeline import pretrain

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
HERE = Path(__file__).resolve().parent

RUNS = {
    "simclr": ("simclr", {}),
    "simsiam-nosg": ("simsiam", {"stop_gradient": False}),
    "simsiam": ("simsiam", {}),
}


def run(name: str, steps: int, every: int, out: Path) -> Path:
    method, method_args = RUNS[name]
    config = load_config(
        None,
        [],
        {
            "method": method,
            "method_args": method_args,
            "data": f"cifar10-shards:{DATA}",
            "budget": f"{steps}steps",
            "batch_size": 256,
            "precision": "bf16-mixed",
            "num_workers": 2,
            "diagnostics_every": every,
            "diagnostics_samples": 512,
            "knn_every": 2 * every,
            "knn_bank": 5000,
            "knn_queries": 1000,
            "log_every": every,
            "checkpoint_every": 10_000,
            "out": str(out / name),
            "progress": False,
        },
    )
    start = time.perf_counter()
    pretrain(config, overwrite=True)
    print(f"{name}: {steps} steps in {time.perf_counter() - start:.0f} s")
    return out / name


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if "effective_rank" in line]


def alarm(rec: dict) -> str:
    """The verdict the loop announced at this record (logged as ``collapse``)."""
    return {0: "", 1: "dimensional", 2: "complete"}[int(rec.get("collapse", 0))]


FINDINGS = """
## What this shows (run of 2026-11-23, this CPU)

The same kNN protocol on the randomly initialised ResNet-18 scores 26.0 (bank 5,000, 1,000
queries: `selfsup evaluate RUN --protocol knn --random-init --bank-size 5000 --query-size 1000`).

- **The alarm catches the collapsing run within a few hundred steps.** SimSiam without its
  stop-gradient drives the loss towards -1 (-0.92 at step 300, the paper's figure 2). The
  projector's output loses rank first (effective rank 209 -> 77 -> 25 -> 15 -> 9): the alarm
  fires at step 150 (dimensional, 9.0 effective dimensions of 512) and at every diagnostic
  after. The backbone's features lose rank more slowly (117 -> 34) and never cross the
  threshold in 300 steps, which is why the diagnostics also watch the head. kNN falls with the
  rank (32.0 -> 29.2; Spearman 0.94 with either rank).
- **The control stays silent.** SimSiam with its stop-gradient: head effective rank 224-261,
  normalised std 0.98, no alarm; kNN 32.0 -> 32.7.
- **Does effective rank predict kNN accuracy over training?** Only the projector's. In SimCLR's
  500 steps kNN rose from 35.5 to 44.4 while the backbone's effective rank stayed flat
  (128 -> 144 -> 142; Spearman -0.31 with kNN) and the projector's rose with accuracy
  (52 -> 90; Spearman 0.79). In the healthy SimSiam run, where kNN barely moved (32.0 -> 32.7),
  both ranks fell a little (Spearman -0.85). RankMe (Garrido et al. 2023) is shown to rank
  *finished* runs across hyperparameters; over the first epochs of one run, on 512 probe
  samples, the backbone's rank says "not collapsed", not "how good". Read it as an alarm, and
  read online kNN (`knn_every`) for progress.
"""


def table(out: Path) -> str:
    lines = [
        "# Diagnostics over training, and the collapse alarm (CIFAR-10 shards)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads; torch {torch.__version__}. Command: `python benchmarks/bench_diagnostics.py`.",
        "Batch 256, bf16 autocast, ResNet-18 (CIFAR stem). Diagnostics of 512 fixed training "
        "images: effective rank (RankMe) and normalised std of the backbone features and of the "
        "projector output (`head_`); online kNN top-1 of 1,000 test images against 5,000 "
        "training images (k = 200, T = 0.1). The alarm: normalised std < 0.02 (complete "
        "collapse) or effective rank < 2 % of min(N, D) (dimensional).",
        "",
    ]
    for name in RUNS:
        run_dir = out / name
        if not (run_dir / "metrics.jsonl").exists():
            continue
        recs = records(run_dir)
        lines += [
            f"## {name}",
            "",
            "| step | loss | kNN top-1 | eff. rank | norm. std | head eff. rank | head norm. std "
            "| alarm |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in recs:
            knn = f"{r['knn_top1']:.1f}" if "knn_top1" in r else ""
            loss = f"{r['loss']:.3f}" if "loss" in r else ""
            lines.append(
                f"| {r['step']} | {loss} | {knn} | {r['effective_rank']:.1f} "
                f"| {r['normalized_std']:.3f} | {r.get('head_effective_rank', float('nan')):.1f} "
                f"| {r.get('head_normalized_std', float('nan')):.3f} | {alarm(r)} |"
            )
        with_knn = [r for r in recs if "knn_top1" in r]
        if len(with_knn) >= 3:
            rho = spearmanr(
                [r["effective_rank"] for r in with_knn], [r["knn_top1"] for r in with_knn]
            )[0]
            rho_head = spearmanr(
                [r.get("head_effective_rank", 0) for r in with_knn],
                [r["knn_top1"] for r in with_knn],
            )[0]
            lines += [
                "",
                f"Spearman correlation with kNN top-1 over the {len(with_knn)} points: "
                f"effective rank {rho:.2f}, head effective rank {rho_head:.2f}.",
            ]
        fired = [r["step"] for r in recs if alarm(r)]
        lines += ["", f"Alarm first fired at step {fired[0]}." if fired else "Alarm never fired."]
        lines.append("")
    return "\n".join(lines) + FINDINGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=500, help="SimCLR steps")
    parser.add_argument("--collapse-steps", type=int, default=300, help="SimSiam steps")
    parser.add_argument("--every", type=int, default=25, help="steps between diagnostics")
    parser.add_argument("--out", type=Path, default=Path("/tmp/selfsup-bench-diagnostics"))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"CIFAR-10 shards not found at {DATA}; see ../shared/data/README.md")
        return
    if not args.table_only:
        for name in args.runs:
            steps = args.steps if name == "simclr" else args.collapse_steps
            run(name, steps, args.every, args.out)
    text = table(args.out)
    (HERE / "diagnostics.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
