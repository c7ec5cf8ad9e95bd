import numpy as np
import pytest

from shared import shortcut as sc


def test_bins_and_index_maps():
    assert sc.e_max(8) == 3 and sc.n_step_bins(8) == 4 and sc.n_signal_bins(8) == 9
    np.testing.assert_array_equal(sc.step_size([0, 1, 2, 3]), [1, 0.5, 0.25, 0.125])
    np.testing.assert_array_equal(sc.signal_level([0, 4, 7, 8], 8), [0, 0.5, 0.875, 1.0])
    np.testing.assert_array_equal(sc.signal_index([0, 0.5, 0.875], 8), [0, 4, 7])
    np.testing.assert_array_equal(sc.step_index([1, 0.25]), [0, 2])
    np.testing.assert_allclose(sc.ramp_weight([0.0, 0.5, 1.0]), [0.1, 0.55, 1.0])
    with pytest.raises(ValueError, match="not on the 1/8 grid"):
        sc.signal_index(0.3, 8)
    with pytest.raises(ValueError, match="power of two"):
        sc.e_max(6)


def test_bootstrap_row_count():
    assert sc.n_bootstrap_rows(24, step=10_000, bootstrap_start=5000) == 6   # upstream: round(0.25 B)
    assert sc.n_bootstrap_rows(24, step=4999, bootstrap_start=5000) == 0
    assert sc.n_bootstrap_rows(8) == 2 and sc.n_bootstrap_rows(2) == 0 and sc.n_bootstrap_rows(1) == 0
    assert sc.n_bootstrap_rows(4, fraction=1.0) == 3                     # always one flow row


def test_draw_rows_and_grids():
    rng = np.random.default_rng(0)
    B, T, k_max, nb = 64, 32, 8, 16
    d = sc.draw_shortcut_indices(rng, B, T, k_max, nb)
    assert d.step_idx.shape == d.signal_idx.shape == (B, T) and d.n_bootstrap == nb
    assert (d.step_idx[: B - nb] == 3).all()                     # flow rows: finest step
    boot = d.step_idx[B - nb:]
    assert boot.min() == 0 and boot.max() == 2                    # bootstrap rows: d in {1, 1/2, 1/4}
    K = 2 ** d.step_idx
    # signal index = j * k_max / K with j < K: on the step's grid, never tau = 1
    assert ((d.signal_idx % (k_max // K)) == 0).all()
    assert (d.signal_idx < k_max).all() and (d.signal_idx >= 0).all()
    # flow rows cover every tau on the 1/8 grid
    assert set(np.unique(d.signal_idx[: B - nb])) == set(range(8))
    np.testing.assert_array_equal(d.step_size[0], np.full(T, 0.125, np.float32))


def test_draw_is_deterministic_for_a_seed():
    a = sc.draw_shortcut_indices(np.random.default_rng(7), 4, 5, 8, 1)
    b = sc.draw_shortcut_indices(np.random.default_rng(7), 4, 5, 8, 1)
    c = sc.draw_shortcut_indices(np.random.default_rng(8), 4, 5, 8, 1)
    np.testing.assert_array_equal(a.signal_idx, b.signal_idx)
    np.testing.assert_array_equal(a.step_idx, b.step_idx)
    assert not np.array_equal(a.signal_idx, c.signal_idx)


def test_draw_is_uniform_over_the_grid():
    d = sc.draw_shortcut_indices(np.random.default_rng(1), 4000, 1, 8, 1000)
    flow = d.signal_idx[:3000, 0]
    counts = np.bincount(flow, minlength=8) / 3000
    assert np.abs(counts - 1 / 8).max() < 0.03


def test_draw_argument_errors():
    with pytest.raises(ValueError, match=r"n_bootstrap must be in \[0, batch\)"):
        sc.draw_shortcut_indices(np.random.default_rng(0), 4, 2, 8, 4)


def test_half_step_indices():
    e2, i2 = sc.half_step_indices(np.array([0, 1, 2]), np.array([0, 4, 6]), 8)
    np.testing.assert_array_equal(e2, [1, 2, 3])
    # tau + d/2 on the k_max grid: d = 1 -> +4, d = 1/2 -> +2, d = 1/4 -> +1
    np.testing.assert_array_equal(i2, [4, 6, 7])


def test_inference_plans():
    plan = sc.inference_plan(8, 4)
    assert [(s.signal_idx, s.step_idx, s.tau, s.step_size) for s in plan] == [
        (0, 2, 0.0, 0.25), (2, 2, 0.25, 0.25), (4, 2, 0.5, 0.25), (6, 2, 0.75, 0.25)]
    assert [(s.signal_idx, s.step_idx) for s in sc.inference_plan(8, 1)] == [(0, 0)]
    assert [s.signal_idx for s in sc.inference_plan(8, 8)] == list(range(8))
    assert sum(s.step_size for s in sc.inference_plan(8, 2)) == 1.0
    for bad in (0, 3, 16):
        with pytest.raises(ValueError, match="power of two in"):
            sc.inference_plan(8, bad)
    assert sc.context_labels(8) == (7, 3)
    assert sc.noisy_context_signal_idx(8, 0.9) == 7
