"""Runs a two-process (gloo, CPU) SimCLR pretraining; used by test_ddp.py as a subprocess, since
Lightning Fabric starts the second process by re-running this script.

    python ddp_run.py OUT [--crash-at STEP] [--resume]
"""

import sys

from selfsup.checks import resume_config
from selfsup.config import load_config
from selfsup.methods.base import Method
from selfsup.pipeline import pretrain


class Crash(Exception):
    pass


def main() -> None:
    out = sys.argv[1]
    crash_at = int(sys.argv[sys.argv.index("--crash-at") + 1]) if "--crash-at" in sys.argv else None
    if crash_at is not None:
        original = Method.after_step

        def after_step(self, step, total):
            if step == crash_at:
                raise Crash(f"simulated crash at step {step}")
            original(self, step, total)

        Method.after_step = after_step
    if "--resume" in sys.argv:
        pretrain(resume_config(out), resume=out)
        return
    values = {"method": "simclr", "data": "digits", "image_size": 16, "batch_size": 8,
              "budget": "4steps", "devices": 2, "accelerator": "cpu", "strategy": "ddp",
              "num_workers": 0, "checkpoint_every": 2, "log_every": 1, "progress": False,
              "out": out, "method_args": {"proj_hidden_dim": 32, "proj_dim": 8}}  # fmt: skip
    pretrain(load_config(values=values))


if __name__ == "__main__":
    main()
