"""LPIPS perceptual distance (Zhang et al. 2018) with AlexNet features, written here.

Weights are never downloaded: give two local files,
  * a torchvision-format AlexNet state dict (`features.{0,3,6,8,10}.{weight,bias}`; other keys such
    as `classifier.*` are ignored), e.g. torchvision's `alexnet-owt-7be5be79.pth`;
  * the LPIPS linear-layer weights (`lin{0..4}.model.1.weight`, shapes (1, C, 1, 1)), e.g. the lpips
    package's `weights/v0.1/alex.pth`.

distance(x, y) for images in [-1, 1], (N, 3, H, W) with H, W >= 31:
  shift/scale the inputs, take the ReLU outputs of AlexNet's five conv layers, normalise each
  feature vector to unit length over channels, weight the squared difference per channel by the
  linear layer, average over space, sum over layers.
"""

from __future__ import annotations

import os
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = (64, 192, 384, 256, 256)
# (in, out, kernel, stride, padding) of AlexNet's convolutions, and whether a 3x3/2 max-pool precedes them.
_CONVS = ((3, 64, 11, 4, 2, False), (64, 192, 5, 1, 2, True), (192, 384, 3, 1, 1, True),
          (384, 256, 3, 1, 1, False), (256, 256, 3, 1, 1, False))
_TORCHVISION_INDEX = (0, 3, 6, 8, 10)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
MIN_SIZE = 31


class LPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(i, o, k, s, p) for i, o, k, s, p, _ in _CONVS])
        self.lins = nn.ParameterList([nn.Parameter(torch.ones(1, c, 1, 1) / c) for c in CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        outs = []
        for conv, (*_, pool_first) in zip(self.convs, _CONVS):
            if pool_first:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distance (N,) between images in [-1, 1] of shape (N, 3, H, W)."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (N, 3, H, W) batches of equal shape, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, "
                             f"got {tuple(x.shape[-2:])}")
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self.features(x.float()), self.features(y.float()), self.lins):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((nx - ny).pow(2) * lin).sum(1).mean((1, 2))
        return total

    @classmethod
    def from_files(cls, alexnet: Union[str, os.PathLike], lin: Union[str, os.PathLike]) -> "LPIPS":
        model = cls()
        alex = _load(alexnet, "AlexNet")
        lins = _load(lin, "LPIPS linear")
        with torch.no_grad():
            for conv, idx in zip(model.convs, _TORCHVISION_INDEX):
                for leaf in ("weight", "bias"):
                    key = _find(alex, [f"features.{idx}.{leaf}"], alexnet)
                    _copy(getattr(conv, leaf), alex[key], key, alexnet)
            for i, param in enumerate(model.lins):
                key = _find(lins, [f"lin{i}.model.1.weight", f"lin{i}.weight"], lin)
                _copy(param, lins[key], key, lin)
        return model


def _load(path, what: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weight file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read {what} weights from {path}: {type(e).__name__}: {e}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict ({what} weights)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _find(state: dict, candidates: list[str], path) -> str:
    for key in candidates:
        if key in state:
            return key
    raise KeyError(f"{path} lacks {candidates[0]!r}; is it the right weight file?")


def _copy(dst: torch.Tensor, src: torch.Tensor, key: str, path) -> None:
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"{path}: {key} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
    dst.copy_(src)
