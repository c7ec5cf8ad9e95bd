import json
import os

import pytest
import torch

import dreamer4_torch.checkpoint as ckpt_mod
from dreamer4_torch import Dynamics, Tokenizer, load_model, save_model
from shared.recipes import get_preset
from shared.io import CheckpointError

TINY = get_preset("tiny")


@pytest.fixture
def tok():
    torch.manual_seed(0)
    return Tokenizer(TINY.tokenizer)


def test_save_load_is_exact(tmp_path, tok):
    save_model(tok, tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "tok")
    assert not loaded.training and loaded.config == tok.config
    for (n, a), (m, b) in zip(tok.state_dict().items(), loaded.state_dict().items()):
        assert n == m and torch.equal(a, b)
    video = torch.rand(1, 2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(tok.eval().encode(video), loaded.encode(video))
    dyn = Dynamics(TINY.dynamics)
    save_model(dyn, tmp_path / "dyn")
    assert isinstance(load_model(tmp_path / "dyn"), Dynamics)


def test_save_replaces_atomically_and_failed_save_keeps_the_old(tmp_path, tok, monkeypatch):
    save_model(tok, tmp_path / "ck")
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "save_file", broken)
    with torch.no_grad():
        tok.decoder.patch_head.bias.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_model(tok, tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]       # no temporary left behind


def test_load_kind_check(tmp_path, tok):
    save_model(tok, tmp_path / "tok")
    with pytest.raises(CheckpointError, match="holds a tokenizer checkpoint, but a dynamics checkpoint was expected"):
        load_model(tmp_path / "tok", kind="dynamics")


def test_missing_and_corrupt_files(tmp_path, tok):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    save_model(tok, tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_model(tmp_path / "ck")
    weights.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
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
    assert "missing encoder.transformer.layers.2.norm1.scale" in msg
    assert "encoder.latents has shape (4, 32), expected (5, 32)" in msg
    cfg["transformer"]["depth"] = "two"
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="tokenizer.transformer.depth must be an integer"):
        load_model(tmp_path / "ck")


def test_compiled_and_ddp_style_wrappers_save_plain_names(tmp_path, tok):
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner
    save_model(Wrapper(tok), tmp_path / "ck")
    from safetensors.torch import load_file
    keys = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert all(not k.startswith(("module.", "_orig_mod.")) for k in keys)
