"""``make demo``: SimCLR on the built-in digits for a few minutes (online kNN accuracy on the
progress line every 50 steps), then kNN accuracy of the learned encoder beside the same encoder
at random initialisation, and the run's HTML report.

    python -m selfsup.demo --budget 3m
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from selfsup.config import load_config
from selfsup.evaluate import evaluate
from selfsup.pipeline import pretrain


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", default="3m", help="pretraining budget (default 3m)")
    parser.add_argument("--out", default="runs/demo-simclr-digits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    config = load_config(
        values={
            "method": "simclr",
            "data": "digits",
            "backbone": "resnet18",
            "budget": args.budget,
            "batch_size": 128,
            "image_size": 32,
            "precision": "bf16-mixed",
            "out": args.out,
            "num_workers": 0,
            "knn_every": 50,
        }
    )
    print(f"SimCLR, ResNet-18 (CIFAR stem), built-in digits, budget {args.budget} on this machine")
    run_dir = pretrain(config, overwrite=True)
    learned = evaluate(run_dir, protocol="knn")
    random = evaluate(run_dir, protocol="knn", random_init=True)
    print(f"\nkNN (k={learned['k']}, T={learned['temperature']}) on the digits test split")
    print(f"  {'encoder':<22}{'top-1 %':>8}")
    print(f"  {'random initialisation':<22}{random['top1']:>8.1f}")
    print(f"  {'SimCLR, ' + str(learned['step']) + ' steps':<22}{learned['top1']:>8.1f}")
    from selfsup.report import report

    page = report(run_dir)
    print(f"\nrun directory: {run_dir} (exported encoder in {run_dir}/export)")
    print(f"report: {page} (open it in a browser)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
