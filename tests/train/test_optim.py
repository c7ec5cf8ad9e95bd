"""dreamer4_torch.train.optim: MuonAdamW against torch's own AdamW and Muon, and the parameter split."""

import pytest
import torch

from dreamer4_torch import Dynamics, Tokenizer
from dreamer4_torch.train.optim import MuonAdamW, make_optimizer, muon_parameters, orthogonalise
from shared.recipes import get_preset


def run_steps(params, optimizer, grads, lrs):
    for grad_set, lr in zip(grads, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grad_set):
            p.grad = g.clone()
        optimizer.step()


def test_adamw_half_matches_torch_adamw():
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 5), (7,), (3, 4)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]
    lrs = [1e-2, 2e-2, 3e-2, 2e-2, 1e-2, 5e-3]                 # a schedule changes group lr between steps
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    ref = [torch.nn.Parameter(x.clone()) for x in init]
    run_steps(ours, MuonAdamW([{"params": ours[:2], "weight_decay": 0.1}, {"params": ours[2:], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.95), eps=1e-8), grads, lrs)
    run_steps(ref, torch.optim.AdamW([{"params": ref[:2], "weight_decay": 0.1},
                                      {"params": ref[2:], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95), eps=1e-8),
              grads, lrs)
    for a, b, x in zip(ours, ref, init):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(a.detach(), x)


@pytest.mark.parametrize("shape", [(8, 24), (24, 8)])
def test_muon_half_matches_torch_muon(shape):
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(shape, generator=gen) * 0.1
    grads = [[torch.randn(shape, generator=gen)] for _ in range(5)]
    lrs = [1e-2, 2e-2, 2e-2, 1e-2, 5e-3]
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    run_steps([ours], MuonAdamW([{"params": [ours], "weight_decay": 0.05, "muon": True}], lr=1e-2), grads, lrs)
    run_steps([ref], torch.optim.Muon([ref], lr=1e-2, weight_decay=0.05, momentum=0.95, nesterov=True,
                                      adjust_lr_fn="match_rms_adamw"), grads, lrs)
    # torch runs the Newton-Schulz iteration in bfloat16 (ours in float32): the same update to ~1 %.
    moved, moved_ref = ours.detach() - init, ref.detach() - init
    assert moved_ref.norm() > 0.01
    assert (moved - moved_ref).norm() / moved_ref.norm() < 0.03


def test_orthogonalise_flattens_the_spectrum():
    g = torch.randn(32, 96, generator=torch.Generator().manual_seed(2))
    g[:, :8] *= 50.0                                             # a badly conditioned gradient
    s_in = torch.linalg.svdvals(g)
    s_out = torch.linalg.svdvals(orthogonalise(g))
    assert s_in.max() / s_in.min() > 20
    assert 0.5 < s_out.min() and s_out.max() < 1.3, s_out
    with pytest.raises(ValueError, match="matrix"):
        orthogonalise(torch.randn(3, 4, 5))


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics"])
def test_muon_takes_the_transformer_matrices_and_adamw_the_rest(kind):
    preset = get_preset("tiny")
    model = Tokenizer(preset.tokenizer) if kind == "tokenizer" else Dynamics(preset.dynamics)
    optimizer = make_optimizer(model, "muon", lr=1e-3, weight_decay=0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in optimizer.param_groups if g["muon"] for p in g["params"]]
    adamw = [names[id(p)] for g in optimizer.param_groups if not g["muon"] for p in g["params"]]
    assert sorted(muon + adamw) == sorted(names.values())          # every parameter exactly once
    assert muon and all(".layers." in n and n.endswith(".weight") for n in muon)
    # ... exactly the Linear weights of the BlockCausalTransformer modules.
    from dreamer4_torch.layers import BlockCausalTransformer
    linear_in_transformers = {id(m.weight) for t in model.modules() if isinstance(t, BlockCausalTransformer)
                              for m in t.modules() if isinstance(m, torch.nn.Linear)}
    assert {id(p) for p in muon_parameters(model)} == linear_in_transformers
    # Embeddings, input projections, heads, norms and biases stay on AdamW.
    assert not any(("embed" in n or "norm" in n or n.endswith(".bias")) for n in muon)
    assert any(n.endswith(".bias") for n in adamw)
    if kind == "dynamics":
        assert {"spatial_proj.weight", "flow_x_head.weight"} <= set(adamw)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer(model, "sgd", lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="matrices only"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}], lr=1e-3)


@pytest.mark.parametrize("kind", ["tokenizer", "dynamics"])
@pytest.mark.parametrize("optimizer_kind", ["adamw", "muon"])
def test_weight_decay_takes_the_linear_weights_only(kind, optimizer_kind):
    """The decayed set comes from the parameter table's roles (shared.params.decay_names, also the JAX
    mask); checked here against the modules themselves: exactly the nn.Linear weights."""
    preset = get_preset("tiny")
    model = Tokenizer(preset.tokenizer) if kind == "tokenizer" else Dynamics(preset.dynamics)
    optimizer = make_optimizer(model, optimizer_kind, lr=1e-3, weight_decay=0.01)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert decayed == linear_weights
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
