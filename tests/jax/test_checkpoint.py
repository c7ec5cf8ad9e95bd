"""Native JAX checkpoints: exact round trip, atomic replacement, validation with named errors."""

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import dreamer4_jax.checkpoint as ckpt_mod  # noqa: E402
from dreamer4_jax import Dynamics, Tokenizer, load_model, load_state, model_state, save_model  # noqa: E402
from dreamer4_jax.checkpoint import save_state, set_model_state  # noqa: E402
from shared.recipes import get_preset  # noqa: E402
from shared.io import CheckpointError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(TINY.tokenizer, rngs=nnx.Rngs(0))


def assert_same_state(a, b):
    """Same names, shapes, dtypes and values (the dtypes apart: chex compares bfloat16 values as float32)."""
    chex.assert_trees_all_equal_dtypes(a, b)
    chex.assert_trees_all_equal(a, b, strict=True)


def test_save_load_is_exact(tmp_path, tok):
    save_model(tok, tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["config.json", "params"]
    loaded = load_model(tmp_path / "tok")
    assert isinstance(loaded, Tokenizer) and not loaded.training and loaded.config == tok.config
    assert_same_state(model_state(tok), model_state(loaded))
    video = jnp.asarray(np.random.default_rng(0).random((1, 4, 3, 16, 16), dtype=np.float32))
    assert np.array_equal(tok.eval().encode(video), loaded.encode(video))
    dyn = Dynamics(TINY.dynamics)
    save_model(dyn, tmp_path / "dyn")
    assert isinstance(load_model(tmp_path / "dyn", kind="dynamics"), Dynamics)


def test_state_keeps_its_dtype(tmp_path, tok):
    state = {k: np.asarray(v).astype(jnp.bfloat16) for k, v in model_state(tok).items()}
    save_state(tmp_path / "bf16", tok.config, state)
    cfg, loaded = load_state(tmp_path / "bf16")
    assert cfg == tok.config
    assert_same_state(state, loaded)
    assert loaded["encoder/latents"].dtype == jnp.bfloat16


def test_save_replaces_atomically_and_failed_save_keeps_the_old(tmp_path, tok, monkeypatch):
    save_model(tok, tmp_path / "ck")
    before = load_state(tmp_path / "ck")[1]
    real_save_tree = ckpt_mod.save_tree

    def broken(directory, tree):
        real_save_tree(directory, tree)          # the weights are written, then the disk "fills up"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "save_tree", broken)
    changed = {k: v + 1.0 for k, v in model_state(tok).items()}
    with pytest.raises(OSError, match="disk full"):
        save_state(tmp_path / "ck", tok.config, changed)
    assert_same_state(before, load_state(tmp_path / "ck")[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]       # no temporary left behind
    monkeypatch.undo()
    save_state(tmp_path / "ck", tok.config, changed)                  # a successful save replaces it
    assert_same_state(changed, load_state(tmp_path / "ck")[1])


def test_load_kind_check(tmp_path, tok):
    save_model(tok, tmp_path / "tok")
    with pytest.raises(CheckpointError, match="holds a tokenizer checkpoint, but a dynamics checkpoint was expected"):
        load_model(tmp_path / "tok", kind="dynamics")


# orbax leaves tensorstore callbacks behind when it fails to read a corrupt tree; they fire into its
# closed asyncio loop from another thread a little later ("Event loop is closed"). The test waits for
# them and collects, so that this noise is raised (and ignored) here rather than in a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_and_corrupt_files(tmp_path, tok):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    save_model(tok, tmp_path / "ck")
    params = tmp_path / "ck" / "params"
    # truncate every stored chunk: the tree can no longer be read
    for f in params.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="params is not a readable orbax tree"):
        load_model(tmp_path / "ck")
    for _ in range(5):
        time.sleep(0.2)
        gc.collect()
    import shutil
    shutil.rmtree(params)
    with pytest.raises(CheckpointError, match="params is missing"):
        load_model(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_model(tmp_path / "ck")
    afile = tmp_path / "file.pt"
    afile.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="python -m convert upstream"):
        load_model(afile)


def test_config_weight_mismatch_is_named(tmp_path, tok):
    save_model(tok, tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["transformer"]["depth"] = 3
    cfg["n_latents"] = 5
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "ck")
    msg = str(err.value)
    assert "missing encoder/transformer/layers/2/norm1/scale" in msg
    assert "encoder/latents has shape (4, 32), expected (5, 32)" in msg
    cfg["transformer"]["depth"] = "two"
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="tokenizer.transformer.depth must be an integer"):
        load_model(tmp_path / "ck")


def test_in_memory_state_is_strict(tok):
    state = model_state(tok)
    model = Tokenizer(TINY.tokenizer, rngs=nnx.Rngs(5))
    bad = dict(state)
    del bad["decoder/patch_head/bias"]
    bad["decoder/extra"] = np.zeros(3, np.float32)
    bad["encoder/latents"] = np.zeros((4, 31), np.float32)
    with pytest.raises(CheckpointError) as err:
        set_model_state(model, bad)
    msg = str(err.value)
    assert "missing decoder/patch_head/bias" in msg and "unexpected decoder/extra" in msg
    assert "encoder/latents has shape (4, 31), expected (4, 32)" in msg
    bad = dict(state, **{"encoder/latents": np.zeros((4, 32), np.int32)})
    with pytest.raises(CheckpointError, match="encoder/latents has dtype int32, expected a floating-point"):
        set_model_state(model, bad)
    assert_same_state(model_state(set_model_state(model, state)), state)


def test_jax_backend_never_imports_torch():
    code = ("import sys, dreamer4_jax, dreamer4_jax.train, dreamer4_jax.checkpoint\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch']\n"
            "assert not bad, bad\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
