import dataclasses
import json

import pytest

from shared.config import (
    CONFIG_FORMAT_VERSION, ConfigError, DynamicsConfig, TokenizerConfig, TransformerConfig,
    check_compatible, config_from_dict, config_from_json, config_to_dict, config_to_json, replace,
)
from shared.recipes import PRESETS, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    p = get_preset(name)
    for cfg in (p.tokenizer, p.dynamics):
        text = config_to_json(cfg)
        data = json.loads(text)
        assert data["format_version"] == CONFIG_FORMAT_VERSION
        assert data["kind"] == cfg.kind
        back = config_from_json(text)
        assert back == cfg and type(back) is type(cfg)


def test_dmc128_is_upstream_default():
    p = get_preset("dmc128")
    t, d = p.tokenizer, p.dynamics
    assert (t.image_height, t.image_width, t.channels, t.patch_size) == (128, 128, 3, 4)
    assert (t.transformer.d_model, t.transformer.n_heads, t.transformer.depth) == (256, 4, 8)
    assert (t.n_latents, t.d_bottleneck, t.n_patches, t.d_patch) == (16, 32, 1024, 48)
    assert (t.transformer.dropout, t.transformer.time_every, t.mae_p_min, t.mae_p_max) == (0.05, 1, 0.0, 0.9)
    assert (d.transformer.d_model, d.transformer.depth, d.transformer.n_heads) == (512, 8, 4)
    assert (d.packing_factor, d.n_spatial, d.d_spatial, d.n_register, d.n_agent, d.k_max) == (2, 8, 64, 4, 1, 8)
    assert d.n_tokens == 16 and d.space_mode == "wm_agent_isolated"
    for tf in (t.transformer, d.transformer):
        assert tf.scale_pos_embeds and not tf.qk_norm and tf.n_kv_heads == 0 and tf.logit_softcap == 0
        assert not tf.time_rope and not tf.final_norm


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")


TOK = get_preset("tiny").tokenizer
DYN = get_preset("tiny").dynamics


@pytest.mark.parametrize("changes, message", [
    (dict(image_height=18), r"tokenizer.image_height=18 is not divisible by tokenizer.patch_size=4"),
    (dict(image_width=10), r"tokenizer.image_width=10 is not divisible by tokenizer.patch_size=4"),
    (dict(transformer__n_heads=3), r"tokenizer.transformer.d_model=32 is not divisible by tokenizer.transformer.n_heads=3"),
    (dict(transformer__depth=0), r"tokenizer.transformer.depth must be positive"),
    (dict(transformer__dropout=1.0), r"tokenizer.transformer.dropout must be in \[0, 1\)"),
    (dict(transformer__time_every=3), r"tokenizer.transformer.time_every=3 exceeds tokenizer.transformer.depth=2"),
    (dict(transformer__n_kv_heads=3, transformer__n_heads=2), r"n_heads=2 is not divisible by tokenizer.transformer.n_kv_heads=3"),
    (dict(mae_p_min=0.6, mae_p_max=0.5), r"tokenizer.mae_p_min/mae_p_max"),
    (dict(n_latents=0), r"tokenizer.n_latents must be positive"),
    (dict(patch_size=2.0), r"tokenizer.patch_size must be an integer"),
    (dict(transformer__scale_pos_embeds="yes"), r"tokenizer.transformer.scale_pos_embeds must be true or false"),
    (dict(clip_frames=0), r"tokenizer.clip_frames must be null or an integer >= 1, got 0"),
    (dict(clip_frames=8.0), r"tokenizer.clip_frames must be null or an integer >= 1, got 8.0"),
    (dict(clip_frames=True), r"tokenizer.clip_frames must be null or an integer >= 1, got True"),
])
def test_tokenizer_validation_names_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(TOK, **changes)


@pytest.mark.parametrize("changes, message", [
    (dict(n_latents=5), r"dynamics.n_latents=5 is not divisible by dynamics.packing_factor=2"),
    (dict(k_max=6), r"dynamics.k_max must be a power of two, got 6"),
    (dict(space_mode="encoder"), r"dynamics.space_mode must be one of"),
    (dict(n_register=-1), r"dynamics.n_register must be >= 0"),
    (dict(transformer__d_model=30, transformer__n_heads=4), r"dynamics.transformer.d_model=30 is not divisible by dynamics.transformer.n_heads=4"),
    (dict(transformer__time_rope=True, transformer__d_model=6, transformer__n_heads=2), r"even head dimension"),
])
def test_dynamics_validation_names_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(DYN, **changes)


def test_json_errors_name_the_problem():
    good = config_to_dict(TOK)
    with pytest.raises(ConfigError, match="not valid JSON"):
        config_from_json("{not json")
    with pytest.raises(ConfigError, match="no format_version"):
        config_from_dict({k: v for k, v in good.items() if k != "format_version"})
    with pytest.raises(ConfigError, match="format_version=99 is not supported"):
        config_from_dict({**good, "format_version": 99})
    with pytest.raises(ConfigError, match="kind must be 'tokenizer' or 'dynamics'"):
        config_from_dict({**good, "kind": "vae"})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) tokenizer.patch"):
        config_from_dict({**good, "patch": 4})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) tokenizer.transformer.width"):
        config_from_dict({**good, "transformer": {**good["transformer"], "width": 3}})
    with pytest.raises(ConfigError, match=r"missing config key\(s\) tokenizer.transformer.depth"):
        tf = {k: v for k, v in good["transformer"].items() if k != "depth"}
        config_from_dict({**good, "transformer": tf})
    with pytest.raises(ConfigError, match="tokenizer.image_height=15 is not divisible"):
        config_from_dict({**good, "image_height": 15})


def test_compatibility_check():
    check_compatible(TOK, DYN)
    with pytest.raises(ConfigError, match="d_bottleneck=8.*dynamics.d_bottleneck=16"):
        check_compatible(TOK, replace(DYN, d_bottleneck=16))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TOK.n_latents = 3  # type: ignore[misc]


def test_derived_sizes():
    assert (TOK.n_patches, TOK.d_patch, TOK.n_tokens) == (16, 48, 20)
    assert (DYN.n_spatial, DYN.d_spatial, DYN.e_max, DYN.n_step_bins, DYN.n_tokens) == (2, 16, 3, 4, 8)
    tf = TransformerConfig(d_model=64, n_heads=8, depth=4, n_kv_heads=2, time_every=4)
    assert (tf.head_dim, tf.kv_heads, tf.mlp_hidden) == (8, 2, 256)
    assert [tf.has_time(i) for i in range(4)] == [False, False, False, True]
    assert isinstance(TOK, TokenizerConfig) and isinstance(DYN, DynamicsConfig)


def test_clip_frames_round_trips_and_old_configs_load_without_it():
    cfg = replace(TOK, clip_frames=8)
    data = config_to_dict(cfg)
    assert data["clip_frames"] == 8
    assert config_from_json(config_to_json(cfg)) == cfg
    old = {k: v for k, v in config_to_dict(TOK).items() if k != "clip_frames"}
    assert config_from_dict(old).clip_frames is None
    assert config_from_dict({**old, "clip_frames": None}).clip_frames is None


def test_clip_chunks():
    assert TOK.clip_chunks(16) == [slice(0, 16)]
    assert replace(TOK, clip_frames=8).clip_chunks(8) == [slice(0, 8)]
    assert replace(TOK, clip_frames=6).clip_chunks(16) == [slice(0, 6), slice(6, 12), slice(12, 16)]
    assert replace(TOK, clip_frames=1).clip_chunks(3) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_by_clip_maps_each_chunk_and_passes_none_through():
    import numpy as np
    from shared.clips import by_clip
    cfg = replace(TOK, clip_frames=2)
    video = np.arange(2 * 5).reshape(2, 5)
    seen = []

    def fn(x, mask):
        seen.append((x.tolist(), mask))
        return x * 10

    out = by_clip(cfg, fn, (video, None), lambda parts: np.concatenate(parts, axis=1))
    assert out.tolist() == (video * 10).tolist()
    assert seen == [([[0, 1], [5, 6]], None), ([[2, 3], [7, 8]], None), ([[4], [9]], None)]
    assert by_clip(TOK, lambda x: x.shape, (video,), None) == (2, 5)     # one chunk: fn on the whole clip
