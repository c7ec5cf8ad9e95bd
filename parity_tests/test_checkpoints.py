"""Trained checkpoints through the converter CLI give the same outputs in the other backend (<= 1e-4).

jax->torch: a `tiny` model trained with dreamer4_jax.train.Trainer, saved with its training state,
`python -m convert jax-to-torch`, loaded with dreamer4_torch.load_model. torch->jax: a `tiny` model
trained a few AdamW steps in torch, saved, `python -m convert torch-to-jax`, loaded with
dreamer4_jax.load_model. Outputs of the two loaded models are compared.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import dreamer4_jax as dj
import dreamer4_torch as dt
from convert.__main__ import main as convert_main
from dreamer4_jax.train import OptimizerConfig, Trainer
from shared.recipes import get_preset

from .helpers import compare
from .test_models import _decode, _dynamics, _encode
from .test_training import dynamics_batches, tokenizer_batches, torch_loss, torch_optimizer, torch_step

TOL = 1e-4
TINY = get_preset("tiny")


def train_and_convert(kind, direction, seed, tmp_path):
    cfg = TINY.tokenizer if kind == "tokenizer" else TINY.dynamics
    batches = (tokenizer_batches if kind == "tokenizer" else dynamics_batches)(cfg, seed, 3)
    opt = OptimizerConfig(lr=1e-3, max_grad_norm=1.0)
    if direction == "jax->torch":
        trainer = Trainer(dj.build_model(cfg, rngs=nnx.Rngs(seed)), opt, devices=jax.devices()[:1])
        for batch in batches:
            trainer.train_step(batch)
        trainer.save(tmp_path / "src")
        assert convert_main(["jax-to-torch", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
        return dj.load_model(tmp_path / "src"), dt.load_model(tmp_path / "dst")
    torch.manual_seed(seed)
    model = dt.build_model(cfg).train()
    optimizer = torch_optimizer(model, opt)
    for batch in batches:
        torch_step(model, optimizer, opt, torch_loss(kind, cfg, model, batch))
    dt.save_model(model, tmp_path / "src")
    assert convert_main(["torch-to-jax", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    return dj.load_model(tmp_path / "dst"), dt.load_model(tmp_path / "src")


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics"])
def test_trained_checkpoint_gives_the_same_outputs_after_conversion(direction, seed, kind, tmp_path):
    j, t = train_and_convert(kind, direction, seed, tmp_path)
    assert not j.training and not t.training
    rng = np.random.default_rng(seed)
    cfg = j.config
    if kind == "tokenizer":
        video = rng.random((2, 4, cfg.channels, cfg.image_height, cfg.image_width), dtype=np.float32)
        with torch.no_grad():
            zt = t.encode(torch.from_numpy(video))
            recon_t = t.decode(zt)
        zj = _encode(j, video, None)
        pairs = {"encode z": (zj, zt), "decode(encode) video": (_decode(j, zj), recon_t)}
    else:
        packed = rng.normal(size=(2, 5, cfg.n_spatial, cfg.d_spatial)).astype(np.float32)
        sig = rng.integers(0, cfg.k_max + 1, (2, 5))
        stp = rng.integers(0, cfg.e_max + 1, (2, 5))
        actions = rng.uniform(-1, 1, (2, 5, cfg.action_dim)).astype(np.float32)
        with torch.no_grad():
            xt, ht = t(torch.from_numpy(packed), signal_idx=torch.from_numpy(sig), step_idx=torch.from_numpy(stp),
                       actions=torch.from_numpy(actions))
        xj, hj = _dynamics(j, packed, sig.astype(np.int32), stp.astype(np.int32), actions, None)
        pairs = {"x1_hat": (xj, xt), "h": (hj, ht)}
    compare(f"checkpoint: trained {kind} converted", direction, pairs, TOL)
