"""The losses against their written formulas (DREAMER4.md section 3) on hand-sized cases."""

import numpy as np
import pytest
import torch

from dreamer4_torch.losses import shortcut_loss, tokenizer_loss
from dreamer4_torch.tokenizer import TokenizerOutput

# ---------------------------------------------------------------- tokenizer loss


def _out(recon, target, keep):
    t = lambda a: torch.tensor(a, dtype=torch.float32)[None, None]  # noqa: E731
    return TokenizerOutput(z=torch.zeros(1, 1, 1, 1), recon=t(recon), target=t(target),
                           keep_mask=torch.tensor(keep)[None, None])


RECON = [[0.5, 0.5], [0.2, 0.4], [1.0, 0.0]]
TARGET = [[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]]


def test_masked_patch_mse_by_hand():
    # masked patches 1 and 2: squared errors (0.04 + 0.16) + (1.0 + 0) = 1.2 over 2 patches x 2 features
    loss, m = tokenizer_loss(_out(RECON, TARGET, [True, False, False]), image_shape=(2, 1, 3), patch_size=1)
    assert loss.item() == pytest.approx(0.3)
    # all patches: (0.25 + 0.2 + 1.0) / 6
    assert m["full_mse"].item() == pytest.approx(1.45 / 6)
    assert m["keep_fraction"].item() == pytest.approx(1 / 3)
    loss_all, _ = tokenizer_loss(_out(RECON, TARGET, [True, False, False]), image_shape=(2, 1, 3),
                                 patch_size=1, mse_on="all")
    assert loss_all.item() == pytest.approx(1.45 / 6)


def test_contrast_weighted_mse_by_hand():
    """One 2x2 patch of one channel, target [0, 0, 0, 1]: its mean is 0.25, the deviations 0.25 x 3 and
    0.75, so with C = 4 the weights are 2, 2, 2, 4; a zero reconstruction errs 1 on the last value only."""
    out = _out([[0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]], [False])
    loss, m = tokenizer_loss(out, image_shape=(1, 2, 2), patch_size=2, mse_on="all", contrast_weight=4.0)
    assert loss.item() == pytest.approx(4.0 / 4) and m["weighted_mse"].item() == pytest.approx(1.0)
    assert m["mse"].item() == pytest.approx(0.25)                     # the metric stays unweighted
    plain, m0 = tokenizer_loss(out, image_shape=(1, 2, 2), patch_size=2, mse_on="all")
    assert plain.item() == pytest.approx(0.25) and "weighted_mse" not in m0
    # the mean is taken per channel: two flat channels (0 and 1) have no contrast, weights 1
    flat = _out([[0.0] * 8], [[0.0] * 4 + [1.0] * 4], [False])
    loss, _ = tokenizer_loss(flat, image_shape=(2, 2, 2), patch_size=2, mse_on="all", contrast_weight=4.0)
    assert loss.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="contrast_weight"):
        tokenizer_loss(flat, image_shape=(2, 2, 2), patch_size=2, contrast_weight=-1.0)


def test_nothing_masked_gives_zero_masked_loss():
    loss, _ = tokenizer_loss(_out(RECON, TARGET, [True, True, True]), image_shape=(2, 1, 3), patch_size=1)
    assert loss.item() == 0.0


def test_perceptual_term_sees_the_composite_of_every_second_frame():
    seen = {}

    def perceptual(pred, target):
        seen["pred"], seen["target"] = pred, target
        return torch.full((pred.shape[0],), 2.0)

    B, T, Np, Dp = 1, 3, 4, 3          # 2x2 patches of a 1x... use 3 channels, patch 1, 2x2 image
    recon = torch.rand(B, T, Np, Dp)
    target = torch.rand(B, T, Np, Dp)
    keep = torch.tensor([True, False, True, False]).expand(B, T, Np)
    out = TokenizerOutput(z=torch.zeros(1), recon=recon, target=target, keep_mask=keep)
    loss, m = tokenizer_loss(out, image_shape=(3, 2, 2), patch_size=1, perceptual=perceptual)
    mse, _ = tokenizer_loss(out, image_shape=(3, 2, 2), patch_size=1)
    assert loss.item() == pytest.approx(mse.item() + 0.2 * 2.0)
    assert seen["pred"].shape == (2, 3, 2, 2)                    # frames 0 and 2
    composite = torch.where(keep[..., None], target, recon)[:, ::2]
    expected = composite.reshape(2, 2, 2, 3).permute(0, 3, 1, 2) * 2 - 1    # patch p = pixel (p//2, p%2)
    torch.testing.assert_close(seen["pred"], expected)
    assert m["perceptual"].item() == 2.0


# ---------------------------------------------------------------- shortcut loss

K_MAX = 8


class Affine(torch.nn.Module):
    """f(z, i, e) = w z + 0.01 i + 0.1 e: simple enough to evaluate the loss by hand in numpy."""

    def __init__(self, w=0.7):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float(w)))
        self.calls = []

    def forward(self, z, *, signal_idx, step_idx, actions=None, act_mask=None, agent_tokens=None):
        self.calls.append((torch.is_grad_enabled(), z.shape[0], None if actions is None else actions.shape[0]))
        out = self.w * z + 0.01 * signal_idx[..., None, None].float() + 0.1 * step_idx[..., None, None].float()
        return out, None


def numpy_loss(w, z1, z0, sig, step, nb, w_target=None):
    """The written formula, independently in numpy; w_target is the weight used inside the stop-gradient."""
    w_target = w if w_target is None else w_target
    f = lambda ww, z, i, e: ww * z + 0.01 * i[..., None, None] + 0.1 * e[..., None, None]  # noqa: E731
    B = z1.shape[0]
    nf = B - nb
    tau = sig / K_MAX
    d = 2.0 ** -step
    T4 = lambda a: a[..., None, None]  # noqa: E731
    zt = (1 - T4(tau)) * z0 + T4(tau) * z1
    x1 = f(w, zt, sig, step)
    wgt = 0.9 * tau + 0.1
    l_flow = (wgt[:nf] * ((x1[:nf] - z1[:nf]) ** 2).mean(axis=(2, 3))).mean()
    l_boot = 0.0
    if nb:
        r = slice(nf, B)
        h = d[r] / 2
        xp = f(w_target, zt[r], sig[r], step[r] + 1)
        bp = (xp - zt[r]) / T4(1 - tau[r])
        zm = zt[r] + T4(h) * bp
        xpp = f(w_target, zm, sig[r] + K_MAX * h, step[r] + 1)
        bpp = (xpp - zm) / T4(1 - tau[r] - h)
        vhat = (x1[r] - zt[r]) / T4(1 - tau[r])
        vbar = (bp + bpp) / 2
        l_boot = (wgt[r] * (1 - tau[r]) ** 2 * ((vhat - vbar) ** 2).mean(axis=(2, 3))).mean()
    return (l_flow * nf + l_boot * nb) / B


def test_single_flow_value_by_hand():
    # z1 = 1, z0 = 0, signal index 4 (tau = 0.5) -> z_tau = 0.5; step index 0; w = 1
    model = Affine(w=1.0)
    z1 = torch.ones(1, 1, 1, 1)
    loss, m = shortcut_loss(model, z1, signal_idx=torch.tensor([[4]]), step_idx=torch.tensor([[0]]),
                            noise=torch.zeros_like(z1), n_bootstrap=0, k_max=K_MAX)
    # x1_hat = 0.5 + 0.04 + 0 = 0.54; w(0.5) = 0.55; loss = 0.55 * (0.54 - 1)^2
    assert loss.item() == pytest.approx(0.55 * 0.46 ** 2)


def test_shortcut_loss_matches_formula_with_bootstrap_rows():
    rng = np.random.default_rng(0)
    B, T, S, C = 4, 3, 2, 3
    z1 = rng.normal(size=(B, T, S, C))
    z0 = rng.normal(size=(B, T, S, C))
    from shared.shortcut import draw_shortcut_indices
    draw = draw_shortcut_indices(rng, B, T, K_MAX, n_bootstrap=2)
    sig, step = draw.signal_idx, draw.step_idx
    model = Affine(w=0.7)
    loss, m = shortcut_loss(model, torch.tensor(z1, dtype=torch.float32), signal_idx=torch.from_numpy(sig),
                            step_idx=torch.from_numpy(step), noise=torch.tensor(z0, dtype=torch.float32),
                            n_bootstrap=2, k_max=K_MAX, actions=torch.zeros(B, T, 16))
    expected = numpy_loss(0.7, z1, z0, sig.astype(float), step.astype(float), nb=2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert "boot_mse" in m and m["loss"].item() == pytest.approx(expected, rel=1e-5)
    # main pass with autograd over all rows, then two half-steps without a graph on the 2 bootstrap rows,
    # each given only its own rows' actions
    assert model.calls == [(True, 4, 4), (False, 2, 2), (False, 2, 2)]

    # the bootstrap target is a stop-gradient: d loss / d w holds the target's w fixed
    loss.backward()
    eps = 1e-6
    fd = (numpy_loss(0.7 + eps, z1, z0, sig.astype(float), step.astype(float), nb=2, w_target=0.7)
          - numpy_loss(0.7 - eps, z1, z0, sig.astype(float), step.astype(float), nb=2, w_target=0.7)) / (2 * eps)
    assert model.w.grad.item() == pytest.approx(fd, rel=1e-4)
    fd_through = (numpy_loss(0.7 + eps, z1, z0, sig.astype(float), step.astype(float), nb=2)
                  - numpy_loss(0.7 - eps, z1, z0, sig.astype(float), step.astype(float), nb=2)) / (2 * eps)
    assert abs(fd_through - fd) > 1e-3 * abs(fd)        # the check above can tell the two apart


def test_flow_only_batch_runs_one_pass():
    model = Affine()
    z1 = torch.randn(3, 2, 2, 2)
    sig = torch.tensor([[0, 7]] * 3)
    shortcut_loss(model, z1, signal_idx=sig, step_idx=torch.full((3, 2), 3), noise=torch.randn_like(z1),
                  n_bootstrap=0, k_max=K_MAX)
    assert model.calls == [(True, 3, None)]


def test_argument_errors():
    z1 = torch.zeros(2, 1, 1, 1)
    idx = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"n_bootstrap must be in \[0, 2\)"):
        shortcut_loss(Affine(), z1, signal_idx=idx, step_idx=idx, noise=z1, n_bootstrap=2, k_max=8)
    with pytest.raises(ValueError, match="noise shape"):
        shortcut_loss(Affine(), z1, signal_idx=idx, step_idx=idx, noise=z1[:1], n_bootstrap=0, k_max=8)


def test_shortcut_loss_trains_the_real_model():
    """The loss runs through a real Dynamics with bootstrap rows and its gradients reach every used weight."""
    from dreamer4_torch import Dynamics
    from shared.recipes import get_preset
    torch.manual_seed(0)
    dyn = Dynamics(get_preset("tiny").dynamics)
    rng = np.random.default_rng(1)
    from shared.shortcut import draw_shortcut_indices
    draw = draw_shortcut_indices(rng, 4, 3, 8, 1)
    z1 = torch.rand(4, 3, 2, 16) * 2 - 1
    loss, _ = shortcut_loss(dyn, z1, signal_idx=torch.from_numpy(draw.signal_idx),
                            step_idx=torch.from_numpy(draw.step_idx), noise=torch.randn_like(z1),
                            n_bootstrap=1, k_max=8, actions=torch.rand(4, 3, 16), act_mask=torch.ones(16))
    loss.backward()
    assert torch.isfinite(loss)
    assert dyn.flow_x_head.weight.grad.abs().sum() > 0
