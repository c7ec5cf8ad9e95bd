"""dreamer4_torch.prepack: oneDNN Linears with prepacked weights compute the same maps as nn.Linear."""

import threading

import pytest
import torch

from dreamer4_torch import Dynamics, Tokenizer
from dreamer4_torch.prepack import PrepackedLinears, available
from dreamer4_torch.sampler import rollout
from shared.recipes import get_preset

needs_onednn = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN linear ops")


def _dyn(seed=0):
    torch.manual_seed(seed)
    dyn = Dynamics(get_preset("tiny").dynamics).eval()
    with torch.no_grad():
        dyn.flow_x_head.weight.normal_(0, 0.2)      # zero-initialised head: give it an output to compare
    return dyn


def _inputs(dyn, T=3, seed=1):
    c = dyn.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, T, c.n_spatial, c.d_spatial, generator=g)
    sig = torch.full((2, T), c.k_max - 1)
    step = torch.zeros(2, T, dtype=torch.long)
    act = torch.rand(2, T, c.action_dim, generator=g) * 2 - 1
    return x, dict(signal_idx=sig, step_idx=step, actions=act)


def _linears(model):
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


@needs_onednn
def test_same_outputs_and_forwards_restored():
    dyn = _dyn()
    x, kw = _inputs(dyn)
    with torch.no_grad():
        ref = dyn(x, **kw)[0]
        with PrepackedLinears(dyn):
            got = dyn(x, **kw)[0]
            assert all("_prepacked" in m.__dict__ for m in _linears(dyn)), "the packed path was not taken"
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (got - ref).abs().max()
    assert all("forward" not in m.__dict__ for m in _linears(dyn)), "nn.Linear.forward not restored on exit"


@needs_onednn
def test_tokenizer_decode_matches():
    torch.manual_seed(0)
    tok = Tokenizer(get_preset("tiny").tokenizer).eval()
    c = tok.config
    video = torch.rand(1, 2, c.channels, c.image_height, c.image_width)
    with torch.no_grad():
        z = tok.encode(video)
        ref = tok.decode(z)
        with PrepackedLinears(tok):
            got = tok.decode(z)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (got - ref).abs().max()


@needs_onednn
def test_changed_weights_are_repacked():
    dyn = _dyn()
    x, kw = _inputs(dyn)
    fast = PrepackedLinears(dyn)
    with torch.no_grad(), fast:
        before = dyn(x, **kw)[0]
        dyn.flow_x_head.weight.mul_(-1.0)           # an in-place update bumps the version counter
        after = dyn(x, **kw)[0]
    with torch.no_grad():
        ref = dyn(x, **kw)[0]
    assert torch.allclose(after, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before, atol=1e-3)
    assert fast.packed_bytes > 0
    fast.release()
    assert fast.packed_bytes == 0


@needs_onednn
def test_training_inside_the_context_uses_autograd():
    dyn = _dyn().train()
    x, kw = _inputs(dyn)
    with PrepackedLinears(dyn):
        dyn(x, **kw)[0].square().mean().backward()
    grads = [p.grad for p in dyn.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    ref = _dyn().train()
    ref(x, **kw)[0].square().mean().backward()
    for (n, p), q in zip(dyn.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), n


@needs_onednn
def test_overlapping_users_of_one_model():
    dyn = _dyn()
    a, b = PrepackedLinears(dyn), PrepackedLinears(dyn)
    head = dyn.flow_x_head
    with a:
        with b:
            assert "forward" in head.__dict__
        assert "forward" in head.__dict__, "a second user's exit undid the first user's swap"
    assert "forward" not in head.__dict__

    # threads entering and leaving at random leave the model restored
    def worker():
        for _ in range(50):
            with PrepackedLinears(dyn):
                pass
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("forward" not in m.__dict__ for m in _linears(dyn))


def test_disabled_is_a_no_op():
    dyn = _dyn()
    with PrepackedLinears(dyn, enabled=False):
        assert all("forward" not in m.__dict__ for m in _linears(dyn))


@needs_onednn
def test_rollout_with_and_without_prepacking_agree():
    dyn = _dyn()
    c = dyn.config
    g = torch.Generator().manual_seed(3)
    ctx = torch.rand(1, 3, c.n_spatial, c.d_spatial, generator=g) * 2 - 1
    acts = torch.rand(1, 3 + 5, c.action_dim, generator=g) * 2 - 1
    noise = torch.randn(1, 5, c.n_spatial, c.d_spatial, generator=g)
    fast = rollout(dyn, ctx, acts, horizon=5, n_steps=4, noise=noise, context_length=3, prepack=True)
    plain = rollout(dyn, ctx, acts, horizon=5, n_steps=4, noise=noise, context_length=3, prepack=False)
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-5), (fast - plain).abs().max()
