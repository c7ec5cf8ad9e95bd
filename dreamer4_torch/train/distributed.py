"""Everything distributed lives here; the models know nothing of it (torchtitan style).

Launch with `torchrun --nproc_per_node=N -m dreamer4_torch.train ...` (or plain `python -m ...` for
one process). NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto") -> World:
    """Initialise the process group from torchrun's environment (if any) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda was requested but CUDA is not available")
        dev = torch.device("cuda", local_rank if device == "cuda" else torch.device(device).index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                                device_id=dev if dev.type == "cuda" else None)
    return World(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        if world.device.type == "cuda":
            dist.barrier(device_ids=[world.device.index])
        else:
            dist.barrier()


def all_reduce_mean(values: dict[str, float], world: World) -> dict[str, float]:
    """Average a dict of scalars over ranks (same keys on every rank)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    t /= world.world_size
    return dict(zip(keys, t.tolist()))


def any_rank(flags: list[bool], world: World) -> list[bool]:
    """Element-wise OR of boolean flags over ranks (one collective for all of them)."""
    if not world.distributed:
        return flags
    t = torch.tensor([float(f) for f in flags], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def parameter_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes, in order (the local replica)."""
    import hashlib
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def replica_digests(model: nn.Module, world: World) -> list[str]:
    """Every rank's parameter digest (DDP replicas must all be equal)."""
    mine = parameter_digest(model)
    if not world.distributed:
        return [mine]
    out = [None] * world.world_size
    dist.all_gather_object(out, mine)
    return out


def differing_parameters(model: nn.Module, world: World) -> list[str]:
    """The names of the parameters whose bytes differ between ranks (DDP's `module.` prefix removed)."""
    import hashlib
    mine = {name.removeprefix("module."): hashlib.sha256(p.detach().to("cpu").contiguous().numpy().tobytes()).hexdigest()
            for name, p in model.named_parameters()}
    if not world.distributed:
        return []
    out = [None] * world.world_size
    dist.all_gather_object(out, mine)
    return [name for name in mine if len({o.get(name) for o in out}) > 1]


def broadcast_object(obj, world: World):
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=world.device if world.device.type == "cuda" else None)
    return box[0]


def wrap(model: nn.Module, world: World, parallel: str) -> nn.Module:
    """Apply data parallelism from outside: DDP (default) or FSDP2 per transformer layer + root."""
    if not world.distributed:
        return model
    if parallel == "ddp":
        ids = [world.device.index] if world.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for module in model.modules():
            layers = getattr(module, "layers", None)
            if isinstance(layers, nn.ModuleList):
                for layer in layers:
                    fully_shard(layer)
        fully_shard(model)
        return model
    raise ValueError(f"unknown parallelism {parallel!r}")


def no_sync(model: nn.Module, sync: bool):
    """Context for one micro-batch: gradients are reduced only when `sync` is True."""
    if sync:
        return nullcontext()
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        class _Fsdp:
            def __enter__(self):
                model.set_requires_gradient_sync(False)

            def __exit__(self, *exc):
                model.set_requires_gradient_sync(True)
        return _Fsdp()
    return nullcontext()
