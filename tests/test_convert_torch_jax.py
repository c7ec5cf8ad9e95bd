"""torch <-> JAX conversion: the table-derived mapping, strictness, bit-exact round trips, the CLI."""

import json

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
import chex  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import dreamer4_jax as dj  # noqa: E402
import dreamer4_torch as dt  # noqa: E402
from convert.__main__ import main as convert_main  # noqa: E402
from convert.torch_jax import (ConversionError, jax_to_torch, jax_to_torch_state, torch_to_jax,  # noqa: E402
                               torch_to_jax_state)
from shared.agent import agent_config  # noqa: E402
from shared.config import replace  # noqa: E402
from shared.recipes import get_preset  # noqa: E402
from shared.params import param_table  # noqa: E402

TINY = get_preset("tiny")
PAPER = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1, transformer__logit_softcap=30.0,
             transformer__time_rope=True, transformer__time_every=2)


def _bytes_equal(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(
        a[k].dtype == b[k].dtype and tuple(a[k].shape) == tuple(b[k].shape)
        and a[k].contiguous().view(torch.uint8).numpy().tobytes() == b[k].contiguous().view(torch.uint8).numpy().tobytes()
        for k in a)


@pytest.mark.parametrize("cfg", [TINY.tokenizer, TINY.dynamics, replace(TINY.tokenizer, **PAPER),
                                 agent_config(TINY.dynamics, 5)],
                         ids=["tokenizer", "dynamics", "tokenizer-paper", "dynamics-agent"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_jax_torch_is_bit_exact(cfg, dtype):
    torch.manual_seed(0)
    model = dt.build_model(cfg)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    jstate = torch_to_jax_state(state, cfg)
    chex.assert_trees_all_equal_shapes(jstate, {"/".join(p.jax_path): jax.ShapeDtypeStruct(p.jax_shape, np.float32)
                                                for p in param_table(cfg)})
    # linear weights are transposed, nothing else is touched
    w = "encoder/patch_proj/kernel" if cfg.kind == "tokenizer" else "spatial_proj/kernel"
    tname = w.replace("/", ".").replace("kernel", "weight")
    np.testing.assert_array_equal(jstate[w], state[tname].float().numpy().T.astype(jstate[w].dtype))
    assert _bytes_equal(jax_to_torch_state(jstate, cfg), state)


@pytest.mark.parametrize("cfg", [TINY.dynamics, agent_config(TINY.dynamics, 5)], ids=["dynamics", "dynamics-agent"])
def test_jax_torch_jax_is_bit_exact_and_models_match(cfg):
    jmodel = dj.Dynamics(cfg, rngs=nnx.Rngs(7))
    state = dj.model_state(jmodel)
    back = torch_to_jax_state(jax_to_torch_state(state, cfg), cfg)
    chex.assert_trees_all_equal_dtypes(state, back)
    chex.assert_trees_all_equal(state, back, strict=True)
    tmodel = jax_to_torch(jmodel.eval())
    assert not tmodel.training
    again = torch_to_jax(tmodel)
    assert not again.training
    chex.assert_trees_all_equal(state, dj.model_state(again), strict=True)


def test_conversion_is_strict_and_names_the_problem():
    torch.manual_seed(0)
    state = dt.Tokenizer(TINY.tokenizer).state_dict()
    bad = dict(state)
    del bad["decoder.patch_head.bias"]
    bad["decoder.surprise"] = torch.zeros(3)
    bad["encoder.latents"] = torch.zeros(4, 31)
    with pytest.raises(ConversionError) as err:
        torch_to_jax_state(bad, TINY.tokenizer)
    msg = str(err.value)
    assert "missing decoder.patch_head.bias (48,)" in msg
    assert "unexpected decoder.surprise (3,)" in msg
    assert "encoder.latents has shape (4, 31), expected (4, 32)" in msg
    jstate = torch_to_jax_state(state, TINY.tokenizer)
    jstate["encoder/patch_proj/kernel"] = jstate["encoder/patch_proj/kernel"].T      # a torch-layout weight
    with pytest.raises(ConversionError, match=r"encoder/patch_proj/kernel has shape \(32, 48\), expected \(48, 32\)"):
        jax_to_torch_state(jstate, TINY.tokenizer)
    with pytest.raises(ConversionError, match="missing encoder/latents"):
        jax_to_torch_state({k: v for k, v in jstate.items() if k != "encoder/latents"}, TINY.tokenizer)


def _cli_round_trip(tmp_path, model, name):
    src, mid, back = tmp_path / f"{name}_torch", tmp_path / f"{name}_jax", tmp_path / f"{name}_back"
    dt.save_model(model, src)
    assert convert_main(["torch-to-jax", str(src), str(mid)]) == 0
    assert sorted(p.name for p in mid.iterdir()) == ["config.json", "params"]
    assert convert_main(["jax-to-torch", str(mid), str(back)]) == 0
    assert (src / "config.json").read_text() == (mid / "config.json").read_text() == (back / "config.json").read_text()
    return load_file(str(src / "model.safetensors")), load_file(str(back / "model.safetensors"))


def test_cli_round_trip_is_byte_identical(tmp_path, capsys):
    torch.manual_seed(1)
    a, b = _cli_round_trip(tmp_path, dt.Tokenizer(replace(TINY.tokenizer, **PAPER)), "tok")
    assert _bytes_equal(a, b)
    assert "wrote PyTorch tokenizer checkpoint" in capsys.readouterr().out
    a, b = _cli_round_trip(tmp_path, dt.Dynamics(agent_config(TINY.dynamics, 5)), "agent")
    assert _bytes_equal(a, b) and "task_embed.weight" in a and "reward_head.out.7.bias" in a


@pytest.mark.slow
def test_cli_round_trip_dmc128_is_byte_identical(tmp_path):
    """The acceptance check: python -m convert torch-to-jax then jax-to-torch on dmc128 (64M parameters)."""
    p = get_preset("dmc128")
    torch.manual_seed(2)
    for name, model in (("tok", dt.Tokenizer(p.tokenizer)), ("dyn", dt.Dynamics(p.dynamics))):
        a, b = _cli_round_trip(tmp_path, model, name)
        assert len(a) == len(param_table(model.config)) and _bytes_equal(a, b), name
        del a, b, model


def test_cli_errors(tmp_path, capsys):
    assert convert_main(["torch-to-jax", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torch.manual_seed(0)
    dt.save_model(dt.Tokenizer(TINY.tokenizer), tmp_path / "tok")
    cfg = json.loads((tmp_path / "tok" / "config.json").read_text())
    cfg["n_latents"] = 5
    (tmp_path / "tok" / "config.json").write_text(json.dumps(cfg))
    assert convert_main(["torch-to-jax", str(tmp_path / "tok"), str(tmp_path / "out")]) == 2
    assert "encoder.latents has shape (4, 32), expected (5, 32)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # a torch directory given to jax-to-torch
    torch.manual_seed(0)
    dt.save_model(dt.Tokenizer(TINY.tokenizer), tmp_path / "tok2")
    assert convert_main(["jax-to-torch", str(tmp_path / "tok2"), str(tmp_path / "out")]) == 2
    assert "params is missing" in capsys.readouterr().err


def test_training_state_is_reported_not_converted(tmp_path, capsys):
    torch.manual_seed(0)
    dt.save_model(dt.Tokenizer(TINY.tokenizer), tmp_path / "tok", extra={"train_state.pt": b"opaque"})
    assert convert_main(["torch-to-jax", str(tmp_path / "tok"), str(tmp_path / "jax")]) == 0
    assert "not converted (backend-specific training state or other files): train_state.pt" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "jax").iterdir()) == ["config.json", "params"]
