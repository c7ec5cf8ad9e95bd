"""The JAX models on their own: parameter table, initialisation, shapes, causality, masks, errors.

Mirrors tests/test_models.py (the PyTorch backend); parity with PyTorch lives in parity_tests/.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from dreamer4_jax import Dynamics, Tokenizer, set_dropout_source  # noqa: E402
from dreamer4_jax.init import ParameterMismatch, check_against_table, jax_name, named_params  # noqa: E402
from dreamer4_jax.layers import Attention, SpaceAttention  # noqa: E402
from shared.config import TransformerConfig, replace  # noqa: E402
from shared.recipes import get_preset  # noqa: E402
from shared.params import count_params, param_table  # noqa: E402

TINY = get_preset("tiny")
PAPER_TF = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1, transformer__logit_softcap=30.0,
                transformer__time_rope=True)


def tiny_tokenizer(**changes):
    return Tokenizer(replace(TINY.tokenizer, **changes) if changes else TINY.tokenizer, rngs=nnx.Rngs(0))


def tiny_dynamics(**changes):
    dyn = Dynamics(replace(TINY.dynamics, **changes) if changes else TINY.dynamics, rngs=nnx.Rngs(0))
    # the zero-initialised head would hide everything the tests look at
    dyn.flow_x_head.kernel.set_value(0.1 * jax.random.normal(jax.random.key(1), dyn.flow_x_head.kernel.shape))
    return dyn


def indices(B, T, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 9, (B, T))), jnp.asarray(rng.integers(0, 4, (B, T)))


@pytest.mark.parametrize("preset", ["tiny", "dmc64"])
def test_parameters_equal_the_table(preset):
    p = get_preset(preset)
    for model, cfg in ((Tokenizer(p.tokenizer), p.tokenizer), (Dynamics(p.dynamics), p.dynamics)):
        chex.assert_trees_all_equal_shapes({n: v[...] for n, v in named_params(model).items()},
                                           {jax_name(s): jax.ShapeDtypeStruct(s.jax_shape, jnp.float32)
                                            for s in param_table(cfg)})
        assert sum(v.size for v in named_params(model).values()) == count_params(cfg)


def test_nnx_paths_are_the_torch_names():
    tok = tiny_tokenizer()
    names = named_params(tok)
    assert names["encoder/transformer/layers/0/space/attn/qkv/kernel"].shape == (32, 96)   # (in, out)
    assert "decoder/patch_queries" in names and "encoder/mae/mask_token" in names
    dyn = tiny_dynamics()
    assert named_params(dyn)["step_embed/embedding"].shape == (4, 32)


def test_paper_features_add_their_parameters():
    tok = tiny_tokenizer(**PAPER_TF)
    names = named_params(tok)
    assert names["encoder/transformer/layers/0/space/attn/q_norm/scale"].shape == (16,)
    assert names["encoder/transformer/layers/0/space/attn/qkv/kernel"].shape == (32, 64)
    check_against_table(tok, param_table(tok.config))


def test_mismatch_is_named():
    with pytest.raises(ParameterMismatch, match="missing encoder/transformer/layers/2/norm1/scale"):
        check_against_table(tiny_tokenizer(), param_table(replace(TINY.tokenizer, transformer__depth=3)))


def test_initialisation_follows_the_table():
    dyn = Dynamics(get_preset("dmc64").dynamics, rngs=nnx.Rngs(3))
    assert not np.any(np.asarray(dyn.flow_x_head.kernel[...])) and not np.any(np.asarray(dyn.flow_x_head.bias[...]))
    assert not np.any(np.asarray(dyn.action_encoder.fc2.bias[...]))
    assert 0.5e-3 < float(jnp.std(dyn.action_encoder.fc2.kernel[...])) < 1.5e-3
    assert np.array_equal(np.asarray(dyn.transformer.layers[0].norm1.scale[...]), np.ones(192))
    assert 0.015 < float(jnp.std(dyn.register_tokens[...])) < 0.025
    assert 0.9 < float(jnp.std(dyn.signal_embed.embedding[...])) < 1.1
    bound = 1 / np.sqrt(192)
    w = np.asarray(dyn.transformer.layers[0].mlp.fc_in.kernel[...])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    # different seeds give different weights, the same seed the same
    a = np.asarray(Dynamics(TINY.dynamics, rngs=nnx.Rngs(1)).spatial_proj.kernel[...])
    b = np.asarray(Dynamics(TINY.dynamics, rngs=nnx.Rngs(1)).spatial_proj.kernel[...])
    c = np.asarray(Dynamics(TINY.dynamics, rngs=nnx.Rngs(2)).spatial_proj.kernel[...])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("paper", [False, True])
def test_tokenizer_shapes_range_and_causality(paper):
    tok = tiny_tokenizer(**(PAPER_TF if paper else {})).eval()
    assert not tok.training
    video = jnp.asarray(np.random.default_rng(0).random((1, 4, 3, 16, 16), dtype=np.float32))
    z = tok.encode(video)
    assert z.shape == (1, 4, 4, 8) and float(jnp.abs(z).max()) < 1
    out = tok.decode(z)
    assert out.shape == video.shape and float(out.min()) > 0 and float(out.max()) < 1
    changed = video.at[:, 3:].set(0.5)
    z2 = tok.encode(changed)
    assert np.array_equal(z[:, :3], z2[:, :3]) and not np.allclose(z[:, 3], z2[:, 3])
    zc = z.at[:, 3:].set(0.1)
    d2 = tok.decode(zc)
    assert np.array_equal(out[:, :3], d2[:, :3]) and not np.allclose(out[:, 3], d2[:, 3])


def test_encode_and_decode_chunk_longer_clips_by_clip_frames():
    whole, chunked = tiny_tokenizer().eval(), tiny_tokenizer(clip_frames=3).eval()
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.random((2, 7, 3, 16, 16), dtype=np.float32))
    keep = jnp.asarray(rng.random((2, 7, 16)) > 0.3)
    z = chunked.encode(video)
    by_hand = jnp.concatenate([whole.encode(video[:, s:s + 3]) for s in (0, 3, 6)], axis=1)
    np.testing.assert_array_equal(z, by_hand)
    z_all = whole.encode(video)
    np.testing.assert_allclose(z[:, :3], z_all[:, :3], rtol=1e-5, atol=1e-6)   # causal: same first chunk
    assert not np.allclose(z[:, 3:], z_all[:, 3:], atol=1e-4)
    masked = jnp.concatenate([whole.encode(video[:, s:s + 3], keep[:, s:s + 3]) for s in (0, 3, 6)], axis=1)
    np.testing.assert_array_equal(chunked.encode(video, keep), masked)
    frames = chunked.decode(z)
    np.testing.assert_array_equal(frames, jnp.concatenate([whole.decode(z[:, s:s + 3]) for s in (0, 3, 6)], axis=1))
    assert not np.allclose(frames[:, 3:], whole.decode(z)[:, 3:], atol=1e-4)


def test_a_single_frame_tokenizer_decodes_a_long_clip_frame_by_frame():
    # issue #25: decoding 16 frames in one call must not attend across them when trained on single frames
    tok = tiny_tokenizer(clip_frames=1).eval()
    z = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 16, 4, 8)).astype(np.float32))
    frames = tok.decode(z)
    np.testing.assert_array_equal(frames, jnp.concatenate([tok.decode(z[:, t:t + 1]) for t in range(16)], axis=1))
    assert not np.allclose(frames, tiny_tokenizer().eval().decode(z), atol=1e-4)


@pytest.mark.parametrize("paper", [False, True])
def test_dynamics_shapes_and_causality(paper):
    dyn = tiny_dynamics(**(PAPER_TF if paper else {})).eval()
    rng = np.random.default_rng(0)
    packed = jnp.asarray(rng.normal(size=(1, 4, 2, 16)).astype(np.float32))
    actions = jnp.asarray(rng.uniform(-1, 1, (1, 4, 16)).astype(np.float32))
    sig, stp = indices(1, 4)
    x, h = dyn(packed, signal_idx=sig, step_idx=stp, actions=actions)
    assert x.shape == packed.shape and h.shape == (1, 4, 1, 32)
    y, _ = dyn(packed.at[:, 2].add(1.0), signal_idx=sig.at[:, 3].set(0), step_idx=stp,
               actions=actions.at[:, 2:].set(0.3))
    assert np.array_equal(x[:, :2], y[:, :2]) and not np.allclose(x[:, 2], y[:, 2])
    x2, h2 = tiny_dynamics(n_agent=0).eval()(packed, signal_idx=sig, step_idx=stp)
    assert x2.shape == packed.shape and h2 is None


def test_nothing_sees_the_agent_tokens():
    for mode in ("wm_agent_isolated", "wm_agent"):
        dyn = tiny_dynamics(space_mode=mode).eval()
        rng = np.random.default_rng(1)
        packed = jnp.asarray(rng.normal(size=(1, 4, 2, 16)).astype(np.float32))
        agent = jnp.asarray(rng.normal(size=(1, 4, 1, 32)).astype(np.float32))
        sig, stp = indices(1, 4)
        x0, h0 = dyn(packed, signal_idx=sig, step_idx=stp)
        x1, h1 = dyn(packed, signal_idx=sig, step_idx=stp, agent_tokens=agent)
        x2, h2 = dyn(packed + 1, signal_idx=sig, step_idx=stp, agent_tokens=agent)
        assert np.array_equal(x0, x1), mode
        assert not np.allclose(h0, h1), mode
        assert (not np.allclose(h1, h2)) == (mode == "wm_agent"), mode


def test_actions_mask_and_clamp():
    dyn = tiny_dynamics().eval()
    rng = np.random.default_rng(2)
    packed = jnp.asarray(rng.normal(size=(1, 4, 2, 16)).astype(np.float32))
    sig, stp = indices(1, 4)
    acts = jnp.asarray(rng.uniform(-1, 1, (1, 4, 16)).astype(np.float32))
    mask = jnp.zeros(16).at[:2].set(1)
    base = dyn(packed, signal_idx=sig, step_idx=stp)[0]
    with_act = dyn(packed, signal_idx=sig, step_idx=stp, actions=acts, act_mask=mask)[0]
    same = dyn(packed, signal_idx=sig, step_idx=stp, actions=acts.at[..., 2:].set(0.9), act_mask=mask)[0]
    clamped = dyn(packed, signal_idx=sig, step_idx=stp, actions=jnp.sign(acts) * 3, act_mask=mask)[0]
    unit = dyn(packed, signal_idx=sig, step_idx=stp, actions=jnp.sign(acts), act_mask=mask)[0]
    assert not np.allclose(base, with_act)
    assert np.array_equal(with_act, same) and np.array_equal(clamped, unit)


def test_mae_keep_masks():
    tok = tiny_tokenizer().eval()
    video = jnp.asarray(np.random.default_rng(3).random((1, 4, 3, 16, 16), dtype=np.float32))
    keep_all = jnp.ones((1, 4, 16), bool)
    assert np.array_equal(tok.encode(video), tok.encode(video, keep_mask=keep_all))
    out = tok(video)
    assert bool(out.keep_mask.all()) and np.array_equal(out.z, tok.encode(video))
    keep = keep_all.at[:, :, :5].set(False)
    assert not np.allclose(tok.encode(video, keep_mask=keep), tok.encode(video))
    v2 = video.at[:, :, :, :4, :4].set(0.0)                   # patch 0 is dropped: its content is unseen
    assert np.array_equal(tok.encode(video, keep_mask=keep), tok.encode(v2, keep_mask=keep))
    # training mode draws from the mae stream: p ~ U(0.5, 0.5) keeps about half
    tok = tiny_tokenizer(mae_p_min=0.5, mae_p_max=0.5)
    keep = tok.draw_keep_mask(200, 4)
    assert keep.shape == (200, 4, 16) and abs(float(keep.mean()) - 0.5) < 0.02
    assert not np.array_equal(keep, tok.draw_keep_mask(200, 4))          # the stream advances
    assert tiny_tokenizer(mae_p_min=0.0, mae_p_max=0.0).train()(video).keep_mask.all()


def test_input_errors_are_clear():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"video must have shape \(B, T, 3, 16, 16\)"):
        tok.encode(jnp.zeros((1, 2, 3, 32, 32)))
    with pytest.raises(TypeError, match=r"float array in \[0, 1\].*uint8"):
        tok.encode(jnp.zeros((1, 2, 3, 16, 16), jnp.uint8))
    with pytest.raises(ValueError, match=r"z must have shape \(B, T, 4, 8\), got \(1, 2, 4, 9\)"):
        tok.decode(jnp.zeros((1, 2, 4, 9)))
    with pytest.raises(TypeError, match=r"z must be an array of shape \(B, T, 4, 8\), got list"):
        tok.decode(np.zeros((1, 2, 4, 8)).tolist())
    with pytest.raises(ValueError, match="keep_mask must be a bool array"):
        tok(jnp.zeros((1, 2, 3, 16, 16)), keep_mask=jnp.ones((1, 2, 15), bool))
    dyn = tiny_dynamics()
    sig, stp = indices(1, 2)
    with pytest.raises(ValueError, match=r"packed latents must have shape \(B, T, 2, 16\)"):
        dyn(jnp.zeros((1, 2, 4, 8)), signal_idx=sig, step_idx=stp)
    with pytest.raises(ValueError, match=r"signal_idx values must lie in \[0, 8\]"):
        dyn(jnp.zeros((1, 2, 2, 16)), signal_idx=sig + 9, step_idx=stp)
    with pytest.raises(ValueError, match=r"actions must have shape \(1, 2, 16\)"):
        dyn(jnp.zeros((1, 2, 2, 16)), signal_idx=sig, step_idx=stp, actions=jnp.zeros((1, 2, 6)))
    with pytest.raises(TypeError, match="step_idx must be an integer array"):
        dyn(jnp.zeros((1, 2, 2, 16)), signal_idx=sig, step_idx=stp.astype(jnp.float32))
    with pytest.raises(ValueError, match="rngs has no 'dropout' stream"):
        Dynamics(replace(TINY.dynamics, transformer__dropout=0.1), rngs=nnx.Rngs(params=0))


def test_jit_matches_eager_and_mode_switches():
    dyn = tiny_dynamics().eval()
    packed = jnp.asarray(np.random.default_rng(4).normal(size=(1, 4, 2, 16)).astype(np.float32))
    sig, stp = indices(1, 4)
    eager = dyn(packed, signal_idx=sig, step_idx=stp)[0]
    jitted = nnx.jit(lambda m, p, s, e: m(p, signal_idx=s, step_idx=e)[0])(dyn, packed, sig, stp)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    assert dyn.train() is dyn and dyn.training and dyn.transformer.layers[0].drop1.deterministic is False
    assert dyn.eval() is dyn and not dyn.training and dyn.transformer.layers[0].space.attn.deterministic


def test_injected_dropout_is_reproducible_and_sites_match_torch_names():
    tok = tiny_tokenizer(transformer__dropout=0.3).train()
    video = jnp.asarray(np.random.default_rng(5).random((1, 4, 3, 16, 16), dtype=np.float32))
    sites = []

    def source(site, shape):
        sites.append((site, shape))
        return np.random.default_rng(abs(hash((site, shape))) % 2**32).random(shape) >= 0.3

    set_dropout_source(tok, source)
    a, b = tok.encode(video), tok.encode(video)
    assert np.array_equal(a, b)
    names = {s for s, _ in sites}
    assert {"encoder.transformer.layers.0.drop1", "encoder.transformer.layers.0.drop2",
            "encoder.transformer.layers.0.space.attn", "encoder.transformer.layers.0.time.attn",
            "encoder.transformer.layers.1.mlp.drop"} <= names
    assert ("encoder.transformer.layers.0.space.attn", (4, 2, 20, 20)) in sites    # (B*T, H, S, S) probs
    assert not np.allclose(a, tok.eval().encode(video))
    set_dropout_source(tok, None)
    tok.train()
    assert not np.array_equal(tok.encode(video), tok.encode(video))          # the dropout stream advances


def test_fully_masked_query_row_gives_zeros_like_torch_sdpa():
    tf = TransformerConfig(d_model=8, n_heads=2, depth=1)
    mask = np.ones((3, 3), bool)
    mask[1] = False
    mask[0, 2] = False
    attn = Attention(tf, nnx.Rngs(0))
    attn.qkv.kernel.set_value(jax.random.normal(jax.random.key(0), attn.qkv.kernel.shape))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 3, 8)).astype(np.float32))
    q, k, v = attn.project(x)
    y = attn.attend(q, k, v, mask=mask)
    assert np.isfinite(np.asarray(y)).all() and np.array_equal(np.asarray(y[:, 1]), np.zeros((2, 8)))
    y_full = attn.attend(q, k, v, mask=np.ones((3, 3), bool))
    assert not np.allclose(y[:, 0], y_full[:, 0])              # the mask does act on the other rows
    with pytest.raises(ValueError, match="square"):
        SpaceAttention(tf, np.ones((2, 3), bool), nnx.Rngs(0))
