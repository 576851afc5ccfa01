import numpy as np
import pytest

from helpers.model_test_base import run_model_test
from spade_tf.models import MultiscaleDiscriminator, NLayerDiscriminator
from spade_tf.models.discriminator import AvgPoolExcludePad


def test_pooling_leaves_padding_out_of_the_mean():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    y = np.array(AvgPoolExcludePad()(x))[0, :, :, 0]
    # window centred on (0, 0) covers rows 0-1, cols 0-1; on (2, 2) rows 1-3, cols 1-3
    assert y[0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))
    assert y[1, 1] == pytest.approx(np.mean(x[0, 1:4, 1:4, 0]))


def test_patchgan_feature_shapes_match_pytorch_padding():
    d = MultiscaleDiscriminator(9, ndf=8, n_layers_D=4, num_D=2)
    feats = d(np.zeros((2, 64, 64, 9), "float32"))
    shapes = [[tuple(f.shape[1:3]) for f in scale] for scale in feats]
    assert shapes == [[(33, 33), (17, 17), (9, 9), (10, 10), (11, 11)], [(17, 17), (9, 9), (5, 5), (6, 6), (7, 7)]]
    assert [f.shape[-1] for f in feats[0]] == [8, 16, 32, 64, 1]


def test_one_scale_is_still_a_list_over_scales():
    # A functional model with a single output returns it unwrapped; the losses expect scales.
    feats = MultiscaleDiscriminator(5, ndf=4, n_layers_D=2, num_D=1)(np.zeros((1, 32, 32, 5), "float32"))
    assert len(feats) == 1 and [f.shape[-1] for f in feats[0]] == [4, 8, 1]


def test_widths_cap_at_512():
    d = NLayerDiscriminator(4, ndf=128, n_layers_D=4, norm_D="instance")
    assert [f.shape[-1] for f in d(np.zeros((1, 32, 32, 4), "float32"))] == [128, 256, 512, 512, 1]


def test_input_channels_checked():
    with pytest.raises(ValueError, match=r"concat\(semantic map, image\) \[batch, H, W, 9\]"):
        MultiscaleDiscriminator(9, ndf=4)(np.zeros((1, 32, 32, 6), "float32"))


@pytest.mark.parametrize("norm_D", ["spectralinstance", "spectralbatch", "none"])
def test_discriminator_saves_reloads_and_trains(norm_D, tmp_path):
    d = MultiscaleDiscriminator(5, ndf=4, n_layers_D=3, norm_D=norm_D, num_D=2)
    run_model_test(d, np.random.default_rng(0).random((2, 32, 32, 5)).astype("float32"), tmp_path)
