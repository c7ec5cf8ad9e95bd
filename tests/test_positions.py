import math

import numpy as np
import torch

from shared.positions import position_table, rope_angles, sinusoid_table


def test_sinusoid_first_rows_by_hand():
    t = sinusoid_table(2, 4)
    np.testing.assert_allclose(t[0], [0, 1, 0, 1], atol=0)
    # i = 0, 1 use frequency 1; i = 2, 3 use exp(-(2/4) ln 1e4) = 1e-2
    np.testing.assert_allclose(t[1], [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)], rtol=1e-6)
    assert t.dtype == np.float32


def test_sinusoid_matches_float64_formula():
    n, d = 1040, 256
    pos = np.arange(n)[:, None]
    i = np.arange(d)[None, :]
    ang = pos * np.exp(-(2 * (i // 2) / d) * math.log(10000.0))
    ref = np.where(i % 2 == 0, np.sin(ang), np.cos(ang))
    # float32 angles of size ~1000 carry ~6e-5 rounding, as in upstream.
    np.testing.assert_allclose(sinusoid_table(n, d), ref, atol=2e-4)


def test_torch_table_matches_shared_spec():
    from dreamer4_torch.layers import sinusoid_table as torch_table
    for n, d in [(20, 32), (80, 128), (1040, 256), (16, 512)]:
        np.testing.assert_allclose(torch_table(n, d).numpy(), sinusoid_table(n, d), atol=2e-4, rtol=0)


def test_position_table_sum_and_scale():
    T, S, D = 3, 5, 8
    raw = position_table(T, S, D, scale=False)
    np.testing.assert_array_equal(raw, sinusoid_table(T, D)[:, None] + sinusoid_table(S, D)[None])
    scaled = position_table(T, S, D, scale=True)
    np.testing.assert_allclose(scaled, raw / math.sqrt(D), rtol=1e-6)
    no_time = position_table(T, S, D, scale=False, time=False)
    np.testing.assert_array_equal(no_time[2], sinusoid_table(S, D))
    shifted = position_table(2, S, D, scale=False, frame_offset=1)
    np.testing.assert_array_equal(shifted, raw[1:])


def test_rope_angles():
    ang = rope_angles(np.array([0, 1, 5]), head_dim=4, base=100.0)
    np.testing.assert_allclose(ang, [[0, 0], [1, 0.1], [5, 0.5]], rtol=1e-6)


def test_rope_preserves_norm_and_is_relative():
    from dreamer4_torch.layers import apply_rope, rope_tables
    q, k = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    cos, sin = rope_tables(np.arange(6), 8, 10000.0, "cpu", torch.float32)
    qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))
    # Shift every position by 3: dot products (which depend on relative positions only) are unchanged.
    cos2, sin2 = rope_tables(np.arange(3, 9), 8, 10000.0, "cpu", torch.float32)
    qs, ks = apply_rope(q, cos2, sin2), apply_rope(k, cos2, sin2)
    torch.testing.assert_close(qr @ kr.transpose(-1, -2), qs @ ks.transpose(-1, -2), atol=1e-5, rtol=1e-5)
