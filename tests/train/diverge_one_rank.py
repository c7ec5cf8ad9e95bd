"""A torchrun entry for tests/train/test_ddp.py: the PyTorch trainer, with rank 1's copy of one parameter
nudged just before the checkpoint of step DIVERGE_AT is written -- a real divergence, as a broken gradient
all-reduce would leave, not a stubbed digest.

    torchrun --standalone --nproc_per_node=2 tests/train/diverge_one_rank.py PARAM STEP tokenizer --data ...
"""

import os
import sys

import torch

from dreamer4_torch.train import runner
from dreamer4_torch.train.__main__ import main

param, at = sys.argv[1], int(sys.argv[2])
save = runner.Checkpointer.save


def nudged_save(self, step, model, *args, **kwargs):
    if step == at and int(os.environ.get("RANK", "0")) == 1:
        with torch.no_grad():
            dict((n.removeprefix("module."), p) for n, p in model.named_parameters())[param].add_(1e-3)
    return save(self, step, model, *args, **kwargs)


runner.Checkpointer.save = nudged_save
sys.exit(main(sys.argv[3:]))
