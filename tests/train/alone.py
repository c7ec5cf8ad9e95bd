"""Test driver: train as rank R of N *without* gradient averaging -- what upstream's multi-GPU
dynamics trainer did (each GPU trained alone on its shard). Used to show that our DDP runs differ
from it. Usage: python alone.py RANK WORLD KIND [trainer options]"""

import sys

import torch

from dreamer4_torch.train import distributed as D

rank, world_size, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
world = D.World(rank=rank, world_size=world_size, local_rank=0, device=torch.device("cpu"))
D.init = lambda device="auto": world
D.wrap = lambda model, world, parallel: model
D.all_reduce_mean = lambda values, world: values
D.any_rank = lambda flags, world: flags
D.barrier = lambda world: None
D.replica_digests = lambda model, world: [D.parameter_digest(model)]
D.shutdown = lambda: None
# Only "rank 0" writes files; make this process rank 0 of the logger/checkpointer's view.
import dreamer4_torch.train.runner as R  # noqa: E402

_save = R.Checkpointer.save


def save(self, *args, **kwargs):
    self.world = D.World(rank=0, world_size=world_size, local_rank=0, device=world.device)
    return _save(self, *args, **kwargs)


R.Checkpointer.save = save
_logger_init = R.Logger.__init__


def logger_init(self, run_dir, w, options, resumed_at=None):
    _logger_init(self, run_dir, D.World(0, world_size, 0, w.device), options, resumed_at)


R.Logger.__init__ = logger_init
R.record_options = lambda options, w: None
# Each lone process encodes the whole data set into its own latent cache.
import dreamer4_torch.train.dynamics as DY  # noqa: E402

_build = DY.build_latent_cache
DY.build_latent_cache = lambda tokenizer, tdir, ddir, cdir, chunk, w, **kw: _build(
    tokenizer, tdir, ddir, cdir, chunk, D.World(0, 1, 0, w.device), **kw)
from dreamer4_torch.train.__main__ import main  # noqa: E402

sys.exit(main([kind, *sys.argv[4:]]))
