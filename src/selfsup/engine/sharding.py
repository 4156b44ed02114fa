"""Fully sharded data parallelism (``strategy: fsdp``): each process keeps a 1/N share of every
parameter, gradient and optimizer state, and gathers whole parameters only while a module runs
(Zhao et al. 2023, "PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel"; ZeRO-3 in
Rajbhandari et al. 2020). It runs through Lightning Fabric's ``ModelParallelStrategy`` with
PyTorch's per-parameter sharding (``fully_shard``, "FSDP2"), which also runs on CPU with gloo.

What the rest of selfsup assumes, whole tensors, holds at its edges:

* checkpoints hold whole tensors in the layout a DDP run writes (:func:`full_state`), and a
  resume cuts them back into each process's share (:func:`shard_state_like`);
* the probe, the online kNN and the export see whole parameters (:func:`gathered`);
* the gradient norm sums every process's share (:func:`grad_norm`).

Scalar parameters (CLIP's temperature) stay whole on every process, their gradients averaged as
DDP would. Not sharded, refused by the pipeline: sparse gradients, Adafactor's factored moments.

Which modules shard as a unit (:func:`shard_method`): the blocks, i.e. the elements of an
``nn.Sequential`` or ``nn.ModuleList`` (ResNet blocks, transformer layers, a projector's linear
layers) with at least ``min_params`` parameters not already in a smaller unit, from the leaves
up; the method itself holds the rest. FSDP gathers a unit's parameters when its ``forward``
runs, and a block's container always calls that; larger modules are not units because methods
call other entry points of them (``forward_features`` of a timm model). A block whose
parameters are tied to a module outside it (BERT's output embedding, ELECTRA's shared
embeddings) is not a unit: tied parameters stay in one unit with every user of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from selfsup.config import ConfigError

try:  # torch >= 2.6
    from torch.distributed.fsdp import FSDPModule, fully_shard
except ImportError:  # torch 2.4, 2.5
    from torch.distributed._composable.fsdp import FSDPModule, fully_shard  # type: ignore[no-redef]
try:  # torch >= 2.5
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # torch 2.4
    from torch.distributed._tensor import DTensor, distribute_tensor  # type: ignore[no-redef]

MIN_PARAMS = 1_000_000  # parameters per sharded unit, below which a module joins its parent's


def _owners(root: nn.Module) -> dict[int, set[int]]:
    """For each parameter (by id), the ids of the modules that register it (more than one when
    it is tied)."""
    owners: dict[int, set[int]] = {}
    for module in root.modules():
        for param in module._parameters.values():
            if param is not None:
                owners.setdefault(id(param), set()).add(id(module))
    return owners


def shard_method(method: nn.Module, mesh: Any, min_params: int | None = None) -> nn.Module:  # noqa: ANN401
    """Shard ``method`` in place over ``mesh`` (a 1-D device mesh, or Fabric's 2-D mesh whose
    ``data_parallel`` dimension is used) and return it; units of at least ``min_params``
    parameters (default :data:`MIN_PARAMS`)."""
    min_params = MIN_PARAMS if min_params is None else min_params
    if getattr(mesh, "mesh_dim_names", None) and "data_parallel" in mesh.mesh_dim_names:
        mesh = mesh["data_parallel"]
    for param in method.parameters():  # FSDP shards contiguous tensors only (not channels_last)
        if not param.is_contiguous():
            param.data = param.data.contiguous()
    owners = _owners(method)
    done: set[int] = set()  # parameters already in a unit
    kwargs: dict[str, Any] = {"mesh": mesh}
    scalars = {p for p in method.parameters() if p.ndim == 0}  # CLIP's temperature: FSDP
    if scalars:  # shards tensors of one dimension or more; these stay whole on every process
        if "ignored_params" not in inspect.signature(fully_shard).parameters:
            raise ConfigError(
                f"strategy=fsdp: {type(method).__name__} has scalar parameters, which this "
                f"torch ({torch.__version__}) cannot leave unsharded; use torch>=2.7 or "
                "strategy=ddp"
            )
        kwargs["ignored_params"] = scalars
        device = torch.device(mesh.device_type)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        for param in scalars:  # FSDP moves the parameters it shards to the device, not these
            param.data = param.data.to(device)
            param.register_post_accumulate_grad_hook(_average_grad)
        done.update(id(p) for p in scalars)

    def visit(module: nn.Module, block: bool) -> tuple[set[int], set[int]]:
        """Shard units below ``module`` (``block``: an element of a sequence); returns (the ids
        of the parameters still free in its subtree, the ids of the modules in its subtree)."""
        free: set[int] = set()
        inside = {id(module)}
        sequence = isinstance(module, nn.Sequential | nn.ModuleList)
        for child in module.children():
            child_free, child_inside = visit(child, sequence)
            free |= child_free
            inside |= child_inside
        free |= {id(p) for p in module._parameters.values() if p is not None} - done
        if not block or not free:
            return free, inside
        size = sum(p.numel() for p in module.parameters() if id(p) in free)
        tied_outside = any(not owners[p] <= inside for p in free)
        if size >= min_params and not tied_outside:
            fully_shard(module, **kwargs)
            done.update(free)
            return set(), inside
        return free, inside

    visit(method, False)
    fully_shard(method, **kwargs)
    return method


def _average_grad(param: Tensor) -> None:
    """The mean over the processes of an unsharded parameter's gradient, as DDP would make it
    (again after each micro-batch: the part already averaged is the same everywhere)."""
    if torch.distributed.is_initialized() and param.grad is not None:
        torch.distributed.all_reduce(param.grad)
        param.grad /= torch.distributed.get_world_size()


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` was sharded by :func:`shard_method`."""
    return isinstance(module, FSDPModule)


@contextmanager
def gathered(method: nn.Module) -> Iterator[None]:
    """Let the block call any part of a sharded ``method`` outside its ``forward`` (the probe,
    the online kNN): the method's own unit is gathered for the block, and the block units gather
    themselves as they run, one at a time. Rank 0's buffers (batch-norm statistics, which each
    process updates from its own batches) are given to every process first, as DDP does before
    each forward, so that every process computes the same figures and takes the same decisions.
    A no-op for any other module; a collective: every process must enter it."""
    if not isinstance(method, FSDPModule):
        yield
        return
    if hasattr(method, "_get_fsdp_state"):
        # FSDP takes the first unit to run as the root: make it the method, before a part runs
        method._get_fsdp_state()._lazy_init()
    replicated = set(getattr(method, "replicated_buffers", ()))  # kept alike by the method itself
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        for name, buffer in method.named_buffers():
            if name not in replicated:
                torch.distributed.broadcast(buffer, src=0)
    method.unshard()
    try:
        yield
    finally:
        method.reshard()


def full_state(state: Any, keep: bool = True) -> Any:  # noqa: ANN401
    """``state`` (a state dict, nested containers allowed) with every sharded tensor gathered
    whole onto the CPU. A collective: every process must call it, with the same structure;
    ``keep=False`` (processes that do not write the result) drops the gathered tensors."""
    if isinstance(state, DTensor):
        whole = state.full_tensor()
        return whole.cpu() if keep else None
    if isinstance(state, dict):
        return _like(state, ((k, full_state(v, keep)) for k, v in state.items()))
    if isinstance(state, list | tuple):
        return type(state)(full_state(v, keep) for v in state)
    return state


def _like(state: dict, items: Iterator[tuple[Any, Any]]) -> dict:
    """A dict of ``state``'s type from ``items``, with its ``_metadata`` (a module state dict's
    versions, which ``load_state_dict`` reads)."""
    out = type(state)(items)
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata  # type: ignore[attr-defined]
    return out


def shard_state_like(full: Any, live: Any) -> Any:  # noqa: ANN401
    """``full`` (from :func:`full_state`) cut into this process's shares wherever the matching
    entry of ``live`` (the running model's or optimizer's state dict) is sharded."""
    if isinstance(live, DTensor) and isinstance(full, Tensor):
        if tuple(full.shape) != tuple(live.shape):
            raise ValueError(
                f"a saved tensor of shape {tuple(full.shape)} for one of shape {tuple(live.shape)}"
            )
        return distribute_tensor(
            full.to(device=live.device, dtype=live.dtype), live.device_mesh, live.placements
        )
    if isinstance(full, dict) and isinstance(live, dict):
        return _like(full, ((k, shard_state_like(v, live[k]) if k in live else v)
                            for k, v in full.items()))  # fmt: skip
    if isinstance(full, list | tuple) and isinstance(live, list | tuple) and len(full) == len(live):
        return type(full)(shard_state_like(f, x) for f, x in zip(full, live, strict=True))
    return full


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a whole-tensor optimizer state into an optimizer of sharded parameters: each saved
    tensor that has its parameter's shape is cut like the parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entries in saved["state"].items():
        param = params[int(index)]
        state[index] = {  # not a step count, which has another shape (or is an int)
            k: shard_state_like(v, param) if torch.is_tensor(v) and v.shape == param.shape else v
            for k, v in entries.items()
        }
    optimizer.load_state_dict({**saved, "state": state})


def grad_norm(grads: list[Tensor]) -> Tensor:
    """The global L2 norm of ``grads`` (not empty), some of which may be sharded: the squares of
    their shares are summed over the processes."""

    def norms(tensors: list[Tensor]) -> Tensor:
        return torch.stack([torch.linalg.vector_norm(t.detach().float()) for t in tensors])

    plain = [g for g in grads if not isinstance(g, DTensor)]
    shares = [g.to_local() for g in grads if isinstance(g, DTensor)]
    if not shares:
        return torch.linalg.vector_norm(norms(plain))
    squares = norms(shares).square().sum()
    group = next(g for g in grads if isinstance(g, DTensor)).device_mesh.get_group()
    torch.distributed.all_reduce(squares, group=group)
    if plain:  # replicated: the same on every process, counted once
        squares = squares + norms(plain).square().sum()
    return squares.sqrt()
