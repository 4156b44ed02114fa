"""Every text objective on a built-in corpus for the same wall-clock budget, then evaluated.

Each method pretrains from scratch on the same corpus (default: `wiki`, the English Wikipedia
sample gensim ships) for the same budget on this machine, with the same encoder size where the
objective has an encoder (BERT-Mini: 4 layers, 256 hidden), blocks of 128 tokens, batch 32, bf16
autocast. Then:

* the objective's own figure: held-out masked-token accuracy (MLM family), pseudo-perplexity,
  causal-LM perplexity, word similarity and analogy (word2vec);
* one downstream table at equal compute: topic classification on `wiki-topics` (1,506
  sentences of the 8 articles `wiki` holds out, labelled by article; 377 test sentences) with
  kNN and a linear probe on frozen features pooled the method's default way (mean for most,
  [CLS] for SimCSE), beside the same encoder at its random initialisation; the linear probe on
  [CLS] features where the encoder has one; and full fine-tuning.

    python benchmarks/bench_text_methods.py --budget 3m
    python benchmarks/bench_text_methods.py --budget 3m --methods mlm gpt
    python benchmarks/bench_text_methods.py --rescore     # evaluate the runs in --out again
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import yaml
from bench_simclr import machine

from selfsup.config import load_config
from selfsup.evaluate import evaluate
from selfsup.methods import METHODS
from selfsup.pipeline import pretrain

METHODS_IN_ORDER = [
    "mlm",
    "bert",
    "roberta",
    "albert",
    "electra",
    "t5",
    "gpt",
    "simcse",
    "word2vec",
]
# The objective's own figure: protocol -> (result key, label).
OWN_FIGURES = {
    "mlm": ("masked_token_acc", "masked-token acc %"),
    "pseudo_perplexity": ("pseudo_perplexity", "pseudo-perplexity"),
    "perplexity": ("perplexity", "perplexity"),
    "wordsim": ("wordsim353_spearman", "WordSim-353 Spearman"),
    "analogy": ("total_accuracy", "analogy acc %"),
}
DOWNSTREAM = "wiki-topics"


def pretrain_one(name: str, budget: str, data: str, out: Path) -> Path:
    values = {
        "method": name,
        "data": data,
        "budget": budget,
        "batch_size": 32,
        "seq_len": 128,
        "precision": "bf16-mixed",
        "num_workers": 1,
        "out": str(out / name),
        "checkpoint_every": 100_000,
        "progress": False,
    }
    if name == "word2vec":  # steps of about 1,000 words (see the method's docstring)
        values.update(batch_size=1, seq_len=1000)
    else:
        values["backbone"] = "bert-mini"
    return pretrain(load_config(values=values), overwrite=True)


def figures(run: Path, name: str) -> dict:
    """Own-objective figures and downstream figures (trained and random init)."""
    protocols = METHODS.get(name).protocols
    row: dict = {}
    for protocol, (key, label) in OWN_FIGURES.items():
        if protocol in protocols:
            result = evaluate(run, protocol=protocol)
            row[label] = result.get(key)
    for random_init in (False, True):
        suffix = " (random init)" if random_init else ""
        for protocol in ("knn", "linear"):
            result = evaluate(
                run, protocol=protocol, data=DOWNSTREAM, k=20, random_init=random_init
            )
            row[f"{protocol}{suffix}"] = result["top1"]
    if "cls" in METHODS.get(name).poolings:
        result = evaluate(run, protocol="linear", data=DOWNSTREAM, pooling="cls")
        row["linear [CLS]"] = result["top1"]
    if "finetune" in protocols:
        row["finetune"] = evaluate(run, protocol="finetune", data=DOWNSTREAM)["top1"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--data", default="wiki")
    parser.add_argument("--methods", nargs="*", default=METHODS_IN_ORDER)
    parser.add_argument("--out", type=Path, default=Path("/tmp/selfsup-bench-text"))
    parser.add_argument(
        "--markdown", type=Path, default=Path(__file__).with_name("text_methods.md")
    )
    parser.add_argument(
        "--rescore", action="store_true", help="evaluate the runs in --out again; no training"
    )
    args = parser.parse_args()
    previous = {}
    if args.rescore:  # the budget the runs in --out were trained with
        config = yaml.safe_load((args.out / args.methods[0] / "config.yaml").read_text())
        args.budget = config["budget"]
    if args.rescore and (args.out / "results.json").exists():
        previous = {
            r["method"]: r for r in json.loads((args.out / "results.json").read_text())["rows"]
        }
    rows = []
    for name in args.methods:
        start = time.perf_counter()
        try:
            if args.rescore:
                run = args.out / name
            else:
                run = pretrain_one(name, args.budget, args.data, args.out)
            summary = json.loads((run / "summary.json").read_text())
            row = {"method": name, "steps": summary["steps"], **figures(run, name)}
        except Exception as exc:  # a failing method is a row with its error, not a lost table
            traceback.print_exc()
            row = {"method": name, "error": f"{type(exc).__name__}: {exc}"}
        row["seconds"] = round(time.perf_counter() - start)
        if args.rescore and name in previous:  # keep the training time of the original run
            row["seconds"] = previous[name].get("seconds", row["seconds"])
        rows.append(row)
        print(json.dumps(row), flush=True)

    columns = ["steps", "knn", "knn (random init)", "linear", "linear (random init)",
               "linear [CLS]", "finetune"]  # fmt: skip
    lines = [
        "# Text objectives at equal wall-clock budget",
        "",
        f"Machine: {machine()}",
        "",
        f"Command: `python benchmarks/bench_text_methods.py --budget {args.budget} --data "
        f"{args.data}` (BERT-Mini-sized encoders, 128-token blocks, batch 32, bf16 autocast; "
        f"downstream: `{DOWNSTREAM}`, kNN k=20 and linear probe on frozen features, top-1 %).",
        "",
        "The majority class of `wiki-topics` is 20.7 % of its test sentences; with 377 test",
        "sentences one standard deviation of an accuracy near 60 % is about 2.5 points.",
        "",
        "## Downstream sentence classification",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['method']} | failed: {row['error']} |")
            continue
        cells = [row.get(c) for c in columns]
        lines.append(
            f"| {row['method']} | "
            + " | ".join(
                "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in cells
            )
            + " |"
        )
    lines += [
        "",
        "## Each objective's own figure",
        "",
        "| method | figure | value |",
        "|---|---|---:|",
    ]
    for row in rows:
        for _, label in OWN_FIGURES.values():
            if row.get(label) is not None:
                lines.append(f"| {row['method']} | {label} | {row[label]:.3g} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"rows": rows}, indent=2))
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
