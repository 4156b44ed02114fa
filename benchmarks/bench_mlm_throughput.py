"""MLM training throughput: selfsup's masked LM beside a plain transformers loop, same process.

The plain loop is what the Hugging Face examples do without `group_texts`: each document
tokenised on its own and truncated to the block length, `DataCollatorForLanguageModeling`
padding each batch to its longest member and masking 15 %, `BertForMaskedLM` and AdamW. selfsup
packs documents into full blocks (no padding), masks on the device and trains the same
`BertForMaskedLM` configuration. Both are timed in the same harness (data already tokenised in
memory, so the figures compare model steps on the batches each approach produces), interleaved
and repeated after warm-up steps; tokens/s counts real (non-padding) tokens only.

    python benchmarks/bench_mlm_throughput.py                 # BERT-Mini, 128 tokens, batch 32
    python benchmarks/bench_mlm_throughput.py --data lee --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from bench_simclr import machine
from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

from selfsup.data import build_source
from selfsup.data.packing import PackedBlocks
from selfsup.data.tokenizer import train_tokenizer
from selfsup.methods import BuildContext, create_method
from selfsup.run_data import texts_of


def documents(data: str, limit: int) -> list[str]:
    return texts_of(build_source(data, image_size=32, seed=0, shuffle_buffer=0), limit)


def hf_batches(texts: list[str], tokenizer, seq_len: int, batch: int) -> list[dict]:
    """Per-document truncated encodings, padded per batch by the transformers collator."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    encoded = [tokenizer(t, truncation=True, max_length=seq_len) for t in texts]
    encoded = [{"input_ids": e["input_ids"]} for e in encoded if len(e["input_ids"]) > 2]
    return [collator(encoded[i : i + batch]) for i in range(0, len(encoded) - batch + 1, batch)]


def selfsup_batches(texts: list[str], tokenizer, seq_len: int, batch: int) -> list[dict]:
    blocks = PackedBlocks([{"text": t} for t in texts], tokenizer, seq_len)
    loader = torch.utils.data.DataLoader(blocks, batch_size=batch, drop_last=True)
    return list(loader)


def time_steps(step, batches: list[dict], steps: int, bf16: bool) -> tuple[float, int]:
    """Seconds and real tokens for ``steps`` optimizer steps cycling over ``batches``."""
    tokens, start = 0, time.perf_counter()
    for batch in itertools.islice(itertools.cycle(batches), steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step(batch)
        tokens += int(batch["attention_mask"].sum())
    return time.perf_counter() - start, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="wiki")
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--markdown", type=Path, default=Path(__file__).with_name("mlm_throughput.md")
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    texts = documents(args.data, args.documents)
    tokenizer = train_tokenizer(texts, kind="wordpiece", vocab_size=8000)
    ctx = BuildContext("bert-mini", tokenizer=tokenizer, seq_len=args.seq_len)

    method = create_method("mlm", ctx)
    hf_model = BertForMaskedLM(method.model.config)
    hf_model.load_state_dict(method.model.state_dict())
    opt_ours = torch.optim.AdamW(method.parameters(), lr=5e-4)
    opt_hf = torch.optim.AdamW(hf_model.parameters(), lr=5e-4)

    def ours(batch: dict) -> None:
        opt_ours.zero_grad(set_to_none=True)
        method(batch)["loss"].backward()
        opt_ours.step()

    def plain(batch: dict) -> None:
        opt_hf.zero_grad(set_to_none=True)
        hf_model(**batch).loss.backward()
        opt_hf.step()

    data = {
        "transformers loop": hf_batches(texts, tokenizer, args.seq_len, args.batch),
        "selfsup": selfsup_batches(texts, tokenizer, args.seq_len, args.batch),
    }
    runners = {"transformers loop": plain, "selfsup": ours}
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):  # interleaved: each repeat times every configuration once
        for precision in ("fp32", "bf16"):
            for name, run in runners.items():
                time_steps(run, data[name], args.warmup, precision == "bf16")
                seconds, tokens = time_steps(run, data[name], args.steps, precision == "bf16")
                rates.setdefault((name, precision), []).append(tokens / seconds)
                print(f"{name} {precision}: {tokens / seconds:,.0f} tokens/s", flush=True)

    padding = 1 - float(
        sum(int(b["attention_mask"].sum()) for b in data["transformers loop"])
        / sum(b["attention_mask"].numel() for b in data["transformers loop"])
    )
    best = {key: max(values) for key, values in rates.items()}
    lines = [
        "# MLM training throughput (BERT-Mini)",
        "",
        f"Machine: {machine()}",
        "",
        f"Command: `python benchmarks/bench_mlm_throughput.py --data {args.data} --seq-len "
        f"{args.seq_len} --batch {args.batch} --steps {args.steps} --repeats {args.repeats}` "
        f"(best of {args.repeats} interleaved repeats after {args.warmup} warm-up steps; real "
        f"tokens only; the transformers loop's batches are {100 * padding:.0f} % padding).",
        "",
        "| loop | fp32 tokens/s | bf16 tokens/s | ratio to the transformers loop (bf16) |",
        "|---|---:|---:|---:|",
    ]
    for name in runners:
        ratio = best[(name, "bf16")] / best[("transformers loop", "bf16")]
        lines.append(
            f"| {name} | {best[(name, 'fp32')]:,.0f} | {best[(name, 'bf16')]:,.0f} | {ratio:.2f}x |"
        )
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
