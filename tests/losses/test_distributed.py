"""Gathered contrastive losses under two gloo processes equal the single-process global loss,
and the gradients reach every process's samples."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup.losses import clip_loss, nt_xent


def _worker(rank, world, init_file, z1, z2, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        b = z1.shape[0] // world
        results = {}
        for name, fn in (
            ("nt_xent", lambda a, c: nt_xent(a, c, 0.2)),
            ("clip", lambda a, c: clip_loss(a, c, torch.tensor(10.0))),
        ):
            a = z1[rank * b : (rank + 1) * b].clone().requires_grad_(True)
            c = z2[rank * b : (rank + 1) * b].clone().requires_grad_(True)
            loss = fn(a, c)
            loss.backward()
            # The global loss is the mean over processes; DDP averages gradients the same way.
            total = loss.detach().clone()
            dist.all_reduce(total)
            # plain lists: tensors sent through a queue die with the process that sent them
            results[name] = (
                float(total) / world,
                (a.grad / world).tolist(),
                (c.grad / world).tolist(),
            )
        queue.put((rank, results))
    finally:
        dist.destroy_process_group()


def test_two_process_losses_match_single_process(tmp_path):
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init_file = os.path.join(tmp_path, "init")
    procs = [ctx.Process(target=_worker, args=(r, 2, init_file, z1, z2, queue)) for r in range(2)]
    for p in procs:
        p.start()
    out = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    for name, fn in (
        ("nt_xent", lambda a, c: nt_xent(a, c, 0.2)),
        ("clip", lambda a, c: clip_loss(a, c, torch.tensor(10.0))),
    ):
        a, c = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        loss = fn(a, c)
        loss.backward()
        for rank in (0, 1):
            assert abs(out[rank][name][0] - float(loss.detach())) < 1e-5, name
        # The gradient of each sample, summed over the processes that used it (DDP all-reduce).
        grad_a = torch.tensor(out[0][name][1] + out[1][name][1])
        grad_c = torch.tensor(out[0][name][2] + out[1][name][2])
        # Local grads only hold the local query terms; the key terms arrive through all_gather's
        # backward, which torch.distributed.nn sums into the owner's grad.
        assert torch.allclose(grad_a, a.grad, atol=1e-6), name
        assert torch.allclose(grad_c, c.grad, atol=1e-6), name
