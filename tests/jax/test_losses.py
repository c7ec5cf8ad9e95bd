"""The JAX losses against their written formulas (DREAMER4.md section 3), as tests/test_losses.py does
for PyTorch; torch-vs-JAX agreement is in parity_tests/."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from dreamer4_jax.losses import shortcut_loss, tokenizer_loss  # noqa: E402
from dreamer4_jax.tokenizer import TokenizerOutput  # noqa: E402
from shared.shortcut import draw_shortcut_indices  # noqa: E402
from tests.test_losses import K_MAX, RECON, TARGET, numpy_loss  # noqa: E402


def _out(recon, target, keep):
    t = lambda a: jnp.asarray(a, jnp.float32)[None, None]  # noqa: E731
    return TokenizerOutput(z=jnp.zeros((1, 1, 1, 1)), recon=t(recon), target=t(target),
                           keep_mask=jnp.asarray(keep)[None, None])


def test_masked_patch_mse_by_hand():
    loss, m = tokenizer_loss(_out(RECON, TARGET, [True, False, False]), image_shape=(2, 1, 3), patch_size=1)
    assert float(loss) == pytest.approx(0.3)
    assert float(m["full_mse"]) == pytest.approx(1.45 / 6)
    assert float(m["keep_fraction"]) == pytest.approx(1 / 3)
    loss_all, _ = tokenizer_loss(_out(RECON, TARGET, [True, False, False]), image_shape=(2, 1, 3),
                                 patch_size=1, mse_on="all")
    assert float(loss_all) == pytest.approx(1.45 / 6)
    loss_none, _ = tokenizer_loss(_out(RECON, TARGET, [True, True, True]), image_shape=(2, 1, 3), patch_size=1)
    assert float(loss_none) == 0.0
    with pytest.raises(ValueError, match="mse_on must be"):
        tokenizer_loss(_out(RECON, TARGET, [True, True, True]), image_shape=(2, 1, 3), patch_size=1, mse_on="x")


def test_perceptual_term_sees_the_composite_of_every_second_frame():
    seen = {}

    def perceptual(pred, target):
        seen["pred"] = pred
        return jnp.full((pred.shape[0],), 2.0)

    rng = np.random.default_rng(0)
    recon = jnp.asarray(rng.random((1, 3, 4, 3), dtype=np.float32))
    target = jnp.asarray(rng.random((1, 3, 4, 3), dtype=np.float32))
    keep = jnp.broadcast_to(jnp.asarray([True, False, True, False]), (1, 3, 4))
    out = TokenizerOutput(z=jnp.zeros(1), recon=recon, target=target, keep_mask=keep)
    loss, m = tokenizer_loss(out, image_shape=(3, 2, 2), patch_size=1, perceptual=perceptual)
    mse, _ = tokenizer_loss(out, image_shape=(3, 2, 2), patch_size=1)
    assert float(loss) == pytest.approx(float(mse) + 0.2 * 2.0)
    composite = jnp.where(keep[..., None], target, recon)[:, ::2]
    expected = composite.reshape(2, 2, 2, 3).transpose(0, 3, 1, 2) * 2 - 1
    np.testing.assert_allclose(seen["pred"], expected, rtol=1e-6)
    assert float(m["perceptual"]) == 2.0


class Affine(nnx.Module):
    """f(z, i, e) = w z + 0.01 i + 0.1 e (tests/test_losses.py's model, in NNX)."""

    def __init__(self, w=0.7):
        self.w = nnx.Param(jnp.asarray(float(w)))
        self.calls = []

    def __call__(self, z, *, signal_idx, step_idx, actions=None, act_mask=None, agent_tokens=None):
        self.calls.append((z.shape[0], None if actions is None else actions.shape[0]))
        out = self.w[...] * z + 0.01 * signal_idx[..., None, None] + 0.1 * step_idx[..., None, None]
        return out, None


def test_single_flow_value_by_hand():
    z1 = jnp.ones((1, 1, 1, 1))
    loss, _ = shortcut_loss(Affine(1.0), z1, signal_idx=jnp.asarray([[4]]), step_idx=jnp.asarray([[0]]),
                            noise=jnp.zeros_like(z1), n_bootstrap=0, k_max=K_MAX)
    assert float(loss) == pytest.approx(0.55 * 0.46 ** 2)


def test_shortcut_loss_matches_formula_and_stops_the_target_gradient():
    rng = np.random.default_rng(0)
    B, T, S, C = 4, 3, 2, 3
    z1 = rng.normal(size=(B, T, S, C))
    z0 = rng.normal(size=(B, T, S, C))
    draw = draw_shortcut_indices(rng, B, T, K_MAX, n_bootstrap=2)
    sig, step = draw.signal_idx, draw.step_idx
    model = Affine(0.7)
    args = dict(signal_idx=jnp.asarray(sig), step_idx=jnp.asarray(step), noise=jnp.asarray(z0, jnp.float32),
                n_bootstrap=2, k_max=K_MAX, actions=jnp.zeros((B, T, 16)))
    loss, m = shortcut_loss(model, jnp.asarray(z1, jnp.float32), **args)
    expected = numpy_loss(0.7, z1, z0, sig.astype(float), step.astype(float), nb=2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert "boot_mse" in m and float(m["loss"]) == pytest.approx(expected, rel=1e-5)
    assert model.calls == [(4, 4), (2, 2), (2, 2)]        # main pass, two half-steps on the bootstrap rows

    grad = nnx.grad(lambda mdl: shortcut_loss(mdl, jnp.asarray(z1, jnp.float32), **args)[0])(Affine(0.7))
    eps = 1e-6
    fd = (numpy_loss(0.7 + eps, z1, z0, sig.astype(float), step.astype(float), nb=2, w_target=0.7)
          - numpy_loss(0.7 - eps, z1, z0, sig.astype(float), step.astype(float), nb=2, w_target=0.7)) / (2 * eps)
    assert float(grad.w[...]) == pytest.approx(fd, rel=1e-4)
    fd_through = (numpy_loss(0.7 + eps, z1, z0, sig.astype(float), step.astype(float), nb=2)
                  - numpy_loss(0.7 - eps, z1, z0, sig.astype(float), step.astype(float), nb=2)) / (2 * eps)
    assert abs(fd_through - fd) > 1e-3 * abs(fd)        # the check above can tell the two apart


def test_flow_only_batch_runs_one_pass_and_argument_errors():
    model = Affine()
    z1 = jnp.ones((3, 2, 2, 2))
    shortcut_loss(model, z1, signal_idx=jnp.asarray([[0, 7]] * 3), step_idx=jnp.full((3, 2), 3),
                  noise=z1, n_bootstrap=0, k_max=K_MAX)
    assert model.calls == [(3, None)]
    z1 = jnp.zeros((2, 1, 1, 1))
    idx = jnp.zeros((2, 1), jnp.int32)
    with pytest.raises(ValueError, match=r"n_bootstrap must be in \[0, 2\)"):
        shortcut_loss(Affine(), z1, signal_idx=idx, step_idx=idx, noise=z1, n_bootstrap=2, k_max=8)
    with pytest.raises(ValueError, match="noise shape"):
        shortcut_loss(Affine(), z1, signal_idx=idx, step_idx=idx, noise=z1[:1], n_bootstrap=0, k_max=8)
