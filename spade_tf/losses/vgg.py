"""The VGG19 perceptual loss (the reference's `VGGLoss`), with torchvision's ImageNet VGG19.

The reference feeds images in [-1, 1] to torchvision's ImageNet VGG19 without ImageNet
normalisation and compares the features after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1.
`build_vgg` loads those weights from torchvision's `vgg19-dcbb9e9d.pth` (read without torch), so
the loss has the reference's scale.
"""

import logging
import os
import pathlib

import keras
import numpy as np
from keras import ops

from spade_tf.io.torch_pth import load_state_dict
from spade_tf.losses.gan import per_example_mean
from spade_tf.models.network import Network, policy

log = logging.getLogger(__name__)

# torchvision's VGG19 `features` up to relu5_1 (features[:30]): (our layer name, index in features,
# filters). A 2x2 max-pool precedes the first conv of blocks 2 to 5.
VGG19_CONVS = (
    ("conv1_1", 0, 64), ("conv1_2", 2, 64),
    ("conv2_1", 5, 128), ("conv2_2", 7, 128),
    ("conv3_1", 10, 256), ("conv3_2", 12, 256), ("conv3_3", 14, 256), ("conv3_4", 16, 256),
    ("conv4_1", 19, 512), ("conv4_2", 21, 512), ("conv4_3", 23, 512), ("conv4_4", 25, 512),
    ("conv5_1", 28, 512),
)
FEATURE_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # relu1_1 ... relu5_1, as the reference

TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1
KERAS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"  # keras.applications.VGG19, no top
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)  # keras.applications' "caffe" mode


@keras.saving.register_keras_serializable(package="spade_tf")
class VGG19Features(Network):
    """VGG19's convolutional trunk up to relu5_1 (3x3 convs with bias, ReLU, 2x2 max-pools), frozen.

    Input: RGB images [batch, H, W, 3]. Output: [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]
    (full, 1/2, 1/4, 1/8 and 1/16 resolution). Weights are random until loaded.
    """

    def __init__(self, dtype=None, **kwargs):
        dtype = policy(dtype)
        inputs = keras.Input((None, None, 3), name="image")
        x, outputs = inputs, []
        for name, _, filters in VGG19_CONVS:
            block, index = name[4:].split("_")
            if index == "1" and block != "1":
                x = keras.layers.MaxPooling2D(2, name=f"pool{int(block) - 1}", dtype=dtype)(x)
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name, dtype=dtype)(x)
            if index == "1":
                outputs.append(x)
        super().__init__(inputs, outputs, {}, dtype, **kwargs)
        self.trainable = False


def load_torchvision_vgg19(model, path):
    """Loads torchvision's VGG19 `features.<i>.weight/bias` from a `vgg19-*.pth` into `model`.

    Other keys (classifier.*, the convs after conv5_1) are ignored. Raises FileNotFoundError for a
    missing file, ValueError naming the file and keys for missing or mis-shaped tensors, and
    `spade_tf.io.torch_pth.CheckpointError` for a file that is not a PyTorch state dict.
    """
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"VGG19 weights file {path} does not exist; expected torchvision's "
                                f"ImageNet VGG19 state dict ({TORCHVISION_FILE})")
    state = load_state_dict(path)
    values, problems = {}, []
    for name, index, filters in VGG19_CONVS:
        in_channels = model.get_layer(name).kernel.shape[2]
        for key, shape in [(f"features.{index}.weight", (filters, in_channels, 3, 3)),
                           (f"features.{index}.bias", (filters,))]:
            if key not in state:
                problems.append(f"missing {key}")
            elif state[key].shape != shape:
                problems.append(f"{key} has shape {state[key].shape}, expected {shape}")
            else:
                values[key] = state[key].astype(np.float32)
    if problems:
        raise ValueError(f"{path} is not torchvision's VGG19 state dict (as {TORCHVISION_FILE}; "
                         f"vgg19_bn is a different layout): {'; '.join(problems)}")
    for name, index, _ in VGG19_CONVS:  # torch [out, in, kh, kw] -> Keras [kh, kw, in, out]
        kernel = values[f"features.{index}.weight"].transpose(2, 3, 1, 0)
        model.get_layer(name).set_weights([kernel, values[f"features.{index}.bias"]])


def keras_weights_candidates():
    """Where `keras.utils.get_file` caches Keras's VGG19 weights: $KERAS_HOME or ~/.keras, else /tmp/.keras."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [pathlib.Path(home, "models", KERAS_FILE), pathlib.Path("/tmp/.keras/models", KERAS_FILE)]


def load_keras_imagenet_vgg19(model):
    """Loads keras.applications.VGG19's ImageNet weights into `model`: a non-reference alternative.

    Those weights were trained on "caffe" input (BGR, 0..255, ImageNet mean subtracted), so that
    preprocessing of our [-1, 1] RGB input is folded into conv1_1 (channel order, scale 127.5, and
    the mean in the bias; exact except at the image border, where zero padding differs). The
    features, and so the loss's magnitude, differ from the reference's torchvision weights fed
    un-normalised input: lambda_vgg is not retuned for them. The weight file is never downloaded
    here; it must already be in Keras's cache (see `keras_weights_candidates`).
    """
    candidates = keras_weights_candidates()
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"train.vgg_weights=keras-imagenet needs Keras's VGG19 ImageNet weights already on disk "
            f"(nothing is downloaded); not found at {' or '.join(map(str, candidates))}. Copy "
            f"{KERAS_FILE} there, or give train.vgg_weights a torchvision {TORCHVISION_FILE} (the reference's weights)")
    source = keras.applications.VGG19(include_top=False, weights=str(path), input_shape=(None, None, 3))
    for name, _, _ in VGG19_CONVS:
        block, index = name[4:].split("_")
        kernel, bias = source.get_layer(f"block{block}_conv{index}").get_weights()
        if name == "conv1_1":  # x_caffe[bgr c] = 127.5 * (x[rgb 2 - c] + 1) - mean[c]
            bias = bias + np.einsum("hwco,c->o", kernel, 127.5 - CAFFE_MEAN_BGR)
            kernel = 127.5 * kernel[:, :, ::-1, :]
        model.get_layer(name).set_weights([kernel, bias])


def build_vgg(cfg, dtype=None):
    """The frozen VGG19 of the perceptual loss from `cfg.train`, or None when `train.no_vgg_loss`.

    `train.vgg_weights`: a path to torchvision's `vgg19-*.pth` (the reference's weights);
    "keras-imagenet" (see `load_keras_imagenet_vgg19`); or "random" (tests and benchmarks only).
    `dtype`: its layers' dtype policy (None: the global one).
    """
    t = cfg.train
    if t.no_vgg_loss:
        return None
    if not t.vgg_weights:
        raise ValueError(
            "the VGG loss is on but train.vgg_weights is empty: set train.vgg_weights=<path to "
            f"torchvision's {TORCHVISION_FILE}> (the reference's ImageNet VGG19), or turn the loss "
            "off with train.no_vgg_loss=true")
    vgg = VGG19Features(name="vgg19", dtype=dtype)
    if t.vgg_weights == "random":
        log.warning("train.vgg_weights=random: the VGG perceptual loss uses a randomly initialised "
                    "VGG19; use this for tests and benchmarks only, not to train a model")
    elif t.vgg_weights == "keras-imagenet":
        load_keras_imagenet_vgg19(vgg)
    else:
        load_torchvision_vgg19(vgg, t.vgg_weights)
    return vgg


class VGGLoss:
    """Per-example [batch] perceptual loss: lambda_vgg * sum_i w_i * L1(vgg_i(fake), vgg_i(real)).

    Images in [-1, 1], fed without ImageNet normalisation as in the reference; w = 1/32, 1/16, 1/8,
    1/4, 1 for relu1_1 ... relu5_1; each L1 is the mean over an example's elements; real features
    are under stop_gradient. Fake and real go through the network separately, so that training keeps
    no activation of the real pass (the reference calls it twice too). With `rematerialize`
    (`train.low_memory=true`) the fake's pass is rematerialised (`keras.remat`): its activations are
    recomputed in the backward pass instead of kept, one more VGG forward pass of the fake batch per
    training step (about 3 % more arithmetic) for 350-540 MiB less at ADE20K batch 2 (fp32, measured
    2026-12-03).
    """

    def __init__(self, vgg, lambda_vgg, rematerialize=False):
        self.vgg, self.lambda_vgg, self.rematerialize = vgg, lambda_vgg, rematerialize

    def __call__(self, fake, real):
        compatible = len(fake.shape) == len(real.shape) == 4 and all(
            a is None or b is None or a == b for a, b in zip(fake.shape, real.shape))
        if not compatible or fake.shape[-1] != 3:
            raise ValueError(f"VGGLoss: fake and real must both be RGB images [batch, H, W, 3] of one "
                             f"shape; got {tuple(fake.shape)} and {tuple(real.shape)}")
        real_features = self.vgg(ops.stop_gradient(ops.cast(real, "float32")))
        loss = 0.0
        fake_features = (keras.remat(self.vgg) if self.rematerialize else self.vgg)(ops.cast(fake, "float32"))
        for weight, f, r in zip(FEATURE_WEIGHTS, fake_features, real_features):
            f, r = ops.cast(f, "float32"), ops.stop_gradient(ops.cast(r, "float32"))
            loss = loss + weight * per_example_mean(ops.abs(f - r))
        return loss * self.lambda_vgg
