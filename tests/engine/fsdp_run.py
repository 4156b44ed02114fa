"""Runs a two-process (gloo, CPU) BYOL pretraining under DDP or FSDP; used by test_fsdp.py as a
subprocess, since Lightning Fabric starts the second process by re-running this script.

    python fsdp_run.py OUT STRATEGY [--crash-at STEP] [--resume]

``--resume`` continues OUT under STRATEGY (the run may have been saved under the other).

BYOL has a momentum teacher (updated on the shards under FSDP), LARS (norms of sharded tensors)
and a predictor; the run also clips gradients and computes the online kNN and diagnostics, which
gather whole parameters. Rank 0 writes the classes of the sharded units to ``OUT/units.json``.
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist
from processes import crash_at

from selfsup.checks import resume_config
from selfsup.config import load_config
from selfsup.engine import sharding
from selfsup.methods.byol import BYOL
from selfsup.pipeline import pretrain


def main() -> None:
    out, strategy = sys.argv[1], sys.argv[2]
    if "--crash-at" in sys.argv:
        crash_at(BYOL, int(sys.argv[sys.argv.index("--crash-at") + 1]))
    units = []
    shard = sharding.fully_shard

    def recording(module, **kwargs):
        units.append(type(module).__name__)
        return shard(module, **kwargs)

    sharding.fully_shard = recording
    if "--resume" in sys.argv:  # under STRATEGY, which may differ from the saved run's
        pretrain(resume_config(out, [f"strategy={strategy}"]), resume=out)
        return
    values = {"method": "byol", "data": "digits", "image_size": 16, "batch_size": 8,
              "budget": "4steps", "devices": 2, "accelerator": "cpu", "strategy": strategy,
              "num_workers": 0, "checkpoint_every": 2, "log_every": 1, "progress": False,
              "precision": "32-true", "knn_every": 2, "diagnostics_every": 2,
              "diagnostics_samples": 64, "optim": {"clip_grad": 1.0}, "out": out,
              "method_args": {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32}}  # fmt: skip
    pretrain(load_config(values=values))
    if dist.get_rank() == 0:
        Path(out, "units.json").write_text(json.dumps(units))


if __name__ == "__main__":
    main()
