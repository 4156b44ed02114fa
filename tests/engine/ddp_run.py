"""Runs a two-process (gloo, CPU) SimCLR pretraining; used by test_ddp.py as a subprocess, since
Lightning Fabric starts the second process by re-running this script.

    python ddp_run.py OUT [--crash-at STEP] [--resume] [--moco] [--fail-save] [--fail-log]

``--moco`` trains MoCo instead, whose queue DDP does not broadcast (each process fills it with
the same gathered keys); each process then writes its queue to ``OUT/queue-rank{R}.pt``.
``--fail-save``: writing a checkpoint fails (on the first process, which alone writes them).
``--fail-log``: the disk of the metrics is full from the first step (the first process alone
logs them).
"""

import sys

from processes import crash_at

from selfsup.checks import resume_config
from selfsup.config import load_config
from selfsup.methods.base import Method
from selfsup.pipeline import pretrain


def main() -> None:
    out = sys.argv[1]
    if "--crash-at" in sys.argv:
        crash_at(Method, int(sys.argv[sys.argv.index("--crash-at") + 1]))
    if "--fail-save" in sys.argv:
        import selfsup.pipeline

        def full_disk(*args, **kwargs):
            raise OSError("No space left on device")

        selfsup.pipeline.save_checkpoint = full_disk
    if "--fail-log" in sys.argv:
        from selfsup.engine.logging import MetricLogger

        opened = MetricLogger.__init__

        def full_disk_log(self, *args, **kwargs):
            opened(self, *args, **kwargs)
            if self.enabled:
                self._file = open("/dev/full", "w", buffering=1)  # noqa: SIM115

        MetricLogger.__init__ = full_disk_log
    if "--moco" in sys.argv:
        import torch
        import torch.distributed as dist

        from selfsup.methods.moco import MoCo

        original_moco = MoCo.after_step

        def keep_queue(self, step, total):
            original_moco(self, step, total)
            if step == 4:
                ignored = list(getattr(self, "_ddp_params_and_buffers_to_ignore", []))
                torch.save({"queue": self.queue.clone(), "ignored": ignored},
                           f"{out}/queue-rank{dist.get_rank()}.pt")  # fmt: skip

        MoCo.after_step = keep_queue
        values = {"method": "moco", "data": "digits", "image_size": 16, "batch_size": 8,
                  "budget": "4steps", "devices": 2, "accelerator": "cpu", "strategy": "ddp",
                  "num_workers": 0, "log_every": 1, "progress": False, "out": out,
                  "method_args": {"proj_hidden_dim": 32, "proj_dim": 8, "queue_size": 64}}  # fmt: skip
        pretrain(load_config(values=values))
        return
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
