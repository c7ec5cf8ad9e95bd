"""JAX training: the torch-matching optimizer pieces, and a 2-device data-parallel run that saves,
restores (in a new process) and continues with the identical next loss."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from dreamer4_jax import Dynamics, Tokenizer  # noqa: E402
from dreamer4_jax.train import (OptimizerConfig, Trainer, clip_grad_norm_like_torch, decay_mask,  # noqa: E402
                                make_optimizer, optimizer_labels)
from shared.recipes import get_preset  # noqa: E402
from shared.io import CheckpointError  # noqa: E402
from shared.params import decay_names, param_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = get_preset("tiny")


def test_clipping_is_torch_formula():
    grads = {"a": jnp.asarray([3.0, 4.0]), "b": jnp.asarray([[12.0]])}          # global norm 13
    tx = clip_grad_norm_like_torch(1.0)
    clipped, _ = tx.update(grads, tx.init(grads))
    coef = 1.0 / (13.0 + 1e-6)
    chex.assert_trees_all_close(clipped, {"a": np.array([3.0, 4.0]) * coef, "b": np.array([[12.0]]) * coef},
                                rtol=1e-7)
    small, _ = tx.update({"a": jnp.asarray([0.3, 0.4])}, tx.init(None))
    chex.assert_trees_all_equal(small, {"a": np.array([0.3, 0.4], np.float32)}, strict=True)   # below the norm: untouched


def test_decay_policies():
    cfg = TINY.tokenizer
    assert decay_names(cfg, "all") == {p.name for p in param_table(cfg)}
    weights = decay_names(cfg, "weights")
    assert "encoder.patch_proj.weight" in weights and "encoder.patch_proj.bias" not in weights
    assert "encoder.latents" not in weights and "encoder.transformer.layers.0.norm1.scale" not in weights
    model = Tokenizer(cfg)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    mask = decay_mask(params, cfg, "weights")
    flat = {"/".join(str(k) for k in path): v for path, v in nnx.to_flat_state(mask)}
    assert flat["encoder/patch_proj/kernel"].get_value() is True and flat["encoder/patch_proj/bias"].get_value() is False
    with pytest.raises(ValueError, match="decay policy must be one of"):
        make_optimizer(OptimizerConfig(decay="most"), cfg)


def test_muon_labels_and_kind():
    cfg = TINY.dynamics
    _, params, _ = nnx.split(Dynamics(cfg), nnx.Param, ...)
    flat = {"/".join(str(k) for k in path): v.get_value()
            for path, v in nnx.to_flat_state(optimizer_labels(params, cfg))}
    muon = {k for k, v in flat.items() if v == "muon"}
    assert muon == {k for k in flat if "/layers/" in k and k.endswith("/kernel")}, sorted(muon)
    assert flat["spatial_proj/kernel"] == flat["flow_x_head/kernel"] == "adamw"
    with pytest.raises(ValueError, match="optimizer kind must be one of"):
        make_optimizer(OptimizerConfig(kind="sgd"), cfg)


def test_weight_decay_is_decoupled_and_masked():
    """With zero gradients, AdamW only decays: p <- p (1 - lr wd) on decayed leaves, untouched elsewhere."""
    model = Tokenizer(TINY.tokenizer)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(OptimizerConfig(lr=0.1, weight_decay=0.5, decay="weights"), TINY.tokenizer)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    k = new["encoder"]["patch_proj"]["kernel"][...]
    np.testing.assert_allclose(k, params["encoder"]["patch_proj"]["kernel"][...] * (1 - 0.1 * 0.5), rtol=1e-6)
    assert np.array_equal(new["encoder"]["latents"][...], params["encoder"]["latents"][...])


def test_restore_errors(tmp_path):
    from dreamer4_jax import save_model
    save_model(Tokenizer(TINY.tokenizer), tmp_path / "plain")
    with pytest.raises(CheckpointError, match="model checkpoint without training state"):
        Trainer.restore(tmp_path / "plain")
    trainer = Trainer(Tokenizer(TINY.tokenizer), devices=jax.devices()[:1])
    trainer.train_step({"video": np.random.default_rng(0).random((2, 2, 3, 16, 16), dtype=np.float32)})
    trainer.save(tmp_path / "run")
    with pytest.raises(CheckpointError, match="does not match this tokenizer's training state: missing opt_state/"):
        Trainer.restore(tmp_path / "run", opt=OptimizerConfig(kind="muon"))     # another optimizer state
    meta = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert meta["step"] == 1 and meta["optimizer"]["weight_decay"] == 0.01
    meta["kind"] = "dynamics"
    (tmp_path / "run" / "train_state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="describes a dynamics run but .* holds a tokenizer"):
        Trainer.restore(tmp_path / "run")


def test_batch_errors_name_the_keys():
    from dreamer4_jax import Dynamics
    trainer = Trainer(Dynamics(TINY.dynamics), devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=r"a dynamics batch needs \['latents'\]; got keys \['video'\]"):
        trainer.prepare({"video": np.zeros((2, 2, 3, 16, 16))})
    with pytest.raises(ValueError, match="to inject draws, all of"):
        trainer.prepare({"latents": np.zeros((2, 2, 4, 8)), "signal_idx": np.zeros((2, 2), int)})
    with pytest.raises(TypeError, match="step_idx must be an integer array, got dtype float64"):
        trainer.prepare({"latents": np.zeros((2, 2, 4, 8)), "signal_idx": np.zeros((2, 2), int),
                         "step_idx": np.full((2, 2), 1.5), "noise": np.zeros((2, 2, 2, 16)), "n_bootstrap": 0})
    with pytest.raises(ValueError, match=r"latents must have shape \(B, T, 4, 8\), got \(2, 2, 8, 4\)"):
        trainer.prepare({"latents": np.zeros((2, 2, 8, 4))})
    inputs, n_boot = trainer.prepare({"latents": np.zeros((4, 2, 4, 8), np.float32)})
    assert inputs["z1"].shape == (4, 2, 2, 16) and n_boot == 1 and inputs["noise"].shape == (4, 2, 2, 16)
    tok_trainer = Trainer(Tokenizer(TINY.tokenizer), devices=jax.devices()[:1])
    with pytest.raises(TypeError, match=r"video must be a float array in \[0, 1\], got dtype uint8"):
        tok_trainer.prepare({"video": np.zeros((2, 2, 3, 16, 16), np.uint8)})      # not silently cast to 0..255
    with pytest.raises(ValueError, match="mse_on must be"):
        Trainer(Tokenizer(TINY.tokenizer), mse_on="some")
    with pytest.raises(ValueError, match="contrast_weight must be >= 0"):
        Trainer(Tokenizer(TINY.tokenizer), contrast_weight=-0.5)


def test_contrast_weight_reaches_the_loss():
    """The trainer's step takes the contrast-weighted loss: its metrics carry `weighted_mse`, which equals
    the loss computed directly on the same weights and injected mask."""
    from dreamer4_jax.losses import tokenizer_loss
    rng = np.random.default_rng(0)
    video = rng.random((2, 1, 3, 16, 16)).astype(np.float32)
    keep = np.ones((2, 1, TINY.tokenizer.n_patches), bool)
    model = Tokenizer(TINY.tokenizer)
    c = TINY.tokenizer
    expected, _ = tokenizer_loss(model(video, keep_mask=keep), image_shape=(c.channels, c.image_height, c.image_width),
                                 patch_size=c.patch_size, mse_on="all", contrast_weight=4.0)
    trainer = Trainer(model, devices=jax.devices()[:1], mse_on="all", contrast_weight=4.0)
    metrics = trainer.train_step({"video": video, "keep_mask": keep})
    assert metrics["weighted_mse"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["weighted_mse"] > metrics["mse"]


@pytest.mark.slow
def test_two_device_training_saves_restores_and_continues_identically(tmp_path):
    # The resume process reuses the first process's compiled steps through a persistent compilation
    # cache (the same executables, so this only saves time).
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2")
    script = str(ROOT / "tests" / "jax" / "two_device_train.py")

    def run(mode):
        out = subprocess.run([sys.executable, script, mode, str(tmp_path)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run("run")
    resumed = run("resume")
    for kind in ("tokenizer", "dynamics"):
        a, b = first[kind], resumed[kind]
        assert a["batch_shards"] == 2 and a["shard_rows"] == 2 and a["params_replicated"], a
        # the restored run takes steps 4 and 5 with exactly the losses of the uninterrupted run
        assert b["losses"] == a["losses"][3:5], (kind, a["losses"], b["losses"])
        assert b["step"] == a["step"] == 5
        # data parallel = one device over the whole batch: the same first loss, and after one update
        # the same second loss (so the step used the gradient of the global batch)
        for two, one in zip(a["losses"][:2], a["single_device_losses"]):
            two, one = float.fromhex(two), float.fromhex(one)
            assert abs(two - one) <= 1e-5 * abs(one), (kind, two, one)
        assert "not divisible by the 2 devices" in a["odd_batch_error"]
