"""SimCSE as the paper runs it, from a pretrained encoder, against SimCSE from random weights.

1. A masked-LM run (BERT-Mini, `wiki`, 128-token blocks) for ``--mlm-budget``.
2. SimCSE for ``--simcse-budget`` starting from its export (``method_args.init``), with the
   paper's fine-tuning recipe (AdamW 3e-5, no warm-up, no weight decay, batch 64, 32 tokens).
3. SimCSE for the same budget from random weights (selfsup's from-scratch recipe).

Each encoder is scored on `wiki-topics` (kNN k=20 and linear probe, [CLS] and mean pooling).

    python benchmarks/bench_simcse_init.py --mlm-budget 2m --simcse-budget 1m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_simclr import machine

from selfsup.config import load_config
from selfsup.evaluate import evaluate
from selfsup.pipeline import pretrain

DOWNSTREAM = "wiki-topics"


def run(out: Path, name: str, budget: str, **extra: object) -> Path:
    values = {"data": "wiki", "budget": budget, "backbone": "bert-mini", "precision": "bf16-mixed",
              "num_workers": 1, "checkpoint_every": 100_000, "progress": False,
              "out": str(out / name), **extra}  # fmt: skip
    return pretrain(load_config(values=values), overwrite=True)


def scores(run_dir: Path) -> dict[str, float]:
    row = {}
    for protocol in ("knn", "linear"):
        for pooling in ("cls", "mean"):
            result = evaluate(run_dir, protocol=protocol, data=DOWNSTREAM, k=20, pooling=pooling)
            row[f"{protocol} {pooling}"] = result["top1"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mlm-budget", default="2m")
    parser.add_argument("--simcse-budget", default="1m")
    parser.add_argument("--out", type=Path, default=Path("/tmp/selfsup-bench-simcse"))
    args = parser.parse_args()
    mlm = run(args.out, "mlm", args.mlm_budget, method="mlm", batch_size=32, seq_len=128)
    simcse = {"method": "simcse", "batch_size": 64, "seq_len": 32}
    paper = {"optim": {"lr": 3e-5, "warmup": 0.0, "weight_decay": 0.0}}
    init = {"method_args": {"init": str(mlm / "export")}}
    runs = {
        f"mlm ({args.mlm_budget})": mlm,
        f"simcse from the mlm export (+{args.simcse_budget})": run(
            args.out, "simcse-init", args.simcse_budget, **simcse, **paper, **init
        ),
        f"simcse from random weights ({args.simcse_budget})": run(
            args.out, "simcse-scratch", args.simcse_budget, **simcse
        ),
    }
    rows = {name: scores(path) for name, path in runs.items()}
    for name, path in runs.items():
        rows[name]["steps"] = json.loads((path / "summary.json").read_text())["steps"]
    columns = ["steps", "knn cls", "knn mean", "linear cls", "linear mean"]
    lines = [
        "# SimCSE from a pretrained encoder (the paper's setting) and from random weights",
        "",
        f"Machine: {machine()}",
        "",
        f"Command: `python benchmarks/bench_simcse_init.py --mlm-budget {args.mlm_budget} "
        f"--simcse-budget {args.simcse_budget}` (BERT-Mini; downstream `{DOWNSTREAM}`, top-1 %, "
        "377 test sentences, one SD about 2.5 points; majority class 20.7 %).",
        "",
        "| encoder | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(
            f"| {name} | " + " | ".join(
                str(r[c]) if c == "steps" else f"{r[c]:.1f}" for c in columns
            ) + " |"
            for name, r in rows.items()
        ),
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    Path(__file__).with_name("simcse_init.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
