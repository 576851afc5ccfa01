"""Spectral normalisation as `torch.nn.utils.spectral_norm` does it (Miyato et al., 2018).

Why not `keras.layers.SpectralNormalization`: in training it overwrites the wrapped kernel in
place with W / sigma, so the trainable variable is the normalised weight, the gradient does not
flow through sigma, and every training call shrinks the stored kernel again. The reference keeps
the raw weight (`weight_orig`) as the trainable variable, runs one power iteration per training
call on stop-gradient copies, and divides by sigma = u . (W v) inside the graph, so gradients flow
through sigma; at inference it uses the stored u, v and changes nothing. This wrapper does that.
"""

import math

import keras
from keras import ops


def _l2_normalize(x, eps):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x))), eps)


@keras.saving.register_keras_serializable(package="spade_tf")
class SpectralNorm(keras.layers.Wrapper):
    """Wraps a `Conv2D` or `Conv2DTranspose`; its `kernel` plays the role of torch's `weight_orig`.

    `u` ([out]) and `v` ([in * kh * kw], in PyTorch's (in, kh, kw) order) are the power-iteration
    vectors, stored as non-trainable weights so that NVlabs checkpoints load exactly.
    """

    def __init__(self, layer, eps=1e-12, **kwargs):
        # The power iteration runs in float32 even under a mixed policy.
        super().__init__(layer, autocast=False, **kwargs)
        self.eps = eps

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self.layer.kernel
        out_axis = 2 if isinstance(self.layer, keras.layers.Conv2DTranspose) else -1
        self._out_axis = out_axis
        n_out = kernel.shape[out_axis]
        n_in = math.prod(kernel.shape) // n_out
        init = keras.initializers.RandomNormal(0.0, 1.0, seed=None)
        self.u = self.add_weight(name="u", shape=(n_out,), initializer=init, trainable=False)
        self.v = self.add_weight(name="v", shape=(n_in,), initializer=init, trainable=False)
        self.u.assign(_l2_normalize(self.u, self.eps))
        self.v.assign(_l2_normalize(self.v, self.eps))
        super().build(input_shape)

    def weight_matrix(self):
        """The kernel as PyTorch's [out, in * kh * kw] matrix."""
        kernel = self.layer.kernel  # Conv2D [kh, kw, in, out]; Conv2DTranspose [kh, kw, out, in]
        perm = (2, 3, 0, 1) if self._out_axis == 2 else (3, 2, 0, 1)
        w = ops.transpose(kernel, perm)
        return ops.reshape(w, (ops.shape(w)[0], -1))

    def sigma(self, training=False):
        """The largest singular value's estimate u . (W v); in training after one power iteration."""
        w = self.weight_matrix()
        u, v = self.u.value, self.v.value
        if training:
            w_const = ops.stop_gradient(w)
            v = _l2_normalize(ops.matmul(u, w_const), self.eps)  # W^T u
            u = _l2_normalize(ops.matmul(w_const, v), self.eps)  # W v
            self.u.assign(u)
            self.v.assign(v)
        return ops.sum(u * ops.matmul(w, v))

    def normalized_kernel(self, training=False):
        return self.layer.kernel / self.sigma(training)

    def divides_outputs(self, inputs, training=False) -> bool:
        """Whether training divides the convolution's output by sigma instead of its kernel: the same
        function, but the backward pass then keeps that output instead of a normalised copy of the
        kernel, which is far smaller for the wide low-resolution convolutions (a 1024 x 1024 x 3 x 3
        kernel is 36 MiB, its output at 16 x 16 is 1 MiB a sample). Only in float32 (under a mixed
        policy the kernel path rounds once, as the reference), for Conv2D with static shapes."""
        if not training or self.layer.compute_dtype != "float32" or isinstance(self.layer, keras.layers.Conv2DTranspose):
            return False
        shape = self.layer.compute_output_shape(tuple(inputs.shape))
        return all(isinstance(d, int) for d in shape) and math.prod(shape) < math.prod(self.layer.kernel.shape)

    def call(self, inputs, training=False):
        inputs = ops.cast(inputs, self.layer.compute_dtype)
        if self.divides_outputs(inputs, training):
            outputs = self.layer.convolution_op(inputs, self.layer.kernel) / self.sigma(training)
        else:
            kernel = ops.cast(self.normalized_kernel(training), self.layer.compute_dtype)
            outputs = self._convolve(inputs, kernel)
        if self.layer.use_bias:
            outputs = outputs + ops.cast(self.layer.bias, self.layer.compute_dtype)
        return outputs

    def _convolve(self, inputs, kernel):
        if isinstance(self.layer, keras.layers.Conv2DTranspose):
            return ops.conv_transpose(
                inputs, kernel, strides=self.layer.strides, padding=self.layer.padding,
                output_padding=self.layer.output_padding, dilation_rate=self.layer.dilation_rate,
            )
        return self.layer.convolution_op(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
