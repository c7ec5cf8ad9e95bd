import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamer4_torch.tokenizer import patchify as torch_patchify, unpatchify as torch_unpatchify
from shared.patchify import patch_layout, patch_pixel_index, patchify, unpatchify


def unfold_reference(video: np.ndarray, p: int) -> np.ndarray:
    """(B, T, C, H, W) -> (B, T, Np, C*p*p) by F.unfold (the layout the shared reference states)."""
    B, T, C, H, W = video.shape
    ref = F.unfold(torch.from_numpy(video).reshape(B * T, C, H, W), kernel_size=p, stride=p)
    return ref.transpose(1, 2).reshape(B, T, (H // p) * (W // p), C * p * p).numpy()


def test_numpy_patchify_is_unfold_layout(rng):
    video = rng.random((2, 3, 3, 8, 12)).astype(np.float32)
    ref = unfold_reference(video, 4)
    np.testing.assert_array_equal(patchify(video, 4), ref)
    np.testing.assert_array_equal(torch_patchify(torch.from_numpy(video), 4).numpy(), ref)


def test_round_trips(rng):
    video = rng.random((1, 2, 3, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(unpatchify(patchify(video, 4), 8, 12, 3, 4), video)
    tv = torch.from_numpy(video)
    assert torch.equal(torch_unpatchify(torch_patchify(tv, 2), 8, 12, 3, 2), tv)


def test_jax_patchify_matches_the_numpy_reference(rng):
    pytest.importorskip("jax")
    from dreamer4_jax.tokenizer import patchify as jax_patchify, unpatchify as jax_unpatchify
    video = rng.random((2, 3, 3, 8, 12)).astype(np.float32)
    patches = np.asarray(jax_patchify(video, 4))
    np.testing.assert_array_equal(patches, unfold_reference(video, 4))
    np.testing.assert_array_equal(np.asarray(jax_unpatchify(patches, 8, 12, 3, 4)), video)


def test_any_number_of_leading_axes(rng):
    frame = rng.random((3, 8, 12)).astype(np.float32)
    patches = patchify(frame, 4)
    assert patches.shape == (6, 48)
    np.testing.assert_array_equal(torch_patchify(torch.from_numpy(frame), 4).numpy(), patches)
    np.testing.assert_array_equal(patches, unfold_reference(frame[None, None], 4)[0, 0])


def test_layout_permutations_are_inverse():
    layout = patch_layout((2, 5), 3, 8, 12, 4)
    assert layout.frame_split == (2, 5, 3, 2, 4, 3, 4) and layout.patch_split == (2, 5, 2, 3, 3, 4, 4)
    assert layout.patches_shape == (2, 5, 6, 48) and layout.frames_shape == (2, 5, 3, 8, 12)
    assert tuple(layout.to_patches[i] for i in layout.to_frames) == tuple(range(7))


def test_bad_sizes_name_the_problem(rng):
    with pytest.raises(ValueError, match="frame size 8x10 is not divisible by patch_size=4"):
        patchify(rng.random((3, 8, 10)), 4)
    with pytest.raises(ValueError, match=r"patches of shape \(..., 5, 48\) do not fit 3x8x12 frames"):
        unpatchify(rng.random((5, 48)), 8, 12, 3, 4)


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
