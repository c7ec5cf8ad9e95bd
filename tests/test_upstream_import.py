"""Import of upstream-format .pt files (made here, in upstream's layout) through the CLI and the API."""

import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convert.upstream import import_upstream, load_upstream, strip_prefixes
from dreamer4_torch import Dynamics, Tokenizer, load_model
from shared.config import replace
from shared.recipes import get_preset
from shared.io import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TINY = get_preset("tiny")
TOK_ARGS = dict(H=16, W=16, C=3, patch=4, d_model=32, n_heads=2, depth=2, n_latents=4, d_bottleneck=8,
                dropout=0.0, mlp_ratio=4.0, time_every=1, mae_p_min=0.0, mae_p_max=0.5, data_dir=None,
                lr=1e-4, batch_size=8)
DYN_ARGS = dict(d_model_dyn=32, dyn_depth=2, n_heads=2, dropout=0.0, mlp_ratio=4.0, time_every=1,
                packing_factor=2, n_register=2, n_agent=1, space_mode="wm_agent_isolated", k_max=8,
                use_actions=True, bootstrap_start=5000)


def randomized(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def write_upstream(path, kind, model, args, prefix="", scale=True, extra=None):
    state = {prefix + k: v for k, v in model.state_dict().items()}
    obj = {"step": 10, "epoch": 1, "model" if kind == "tokenizer" else "dynamics": state,
           "opt": {"state": {}, "param_groups": []}, "scaler": None, "args": dict(args)}
    if scale is not None:
        obj["scale_pos_embeds"] = scale
    obj.update(extra or {})
    torch.save(obj, path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "convert", "upstream", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def tok_model():
    return randomized(Tokenizer(TINY.tokenizer))


@pytest.fixture(scope="module")
def dyn_model():
    return randomized(Dynamics(TINY.dynamics))


def test_tokenizer_cli_import_with_ddp_prefix(tmp_path, tok_model):
    src = tmp_path / "tokenizer.pt"
    write_upstream(src, "tokenizer", tok_model, {**TOK_ARGS, "out_dir": pathlib.PosixPath("/runs/x")},
                   prefix="module.")
    r = cli(src, tmp_path / "tok")
    assert r.returncode == 0, r.stderr
    assert "wrote tokenizer checkpoint" in r.stdout
    loaded = load_model(tmp_path / "tok")
    assert loaded.config == replace(tok_model.config, clip_frames=8)     # upstream trains on 8-frame clips
    video = torch.rand(2, 3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), tok_model.encode(video))
        z = tok_model.encode(video)
        assert torch.equal(loaded.decode(z), tok_model.decode(z))


def test_missing_scale_key_means_true(tmp_path, tok_model):
    src = tmp_path / "old.pt"
    write_upstream(src, "tokenizer", tok_model, TOK_ARGS, scale=None)
    model = load_upstream(src)
    assert model.config.transformer.scale_pos_embeds is True
    unscaled = Tokenizer(replace(TINY.tokenizer, transformer__scale_pos_embeds=False)).eval()
    unscaled.load_state_dict(tok_model.state_dict())
    video = torch.rand(1, 2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.encode(video), tok_model.encode(video))
        assert not torch.allclose(model.encode(video), unscaled.encode(video))
    src2 = tmp_path / "new.pt"
    write_upstream(src2, "tokenizer", unscaled, TOK_ARGS, scale=False)
    assert load_upstream(src2).config.transformer.scale_pos_embeds is False


def test_dynamics_needs_the_tokenizer(tmp_path, tok_model, dyn_model):
    src = tmp_path / "dynamics.pt"
    write_upstream(src, "dynamics", dyn_model, DYN_ARGS, prefix="module._orig_mod.")
    r = cli(src, tmp_path / "dyn")
    assert r.returncode == 2
    assert "does not record its tokenizer's latent sizes" in r.stderr and "--tokenizer" in r.stderr
    assert not (tmp_path / "dyn").exists()

    tok_src = tmp_path / "tokenizer.pt"
    write_upstream(tok_src, "tokenizer", tok_model, TOK_ARGS, prefix="_orig_mod.")
    # tokenizer given as an upstream .pt file
    r = cli(src, tmp_path / "dyn", "--tokenizer", tok_src)
    assert r.returncode == 0, r.stderr
    # ... or as a native checkpoint directory
    import_upstream(tok_src, tmp_path / "tok")
    import_upstream(src, tmp_path / "dyn2", tokenizer=tmp_path / "tok")
    packed = torch.randn(2, 4, 2, 16)
    sig = torch.randint(0, 9, (2, 4))
    stp = torch.randint(0, 4, (2, 4))
    acts = torch.rand(2, 4, 16) * 2 - 1
    with torch.no_grad():
        ref = dyn_model(packed, signal_idx=sig, step_idx=stp, actions=acts)
        for d in ("dyn", "dyn2"):
            got = load_model(tmp_path / d, kind="dynamics")(packed, signal_idx=sig, step_idx=stp, actions=acts)
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    with pytest.raises(CheckpointError, match="is a dynamics checkpoint, not a tokenizer"):
        import_upstream(src, tmp_path / "dyn3", tokenizer=tmp_path / "dyn")


def test_wrong_tokenizer_is_named(tmp_path, dyn_model):
    src = tmp_path / "dynamics.pt"
    write_upstream(src, "dynamics", dyn_model, DYN_ARGS)
    with pytest.raises(CheckpointError, match="not a multiple of the tokenizer's d_bottleneck=5"):
        load_upstream(src, n_latents=4, d_bottleneck=5)


def test_args_contradicting_weights(tmp_path, tok_model):
    src = tmp_path / "bad.pt"
    write_upstream(src, "tokenizer", tok_model, {**TOK_ARGS, "d_model": 64})
    with pytest.raises(CheckpointError, match="args say d_model=64 but the weights imply d_model=32"):
        load_upstream(src)
    write_upstream(src, "tokenizer", tok_model, {**TOK_ARGS, "H": 32})
    with pytest.raises(CheckpointError, match="H=32, W=16, patch=4 give 32 patches but decoder.patch_queries has 16"):
        load_upstream(src)


def test_missing_args_are_inferred(tmp_path, tok_model):
    src = tmp_path / "noargs.pt"
    args = {k: v for k, v in TOK_ARGS.items() if k not in ("d_model", "depth", "n_latents", "d_bottleneck", "patch")}
    write_upstream(src, "tokenizer", tok_model, args)
    assert load_upstream(src).config.n_latents == 4


def test_extra_or_missing_tensor_is_named(tmp_path, tok_model):
    sd = dict(tok_model.state_dict())
    sd["encoder.extra.weight"] = torch.zeros(2)
    torch.save({"model": sd, "args": TOK_ARGS}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected encoder.extra.weight"):
        load_upstream(tmp_path / "extra.pt")
    sd = dict(tok_model.state_dict())
    del sd["decoder.up_proj.bias"]
    torch.save({"model": sd, "args": TOK_ARGS}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing decoder.up_proj.bias \(32,\)"):
        load_upstream(tmp_path / "missing.pt")


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_upstream(tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, expected an upstream checkpoint dict"):
        load_upstream(tmp_path / "list.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a state dict under 'model'"):
        load_upstream(tmp_path / "other.pt")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    r = cli(tmp_path / "trunc.pt", tmp_path / "out")
    assert r.returncode == 2 and "cannot read" in r.stderr and "trunc.pt" in r.stderr


def test_strip_prefixes():
    t = torch.zeros(1)
    out = strip_prefixes({"module._orig_mod.a": t, "_orig_mod.module.b": t, "c": t})
    assert sorted(out) == ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="two state-dict keys map to 'a'"):
        strip_prefixes({"module.a": t, "a": t})


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "convert", "upstream", "--help"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--tokenizer" in r.stdout and "scale_pos_embeds" in r.stdout
