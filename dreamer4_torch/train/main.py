"""Set up a run (process group, options record, data checks), build the trainer and run the loop."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from shared.data.format import DatasetError
from shared.io import CheckpointError

from . import distributed as D
from .runner import TrainingError, check_resume_options, record_options, train


def run(kind: str, options) -> int:
    world = D.init(options.device)
    out = Path(options.out)
    created, started = not out.exists(), False
    try:
        if not Path(options.data).exists():
            raise SystemExit(f"error: --data {options.data} does not exist; collect a data set with "
                             "`python -m shared.data.collect --tasks ... --out DIR`")
        check_resume_options(options, world)
        if not options.resume and (out / "checkpoints" / "latest").exists():
            raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it, or choose another --out")
        record_options(options, world)
        if kind == "tokenizer":
            from .tokenizer import TokenizerTask as TaskClass
        elif kind == "bc":
            from .agent import AgentTask as TaskClass
        else:
            from .dynamics import DynamicsTask as TaskClass
        task = TaskClass(options, world)
        started = True
        train(task, options, task.config, world)
        # Leave together: a rank that tears its process group down while another still has gloo
        # traffic in flight can abort the other (seen under heavy CPU load).
        D.barrier(world)
        return 0
    except (DatasetError, CheckpointError, TrainingError) as e:
        print(f"error (rank {world.rank}): {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if created and not started and world.rank == 0:
            shutil.rmtree(out, ignore_errors=True)      # a run that never started leaves no directory behind
        D.shutdown()
