"""LPIPS loads weight files in the torchvision / lpips layouts (made here) and behaves as a distance."""

import pytest
import torch
import torch.nn.functional as F

from dreamer4_torch.train.lpips import CHANNELS, LPIPS, SCALE, SHIFT


def write_weights(tmp_path, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    alex = {}
    for i, s in shapes.items():
        alex[f"features.{i}.weight"] = torch.randn(s, generator=g) * (2 / (s[1] * s[2] * s[3])) ** 0.5
        alex[f"features.{i}.bias"] = torch.randn(s[0], generator=g) * 0.01
    alex["classifier.1.weight"] = torch.zeros(4, 4)      # ignored, as in a full torchvision state dict
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(CHANNELS)}
    torch.save(alex, tmp_path / "alexnet.pth")
    torch.save(lin, tmp_path / "lin.pth")
    return alex, lin


def test_distance_properties(tmp_path):
    write_weights(tmp_path)
    lp = LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "lin.pth")
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    y = torch.rand(3, 3, 64, 64) * 2 - 1
    assert torch.allclose(lp(x, x), torch.zeros(3), atol=1e-6)
    d = lp(x, y)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(d, lp(y, x))
    assert lp(x, x + 0.05 * torch.randn_like(x)).mean() < d.mean()


def test_first_layer_term_by_hand(tmp_path):
    """With only the first linear layer non-zero, LPIPS is the channel-normalised conv1 feature distance."""
    alex, lin = write_weights(tmp_path)
    for i in range(1, 5):
        lin[f"lin{i}.model.1.weight"].zero_()
    torch.save(lin, tmp_path / "lin.pth")
    lp = LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "lin.pth")
    x, y = torch.rand(2, 3, 40, 40) * 2 - 1, torch.rand(2, 3, 40, 40) * 2 - 1
    shift = torch.tensor(SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE).view(1, 3, 1, 1)

    def feat(img):
        f = F.relu(F.conv2d((img - shift) / scale, alex["features.0.weight"], alex["features.0.bias"], stride=4, padding=2))
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    w = lin["lin0.model.1.weight"].view(1, -1, 1, 1)
    expected = ((feat(x) - feat(y)) ** 2 * w).sum(1).mean((1, 2))
    torch.testing.assert_close(lp(x, y), expected, rtol=1e-5, atol=1e-7)


def test_bad_files_and_inputs(tmp_path):
    alex, lin = write_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="AlexNet weight file"):
        LPIPS.from_files(tmp_path / "missing.pth", tmp_path / "lin.pth")
    del alex["features.8.bias"]
    torch.save(alex, tmp_path / "bad_alex.pth")
    with pytest.raises(KeyError, match="features.8.bias"):
        LPIPS.from_files(tmp_path / "bad_alex.pth", tmp_path / "lin.pth")
    lin["lin2.model.1.weight"] = torch.ones(1, 7, 1, 1)
    torch.save(lin, tmp_path / "bad_lin.pth")
    with pytest.raises(ValueError, match=r"lin2.model.1.weight has shape \(1, 7, 1, 1\), expected \(1, 384, 1, 1\)"):
        LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "bad_lin.pth")
    lp = LPIPS()
    with pytest.raises(ValueError, match="at least 31x31"):
        lp(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def test_tokenizer_loss_with_lpips_term(tmp_path):
    from dreamer4_torch.losses import tokenizer_loss
    from dreamer4_torch.tokenizer import TokenizerOutput
    write_weights(tmp_path)
    lp = LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "lin.pth")
    recon = torch.rand(1, 2, 16, 192, requires_grad=True)          # 32x32 frames, patch 8
    out = TokenizerOutput(z=torch.zeros(1), recon=recon, target=torch.rand(1, 2, 16, 192),
                          keep_mask=torch.zeros(1, 2, 16, dtype=torch.bool))
    loss, m = tokenizer_loss(out, image_shape=(3, 32, 32), patch_size=8, perceptual=lp)
    assert m["perceptual"] > 0 and loss.item() == pytest.approx(m["mse"].item() + 0.2 * m["perceptual"].item(), rel=1e-5)
    loss.backward()
    assert recon.grad.abs().sum() > 0
