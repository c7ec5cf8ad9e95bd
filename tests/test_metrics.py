import numpy as np
import pytest
import torch

from dreamer4_torch.train.common import psnr as torch_psnr, psnr_of
from shared.metrics import psnr, psnr_from_mse


def test_psnr_from_mse_by_hand():
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr_from_mse(1e-4) == pytest.approx(40.0)
    assert psnr_from_mse(0.0) == pytest.approx(100.0)               # floored, not infinite
    assert psnr_from_mse(65.025, peak=255.0) == pytest.approx(30.0)   # 65.025 / 255^2 = 1e-3
    np.testing.assert_allclose(psnr_from_mse(np.array([0.1, 0.001])), [10.0, 30.0])
    assert isinstance(psnr_from_mse(0.5), float)
    assert psnr_of(0.01) == pytest.approx(20.0)


def test_per_frame_psnr_of_uint8_and_float_frames():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 51                                     # (51/255)^2 = 0.04 -> 13.98 dB
    b[1, 0, 0, 0] = 255                           # one pixel of 48 fully wrong -> 10 log10(48)
    np.testing.assert_allclose(psnr(b, a, 255), [-10 * np.log10(0.04), 10 * np.log10(48)])
    np.testing.assert_allclose(psnr(b / 255.0, a / 255.0), psnr(b, a, 255))
    assert psnr(a, a, 255).tolist() == [100.0, 100.0]


def test_the_torch_psnr_is_per_frame_and_clamps_the_prediction():
    target = torch.full((2, 3, 3, 4, 4), 0.5)
    pred = target.clone()
    pred[0, 1] = 0.6                              # 0.01 -> 20 dB
    pred[1, 2] = 2.0                              # clamped to 1: 0.25 -> 6.02 dB
    out = torch_psnr(pred, target)
    assert out.shape == (2, 3) and out.dtype == torch.float64
    assert out[0, 1].item() == pytest.approx(20.0, abs=1e-4)
    assert out[1, 2].item() == pytest.approx(-10 * np.log10(0.25), abs=1e-4)
    assert out[0, 0].item() == pytest.approx(100.0)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"same shape \(N, ...\), got \(2, 3\) and \(3, 3\)"):
        psnr(np.zeros((2, 3)), np.zeros((3, 3)))
