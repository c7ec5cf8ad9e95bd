import numpy as np
import pytest
import torch

from dreamer4_torch import Dynamics, Tokenizer, set_dropout_source
from dreamer4_torch.init import ParameterMismatch, check_against_table
from shared.config import replace
from shared.recipes import get_preset
from shared.params import count_params, param_table

TINY = get_preset("tiny")
PAPER_TF = dict(transformer__qk_norm=True, transformer__final_norm=True, transformer__n_kv_heads=1, transformer__logit_softcap=30.0,
                transformer__time_rope=True)


def tiny_tokenizer(**changes):
    torch.manual_seed(0)
    return Tokenizer(replace(TINY.tokenizer, **changes) if changes else TINY.tokenizer)


def tiny_dynamics(**changes):
    torch.manual_seed(0)
    dyn = Dynamics(replace(TINY.dynamics, **changes) if changes else TINY.dynamics)
    with torch.no_grad():  # the zero-initialised head would hide everything the tests look at
        dyn.flow_x_head.weight.normal_(0, 0.1)
    return dyn


def indices(B, T, k_max=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, k_max + 1, (B, T), generator=g), torch.randint(0, 4, (B, T), generator=g))


@pytest.mark.parametrize("preset", ["tiny", "dmc64", "dmc128"])
def test_parameters_equal_the_table(preset):
    p = get_preset(preset)
    for model, cfg in ((Tokenizer(p.tokenizer), p.tokenizer), (Dynamics(p.dynamics), p.dynamics)):
        named = [(n, tuple(t.shape)) for n, t in model.named_parameters()]
        table = [(s.name, s.shape) for s in param_table(cfg)]
        assert sorted(named) == sorted(table)
        assert sum(t.numel() for t in model.parameters()) == count_params(cfg)


def test_paper_features_add_their_parameters():
    tok = tiny_tokenizer(**PAPER_TF)
    names = dict(tok.named_parameters())
    assert names["encoder.transformer.layers.0.space.attn.q_norm.scale"].shape == (16,)
    # one kv head of 16 channels: qkv width = 32 + 2 * 16
    assert names["encoder.transformer.layers.0.space.attn.qkv.weight"].shape == (64, 32)
    check_against_table(tok, param_table(tok.config))


def test_bottleneck_norm_bounds_the_pre_tanh_values():
    """With bottleneck_norm every latent's pre-tanh vector has unit RMS (so tanh stays off its tails);
    without it the pre-tanh values are the projection's, at whatever scale the weights give."""
    video = torch.rand(2, 3, 3, 16, 16)
    scaled = tiny_tokenizer()
    with torch.no_grad():
        scaled.encoder.bottleneck_proj.weight.mul_(50.0)
        pre = torch.atanh(scaled.encode(video).clamp(-1 + 1e-6, 1 - 1e-6))
    assert pre.pow(2).mean(-1).sqrt().min() > 2.0          # saturated without the norm
    normed = tiny_tokenizer(bottleneck_norm=True)
    with torch.no_grad():
        normed.encoder.bottleneck_proj.weight.mul_(50.0)
        z = normed.encode(video)
    rms = torch.atanh(z.double()).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-4, rtol=0)
    assert sorted(dict(normed.named_parameters())) == sorted(dict(scaled.named_parameters()))  # no parameters


def test_dmc128_parameter_counts_match_upstream():
    p = get_preset("dmc128")
    assert count_params(p.tokenizer) == 21_361_488      # upstream: about 21.4M
    assert count_params(p.dynamics) == 42_642_496       # upstream: about 42.6M


def test_mismatch_is_named():
    tok = tiny_tokenizer()
    with pytest.raises(ParameterMismatch, match="missing encoder.transformer.layers.2.norm1.scale"):
        check_against_table(tok, param_table(replace(TINY.tokenizer, transformer__depth=3)))


def test_initialisation_follows_the_table():
    dyn = Dynamics(get_preset("dmc64").dynamics)
    assert torch.count_nonzero(dyn.flow_x_head.weight) == 0 and torch.count_nonzero(dyn.flow_x_head.bias) == 0
    assert torch.count_nonzero(dyn.action_encoder.fc2.bias) == 0
    assert 0.5e-3 < dyn.action_encoder.fc2.weight.std().item() < 1.5e-3
    assert torch.equal(dyn.transformer.layers[0].norm1.scale, torch.ones(192))
    assert 0.015 < dyn.register_tokens.std().item() < 0.025
    bound = 1 / np.sqrt(192)
    w = dyn.transformer.layers[0].mlp.fc_in.weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.9 * bound


@pytest.mark.parametrize("paper", [False, True])
def test_tokenizer_shapes_and_range(paper):
    tok = tiny_tokenizer(**(PAPER_TF if paper else {})).eval()
    video = torch.rand(2, 3, 3, 16, 16)
    z = tok.encode(video)
    assert z.shape == (2, 3, 4, 8) and z.abs().max() < 1
    out = tok.decode(z)
    assert out.shape == video.shape and out.min() > 0 and out.max() < 1


def test_dynamics_shapes():
    dyn = tiny_dynamics().eval()
    packed = torch.randn(2, 5, 2, 16)
    sig, stp = indices(2, 5)
    x, h = dyn(packed, signal_idx=sig, step_idx=stp)
    assert x.shape == packed.shape and h.shape == (2, 5, 1, 32)
    x2, h2 = tiny_dynamics(n_agent=0).eval()(packed, signal_idx=sig, step_idx=stp)
    assert x2.shape == packed.shape and h2 is None


def test_pack_unpack():
    dyn = tiny_dynamics()
    z = torch.randn(2, 3, 4, 8)
    packed = dyn.pack(z)
    assert packed.shape == (2, 3, 2, 16)
    assert torch.equal(packed[0, 0, 1], torch.cat([z[0, 0, 2], z[0, 0, 3]]))   # latents 2i, 2i+1 concatenated
    assert torch.equal(dyn.unpack(packed), z)


@pytest.mark.parametrize("paper", [False, True])
def test_tokenizer_is_causal(paper):
    tok = tiny_tokenizer(**(PAPER_TF if paper else {})).eval()
    video = torch.rand(1, 5, 3, 16, 16)
    changed = video.clone()
    changed[:, 3:] = torch.rand(1, 2, 3, 16, 16)
    with torch.no_grad():
        z, z2 = tok.encode(video), tok.encode(changed)
        assert torch.equal(z[:, :3], z2[:, :3]) and not torch.allclose(z[:, 3], z2[:, 3])
        zc = z.clone()
        zc[:, 3:] = torch.rand_like(zc[:, 3:])
        d, d2 = tok.decode(z), tok.decode(zc)
        assert torch.equal(d[:, :3], d2[:, :3]) and not torch.allclose(d[:, 3], d2[:, 3])


def test_encode_and_decode_chunk_longer_clips_by_clip_frames():
    whole, chunked = tiny_tokenizer().eval(), tiny_tokenizer(clip_frames=3).eval()
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), chunked.state_dict().values()))
    video = torch.rand(2, 7, 3, 16, 16)
    keep = torch.rand(2, 7, 16) > 0.3
    with torch.no_grad():
        z = chunked.encode(video)
        by_hand = torch.cat([whole.encode(video[:, s:s + 3]) for s in (0, 3, 6)], dim=1)
        assert torch.equal(z, by_hand)
        z_all = whole.encode(video)
        # the first chunk is the same computation as the unchunked call's first frames (causal)
        torch.testing.assert_close(z[:, :3], z_all[:, :3], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(z[:, 3:], z_all[:, 3:], atol=1e-4)
        masked = torch.cat([whole.encode(video[:, s:s + 3], keep[:, s:s + 3]) for s in (0, 3, 6)], dim=1)
        assert torch.equal(chunked.encode(video, keep), masked)
        frames = chunked.decode(z)
        assert torch.equal(frames, torch.cat([whole.decode(z[:, s:s + 3]) for s in (0, 3, 6)], dim=1))
        assert not torch.allclose(frames[:, 3:], whole.decode(z)[:, 3:], atol=1e-4)


def test_a_single_frame_tokenizer_decodes_a_long_clip_frame_by_frame():
    # The bug of issue #25: a tokenizer trained on single frames, asked to decode 16 frames in one
    # call, used to attend over all 16 and return wrong frames.
    tok = tiny_tokenizer(clip_frames=1).eval()
    z = torch.rand(1, 16, 4, 8) * 2 - 1
    with torch.no_grad():
        frames = tok.decode(z)
        one_by_one = torch.cat([tok.decode(z[:, t:t + 1]) for t in range(16)], dim=1)
        assert torch.equal(frames, one_by_one)
        assert not torch.allclose(frames, tiny_tokenizer().eval().decode(z), atol=1e-4)


@pytest.mark.parametrize("paper", [False, True])
def test_dynamics_is_causal(paper):
    dyn = tiny_dynamics(**(PAPER_TF if paper else {})).eval()
    packed = torch.randn(1, 6, 2, 16)
    actions = torch.rand(1, 6, 16) * 2 - 1
    sig, stp = indices(1, 6)
    with torch.no_grad():
        x = dyn(packed, signal_idx=sig, step_idx=stp, actions=actions)[0]
        p2, a2, s2 = packed.clone(), actions.clone(), sig.clone()
        p2[:, 4] += 1.0
        a2[:, 4:] = 0.3
        s2[:, 5] = 0
        y = dyn(p2, signal_idx=s2, step_idx=stp, actions=a2)[0]
    assert torch.equal(x[:, :4], y[:, :4]) and not torch.allclose(x[:, 4], y[:, 4])


def test_nothing_sees_the_agent_tokens():
    for mode in ("wm_agent_isolated", "wm_agent"):
        dyn = tiny_dynamics(space_mode=mode).eval()
        packed = torch.randn(1, 3, 2, 16)
        sig, stp = indices(1, 3)
        agent = torch.randn(1, 3, 1, 32)
        with torch.no_grad():
            x0, h0 = dyn(packed, signal_idx=sig, step_idx=stp)
            x1, h1 = dyn(packed, signal_idx=sig, step_idx=stp, agent_tokens=agent)
            x2, h2 = dyn(packed + 1, signal_idx=sig, step_idx=stp, agent_tokens=agent)
        assert torch.equal(x0, x1), mode                   # frame prediction ignores the agent
        assert not torch.allclose(h0, h1), mode
        sees_frames = not torch.allclose(h1, h2)
        assert sees_frames == (mode == "wm_agent"), mode    # paper: agent sees everything; isolated: nothing


def test_actions_and_mask():
    dyn = tiny_dynamics().eval()
    packed = torch.randn(1, 3, 2, 16)
    sig, stp = indices(1, 3)
    acts = torch.rand(1, 3, 16) * 2 - 1
    mask = torch.zeros(16)
    mask[:2] = 1
    with torch.no_grad():
        base = dyn(packed, signal_idx=sig, step_idx=stp)[0]
        with_act = dyn(packed, signal_idx=sig, step_idx=stp, actions=acts, act_mask=mask)[0]
        other_dims = acts.clone()
        other_dims[..., 2:] = 0.9
        same = dyn(packed, signal_idx=sig, step_idx=stp, actions=other_dims, act_mask=mask)[0]
        clamped = dyn(packed, signal_idx=sig, step_idx=stp, actions=acts.sign() * 3, act_mask=mask)[0]
        unit = dyn(packed, signal_idx=sig, step_idx=stp, actions=acts.sign(), act_mask=mask)[0]
    assert not torch.allclose(base, with_act)
    assert torch.equal(with_act, same)           # masked dimensions are ignored
    assert torch.equal(clamped, unit)            # actions are clamped to [-1, 1]


def test_mae_keep_all_is_identity_and_masking_changes_output():
    tok = tiny_tokenizer()
    tok.eval()
    video = torch.rand(2, 2, 3, 16, 16)
    keep_all = torch.ones(2, 2, 16, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(tok.encode(video), tok.encode(video, keep_mask=keep_all))
        out = tok(video)
        assert out.keep_mask.all() and torch.equal(out.z, tok.encode(video))
        keep = keep_all.clone()
        keep[:, :, :5] = False
        assert not torch.allclose(tok.encode(video, keep_mask=keep), tok.encode(video))
        # a dropped patch's content does not matter
        v2 = video.clone()
        v2[:, :, :, :4, :4] = 0.0                          # patch 0 (top-left 4x4)
        assert torch.equal(tok.encode(video, keep_mask=keep), tok.encode(v2, keep_mask=keep))


def test_mae_draws_follow_p_range():
    tok = tiny_tokenizer(mae_p_min=0.0, mae_p_max=0.0).train()
    assert tok(torch.rand(1, 2, 3, 16, 16)).keep_mask.all()
    tok = tiny_tokenizer(mae_p_min=0.5, mae_p_max=0.5)
    keep = tok.draw_keep_mask(200, 4, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (200, 4, 16) and abs(keep.float().mean().item() - 0.5) < 0.02


def test_input_errors_are_clear():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"video must have shape \(B, T, 3, 16, 16\)"):
        tok.encode(torch.rand(1, 2, 3, 32, 32))
    with pytest.raises(TypeError, match="float tensor in \\[0, 1\\].*uint8"):
        tok.encode(torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"z must have shape \(B, T, 4, 8\)"):
        tok.decode(torch.rand(1, 2, 4, 9))
    with pytest.raises(ValueError, match="keep_mask must be a bool tensor"):
        tok(torch.rand(1, 2, 3, 16, 16), keep_mask=torch.ones(1, 2, 15, dtype=torch.bool))
    dyn = tiny_dynamics()
    sig, stp = indices(1, 2)
    with pytest.raises(ValueError, match=r"packed latents must have shape \(B, T, 2, 16\)"):
        dyn(torch.randn(1, 2, 4, 8), signal_idx=sig, step_idx=stp)
    with pytest.raises(ValueError, match=r"signal_idx values must lie in \[0, 8\]"):
        dyn(torch.randn(1, 2, 2, 16), signal_idx=sig + 9, step_idx=stp)
    with pytest.raises(ValueError, match=r"actions must have shape \(1, 2, 16\)"):
        dyn(torch.randn(1, 2, 2, 16), signal_idx=sig, step_idx=stp, actions=torch.zeros(1, 2, 6))
    with pytest.raises(TypeError, match="step_idx must be an integer tensor"):
        dyn(torch.randn(1, 2, 2, 16), signal_idx=sig, step_idx=stp.float())


def test_softcap_and_gqa_explicit_path_agree_with_sdpa():
    """With a cap so large that tanh is linear, the explicit (soft-capped) attention equals SDPA."""
    torch.manual_seed(0)
    base = tiny_dynamics(transformer__n_kv_heads=1).eval()
    capped = tiny_dynamics(transformer__n_kv_heads=1, transformer__logit_softcap=1e6).eval()
    capped.load_state_dict(base.state_dict())
    packed = torch.randn(2, 4, 2, 16)
    sig, stp = indices(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(capped(packed, signal_idx=sig, step_idx=stp)[0],
                                   base(packed, signal_idx=sig, step_idx=stp)[0], atol=1e-5, rtol=1e-5)


def test_time_rope_model_is_shift_invariant():
    """With time RoPE (and no additive time table) outputs depend only on relative frame positions:
    giving the window absolute frame indices 100..103 instead of 0..3 changes nothing."""
    dyn = tiny_dynamics(transformer__time_rope=True).eval()
    packed = torch.randn(1, 4, 2, 16)
    sig, stp = indices(1, 4)
    with torch.no_grad():
        x = dyn(packed, signal_idx=sig, step_idx=stp)[0]
        tokens = dyn.tokens(packed, sig, stp)
        from dreamer4_torch.layers import add_positions
        t = add_positions(tokens, dyn.config.transformer)
        rope_far = dyn.transformer.time_rope(4, t.device, t.dtype, frame_offset=100)
        y = t
        for layer in dyn.transformer.layers:
            y = layer(y, rope_far)
        y = dyn.flow_x_head(y[:, :, dyn.spatial_slice])
    torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-5)


def test_injected_dropout_is_reproducible():
    tok = tiny_tokenizer(transformer__dropout=0.3).train()
    video = torch.rand(1, 2, 3, 16, 16)
    sites = []

    def source(site, shape):
        sites.append(site)
        rng = np.random.default_rng(abs(hash((site, shape))) % 2**32)
        return rng.random(shape) >= 0.3

    set_dropout_source(tok, source)
    a = tok.encode(video)
    b = tok.encode(video)
    assert torch.equal(a, b)
    assert "encoder.transformer.layers.0.drop1" in sites
    assert "encoder.transformer.layers.0.space.attn" in sites
    assert "encoder.transformer.layers.1.mlp.drop" in sites
    with torch.no_grad():
        assert not torch.allclose(a, tok.eval().encode(video))
    set_dropout_source(tok, None)
    tok.train()
    assert not torch.equal(tok.encode(video), tok.encode(video))
