"""Command line: a thin layer over the Python API.

selfsup pretrain --method simclr --data digits --budget 2m --out runs/demo
selfsup pretrain --config run.yaml optim.lr=0.1 method_args.temperature=0.2
selfsup pretrain --resume runs/demo
selfsup evaluate runs/demo --protocol knn --k 200 --temperature 0.1
selfsup embed runs/demo --out emb.npy
selfsup report runs/demo                      # runs/demo/report.html
selfsup compare runs/a runs/b --out compare.html
selfsup list
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from selfsup.catalog import catalog, describe
from selfsup.config import ConfigError, load_config

log = logging.getLogger("selfsup")

# Flags of `pretrain` that map directly onto RunConfig keys.
PRETRAIN_FLAGS = (
    "method",
    "data",
    "backbone",
    "budget",
    "batch_size",
    "image_size",
    "seq_len",
    "precision",
    "devices",
    "num_nodes",
    "strategy",
    "num_workers",
    "out",
    "seed",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup", description="Self-supervised pretraining, evaluation and export."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain an encoder")
    p.add_argument("--config", help="YAML run config")
    p.add_argument("--method", help="method name (see `selfsup list`)")
    p.add_argument("--data", help="data spec, e.g. digits, folder:PATH, shards:PATH, text:PATH")
    p.add_argument("--backbone", help="encoder name (see `selfsup list`)")
    p.add_argument("--budget", help="steps (2000), epochs (5epochs) or wall clock (10m)")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--seq-len", dest="seq_len", type=int, help="tokens per text block / caption")
    p.add_argument("--num-workers", dest="num_workers", type=int, help="decoding workers")
    p.add_argument(
        "--precision", help="auto (bf16-mixed where the device computes bf16), 32-true, bf16-mixed"
    )
    p.add_argument("--devices", type=int, help="processes per machine (GPUs, or CPU processes)")
    p.add_argument("--num-nodes", dest="num_nodes", type=int, help="machines")
    p.add_argument(
        "--strategy", help="ddp (a whole model per process) or fsdp (sharded); default auto"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.1"
    )

    e = sub.add_parser("evaluate", help="evaluate a run's encoder")
    e.add_argument("run_dir")
    e.add_argument(
        "--protocol",
        default="knn",
        help="knn (default), linear, fewshot, finetune, ...: `selfsup list` names them all, "
        "`selfsup list PROTOCOL` gives one's options",
    )
    e.add_argument(
        "--arg",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of a registered protocol (repeatable)",
    )
    e.add_argument("--data", help="evaluation data (default: the run's)")
    e.add_argument("--k", type=int, default=200, help="kNN neighbours (default 200)")
    e.add_argument(
        "--temperature", type=float, default=0.1, help="kNN vote temperature (default 0.1)"
    )
    e.add_argument(
        "--bank-size",
        dest="bank_size",
        type=int,
        help="N training samples as memory bank: a fixed random subset (seed 0); "
        "the first N of tar shards",
    )
    e.add_argument(
        "--query-size",
        dest="query_size",
        type=int,
        help="N test samples as queries, drawn as --bank-size's",
    )
    e.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    e.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    e.add_argument(
        "--random-init",
        dest="random_init",
        action="store_true",
        help="evaluate the untrained encoder (baseline)",
    )
    e.add_argument(
        "--pooling",
        help="text encoders: pool token states by mean, cls or last (default: the method's)",
    )
    e.add_argument(
        "--no-cache", dest="cache", action="store_false",
        help="do not keep frozen features in RUN_DIR/features/ (kept by default)",
    )  # fmt: skip

    m = sub.add_parser("embed", help="write a run's embeddings of a dataset to .npy")
    m.add_argument("run_dir")
    m.add_argument("--out", required=True)
    m.add_argument("--data", help="data spec (default: the run's)")
    m.add_argument("--split", default="test", choices=("train", "test"))
    m.add_argument("--limit", type=int)
    m.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    m.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    m.add_argument("--pooling", help="text encoders: mean, cls or last (default: the method's)")

    r = sub.add_parser("report", help="write a self-contained HTML report of a run")
    r.add_argument("run_dir")
    r.add_argument("--out", help="HTML file (default RUN_DIR/report.html)")
    r.add_argument("--data", help="data to embed (default: the run's)")
    r.add_argument("--samples", type=int, default=1000, help="test samples embedded (1000)")
    r.add_argument(
        "--bank-size", dest="bank_size", type=int, default=2000,
        help="training samples searched for neighbours (2000)",
    )  # fmt: skip
    r.add_argument("--queries", type=int, default=6, help="queries in the neighbour grid (6)")
    r.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    r.add_argument(
        "--no-embeddings", dest="embeddings", action="store_false",
        help="curves and results only: do not load the encoder",
    )  # fmt: skip

    c = sub.add_parser("compare", help="write one HTML page comparing runs")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--out", required=True, help="HTML file")

    ls = sub.add_parser(
        "list",
        help="list methods, backbones, datasets and protocols; or one method's paper and "
        "defaults, or one protocol's options",
    )
    ls.add_argument(
        "method",
        nargs="?",
        help="a method (its paper and method_args defaults) or an evaluation protocol (what it "
        "measures and its --arg options)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``selfsup`` command; returns the exit code."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    # key=value overrides may come after flags too (`--out run optim.lr=0.1`): argparse only takes a
    # positional list in one piece, so the pieces it leaves over are collected here.
    overrides = [a for a in rest if "=" in a and not a.startswith("-")]
    if len(overrides) < len(rest) or (overrides and args.command != "pretrain"):
        # the subcommand's usage line, which lists its flags (`--budjet` is a typo of one)
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(rest)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from selfsup.data import DataError
    from selfsup.engine.logging import SHOW_PROGRESS
    from selfsup.registry import UnknownNameError

    # embedding a large split takes minutes on a CPU: evaluate, embed and report say how far
    progress = SHOW_PROGRESS.set(args.command in ("evaluate", "embed", "report"))
    try:
        if args.command == "list":
            print(describe(args.method) if args.method else catalog())
        elif args.command == "pretrain":
            from selfsup.checks import resume_config
            from selfsup.pipeline import pretrain

            values = {k: getattr(args, k) for k in PRETRAIN_FLAGS if getattr(args, k) is not None}
            if args.resume:
                if args.config:
                    raise ConfigError("--resume uses the run's saved config; drop --config")
                config = resume_config(args.resume, args.overrides, values)
            else:
                config = load_config(args.config, args.overrides, values)
            from selfsup.data.faults import TooManyFaultsError
            from selfsup.engine.guard import (
                CollapseError,
                Interrupted,
                NonFiniteLossError,
                WriteFailed,
            )
            from selfsup.launch import OtherProcessFailed, is_global_zero

            try:
                run_dir = pretrain(config, resume=args.resume, overwrite=args.overwrite)
            except OtherProcessFailed as err:  # process 0 prints the error itself
                print(f"selfsup: stopped: {err}", file=sys.stderr)
                return 1
            except (NonFiniteLossError, CollapseError, TooManyFaultsError) as err:
                if is_global_zero():  # every process stopped alike: one message
                    print(f"selfsup: run stopped: {err}", file=sys.stderr)
                return 3
            except Interrupted as err:
                if is_global_zero():
                    print(f"selfsup: {err}", file=sys.stderr)
                return 130  # the shell's code for Ctrl-C
            except WriteFailed as err:  # raised by every process for the metrics, by process 0
                if is_global_zero():  # alone for a checkpoint (the others: OtherProcessFailed)
                    print(f"selfsup: run stopped: {err}", file=sys.stderr)
                return 1
            if is_global_zero():
                print(f"run directory: {run_dir}")
        elif args.command == "evaluate":
            from selfsup.evaluate import evaluate

            extra = {}
            for item in args.extra:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ConfigError(f"--arg expects KEY=VALUE, got {item!r}")
                extra[key] = value
            result = evaluate(
                args.run_dir, args.protocol, args.data, args.k, args.temperature,
                args.bank_size, args.query_size, args.batch_size, args.device,
                random_init=args.random_init, extra=extra, pooling=args.pooling, cache=args.cache,
            )  # fmt: skip
            # The confusion matrix and the diagnostics' 64-value spectrum stay in results.jsonl
            # (and the report), off the terminal.
            hidden = ("confusion", "classes", "spectrum")
            shown = {k: v for k, v in result.items() if k not in hidden}
            print(json.dumps(_rounded(shown), indent=2))
        elif args.command == "embed":
            from selfsup.evaluate import embed

            out = embed(
                args.run_dir,
                args.out,
                args.data,
                args.split,
                args.batch_size,
                args.limit,
                args.device,
                pooling=args.pooling,
            )
            import numpy as np

            from selfsup.evaluate.api import labels_path

            shape = np.load(out, mmap_mode="r").shape
            labels = labels_path(out)
            also = f" and its labels to {labels}" if labels.is_file() else ""
            print(f"wrote {shape[0]:,} embeddings of {shape[1]} dimensions to {out}{also}")
        elif args.command == "report":
            from selfsup.report import report

            out = report(
                args.run_dir, args.out, args.data, args.samples, args.bank_size, args.queries,
                args.device, embeddings=args.embeddings,
            )  # fmt: skip
            print(f"wrote {out}")
        elif args.command == "compare":
            from selfsup.report import compare

            print(f"wrote {compare(args.run_dirs, args.out)}")
    except (ConfigError, DataError, UnknownNameError, FileExistsError) as err:
        print(f"selfsup: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves its step and stops), e.g.
        # while decoding the data into memory or embedding a split
        print(f"selfsup: {args.command} interrupted", file=sys.stderr)
        return 130
    finally:
        SHOW_PROGRESS.reset(progress)
    return 0


def _rounded(value: Any) -> Any:  # noqa: ANN401
    """``value`` with its floats cut to 7 significant digits, for the terminal (float32 figures
    such as 31.49999976 print as 31.5; results.jsonl keeps them whole)."""
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _one_line(err: Exception) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker (whose message holds
    the worker's whole traceback), the original message only."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
