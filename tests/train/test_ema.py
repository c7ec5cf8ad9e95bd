"""The weights' exponential moving average (dreamer4_torch/train/ema.py)."""

import pytest
import torch
import torch.nn as nn

from dreamer4_torch.checkpoint import build_model
from dreamer4_torch.train.distributed import World
from dreamer4_torch.train.ema import Ema, ema_beta
from dreamer4_torch.train.runner import evaluation_model
from shared.recipes import get_preset


def test_the_average_follows_its_recursion_with_a_warm_up():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
    ema = Ema(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 2.0]]))
    ema.update(lin)            # n = 1: beta = min(0.5, 2/11) = 2/11
    expected = torch.tensor([[1.0, -2.0]]) * 2 / 11 + torch.tensor([[3.0, 2.0]]) * 9 / 11
    torch.testing.assert_close(ema.params["weight"], expected)
    for _ in range(30):        # from n = 9 on, (1 + n) / (10 + n) > 0.5: beta is the decay itself
        ema.update(lin)
    torch.testing.assert_close(ema.params["weight"], torch.tensor([[3.0, 2.0]]), atol=1e-6, rtol=0)
    assert ema_beta(0.5, 9) == 0.5 and ema_beta(0.995, 1) == pytest.approx(2 / 11)
    assert ema.updates == 31


def test_the_average_is_a_copy_not_a_view():
    lin = nn.Linear(3, 3)
    ema = Ema(lin, decay=0.9)
    before = {k: v.clone() for k, v in ema.params.items()}
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], ema.params[k]) for k in before)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match="EMA decay"):
        Ema(nn.Linear(1, 1), decay)


def test_evaluation_runs_on_the_average():
    cfg = get_preset("tiny").dynamics
    model = build_model(cfg)
    ema = Ema(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0).add_(0.5)
    world = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert evaluation_model(model, cfg, "ddp", world) is model          # no EMA: the model itself
    replica = evaluation_model(model, cfg, "ddp", world, ema)
    assert replica is not model
    got = dict(replica.named_parameters())
    for name, value in ema.params.items():
        assert torch.equal(got[name], value), name
    assert any(not torch.equal(got[n], p) for n, p in model.named_parameters())
    # buffers come from the model
    for (name, b), (_, b2) in zip(model.named_buffers(), replica.named_buffers()):
        assert torch.equal(b, b2), name
