import numpy as np
import torch
import torch.nn.functional as F

from dreamer4_torch.tokenizer import patchify as torch_patchify, unpatchify as torch_unpatchify
from shared.patchify import patch_pixel_index, patchify, unpatchify


def test_numpy_patchify_is_unfold_layout(rng):
    video = rng.random((2, 3, 3, 8, 12)).astype(np.float32)
    ref = F.unfold(torch.from_numpy(video).reshape(6, 3, 8, 12), kernel_size=4, stride=4)
    ref = ref.transpose(1, 2).reshape(2, 3, 6, 48).numpy()
    np.testing.assert_array_equal(patchify(video, 4), ref)
    np.testing.assert_array_equal(torch_patchify(torch.from_numpy(video), 4).numpy(), ref)


def test_round_trips(rng):
    video = rng.random((1, 2, 3, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(unpatchify(patchify(video, 4), 8, 12, 3, 4), video)
    tv = torch.from_numpy(video)
    assert torch.equal(torch_unpatchify(torch_patchify(tv, 2), 8, 12, 3, 2), tv)


def test_patch_pixel_index():
    frame = np.arange(3 * 8 * 12).reshape(3, 8, 12)
    patches = patchify(frame, 4)
    for patch in (0, 4, 5):
        for feature in (0, 7, 16, 47):
            c, y, x = patch_pixel_index(patch, feature, width=12, channels=3, patch_size=4)
            assert patches[patch, feature] == frame[c, y, x]
    # channel is the slowest index inside a patch: features 0..15 are channel 0.
    assert patch_pixel_index(0, 15, 12, 3, 4) == (0, 3, 3)
    assert patch_pixel_index(0, 16, 12, 3, 4) == (1, 0, 0)
    assert patch_pixel_index(1, 0, 12, 3, 4) == (0, 0, 4)
