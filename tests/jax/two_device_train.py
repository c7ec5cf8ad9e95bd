"""Run by tests/jax/test_train.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=2.

    python tests/jax/two_device_train.py run DIR      train 3 steps, save DIR/{tok,dyn}, take step 4, print results
    python tests/jax/two_device_train.py resume DIR   restore DIR/{tok,dyn}, take step 4 and 5, print results

Prints one JSON object: per model, the loss of every step taken (as float hex, so equality is exact),
the first two losses of the same run on one device, the device count, how the batch was sharded, and the step counter.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from dreamer4_jax import Dynamics, Tokenizer
from dreamer4_jax.train import OptimizerConfig, Trainer
from shared.config import replace
from shared.recipes import get_preset

TINY = get_preset("tiny")
B, T = 4, 3


def batches(kind: str):
    rng = np.random.default_rng(123 if kind == "tokenizer" else 456)
    out = []
    for _ in range(6):
        if kind == "tokenizer":
            out.append({"video": rng.random((B, T, 3, 16, 16), dtype=np.float32)})
        else:
            out.append({"latents": rng.uniform(-1, 1, (B, T, 4, 8)).astype(np.float32),
                        "actions": rng.uniform(-1, 1, (B, T, 16)).astype(np.float32),
                        "act_mask": np.ones(16, np.float32)})
    return out


def new_trainer(kind: str) -> Trainer:
    if kind == "tokenizer":   # dropout on, so the RNG streams in the train state matter for the resume
        model = Tokenizer(replace(TINY.tokenizer, transformer__dropout=0.1))
        return Trainer(model, OptimizerConfig(lr=1e-3), seed=3)
    model = Dynamics(TINY.dynamics)    # Muon on the hidden matrices: its momentum is in the saved state too
    return Trainer(model, OptimizerConfig(lr=1e-3, max_grad_norm=1.0, decay="weights", kind="muon"), seed=4,
                   bootstrap_start=0)


def main(mode: str, root: Path) -> None:
    assert jax.device_count() == 2, jax.devices()
    result = {"devices": jax.device_count()}
    for kind in ("tokenizer", "dynamics"):
        data = batches(kind)
        path = root / kind
        if mode == "run":
            trainer = new_trainer(kind)
            losses = [trainer.train_step(b)["loss"] for b in data[:3]]
            trainer.save(path, extra_state={"batches_seen": 3})
            losses.append(trainer.train_step(data[3])["loss"])
            losses.append(trainer.train_step(data[4])["loss"])
            single = Trainer(new_trainer(kind).model, trainer.opt, seed=trainer.seed, devices=jax.devices()[:1],
                             bootstrap_start=trainer.bootstrap_start)
            single_first = [single.train_step(b)["loss"] for b in data[:2]]
        else:
            trainer = Trainer.restore(path)
            assert trainer.extra_state == {"batches_seen": 3}, trainer.extra_state
            assert trainer.step_count == 3
            losses = [trainer.train_step(data[3])["loss"], trainer.train_step(data[4])["loss"]]
            single_first = None
        inputs, _ = trainer.prepare(data[0])
        sharded = trainer._shard(inputs["video" if kind == "tokenizer" else "z1"])
        result[kind] = {
            "losses": [float(x).hex() for x in losses],
            "single_device_losses": None if single_first is None else [float(x).hex() for x in single_first],
            "batch_shards": len(sharded.addressable_shards),
            "shard_rows": sharded.addressable_shards[0].data.shape[0],
            "params_replicated": bool(jax.tree_util.tree_leaves(trainer.state.params)[0].sharding.is_fully_replicated),
            "step": trainer.step_count,
        }
        try:
            trainer.train_step({k: v[:3] for k, v in data[0].items() if k != "act_mask"})
        except ValueError as e:
            result[kind]["odd_batch_error"] = str(e)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
