import numpy as np
import pytest

from shared.config import DynamicsConfig, TokenizerConfig, TransformerConfig
from shared.layout import Modality, dynamics_layout, space_mask, time_mask, tokenizer_layout

TF = TransformerConfig(d_model=8, n_heads=2, depth=1)
# 2 latents + 3 patches: a 12x4 image with patch 4 gives 3 patches.
TOK = TokenizerConfig(transformer=TF, image_height=4, image_width=12, channels=1, patch_size=4,
                      n_latents=2, d_bottleneck=2)
# [action, signal, step, spatial, spatial, register, agent]
DYN = DynamicsConfig(transformer=TF, n_latents=4, d_bottleneck=2, packing_factor=2, n_register=1, n_agent=1)


def test_tokenizer_layout_and_ids():
    lay = tokenizer_layout(TOK)
    assert lay.n_tokens == 5
    assert lay.modality_ids().tolist() == [-1, -1, 0, 0, 0]
    assert lay.slice(Modality.LATENT) == slice(0, 2)
    assert lay.slice(Modality.IMAGE) == slice(2, 5)


def test_dynamics_layout_and_ids():
    lay = dynamics_layout(DYN)
    assert lay.modality_ids().tolist() == [1, 5, 6, 4, 4, 3, 7]
    assert lay.slice(Modality.SPATIAL) == slice(3, 5)
    assert lay.slice(Modality.AGENT) == slice(6, 7)
    assert lay.count(Modality.REGISTER) == 1


# Written out by hand from the rules (row = query, column = key, 1 = may attend).
ENCODER = [[1, 1, 1, 1, 1],
           [1, 1, 1, 1, 1],
           [0, 0, 1, 1, 1],
           [0, 0, 1, 1, 1],
           [0, 0, 1, 1, 1]]
DECODER = [[1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 1, 1, 1, 1],
           [1, 1, 1, 1, 1],
           [1, 1, 1, 1, 1]]
ISOLATED = [[1, 1, 1, 1, 1, 1, 0]] * 6 + [[0, 0, 0, 0, 0, 0, 1]]
PAPER_AGENT = [[1, 1, 1, 1, 1, 1, 0]] * 6 + [[1, 1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("mode, expected", [("encoder", ENCODER), ("decoder", DECODER)])
def test_tokenizer_masks(mode, expected):
    mask = space_mask(tokenizer_layout(TOK), mode)
    assert mask.dtype == bool and mask.shape == (5, 5)
    np.testing.assert_array_equal(mask, np.array(expected, dtype=bool))


@pytest.mark.parametrize("mode, expected", [("wm_agent_isolated", ISOLATED), ("wm_agent", PAPER_AGENT)])
def test_dynamics_masks(mode, expected):
    mask = space_mask(dynamics_layout(DYN), mode)
    np.testing.assert_array_equal(mask, np.array(expected, dtype=bool))


def test_without_agent_dynamics_mask_is_full():
    lay = dynamics_layout(DynamicsConfig(transformer=TF, n_latents=4, d_bottleneck=2, n_register=1, n_agent=0))
    for mode in ("wm_agent_isolated", "wm_agent"):
        assert space_mask(lay, mode).all()


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown space-attention mode 'diagonal'"):
        space_mask(tokenizer_layout(TOK), "diagonal")


def test_time_mask_is_causal():
    np.testing.assert_array_equal(time_mask(3), np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=bool))
